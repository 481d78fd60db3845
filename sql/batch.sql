--
-- idem_claim_many() and idem_complete_many(): batches of keys
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- one row per key, in the order given, each with idem_claim's outcome
BEGIN;
SELECT key, outcome, attempt FROM idem_claim_many(ARRAY['m-3', 'm-1', 'm-2']);
-- a key given twice is claimed once, and answers claimed again, as a
-- second idem_claim() in the same transaction does
SELECT key, outcome FROM idem_claim_many(ARRAY['m-4', 'm-4', 'm-1']);
SELECT idem_complete_many(ARRAY['m-3', 'm-1', 'm-4'],
                          ARRAY['{"n": 3}', '{"n": 1}', '{"n": 4}']::jsonb[]);
COMMIT;
-- the key not completed (m-2) was completed at commit, with no response
SELECT key, status, response FROM idem_keys ORDER BY key;

-- replays, a new key and a mismatch in one batch
SELECT outcome FROM idem_claim('m-fp', fingerprint => 'a');
SELECT key, outcome, response FROM idem_claim_many(ARRAY['m-1', 'm-5', 'm-fp', 'm-2'],
                                                   fingerprints => ARRAY[NULL, NULL, 'b', NULL]);
-- the new key of an autocommitted batch committed with it
SELECT outcome FROM idem_claim('m-5');

-- a rolled-back batch leaves nothing behind
BEGIN;
SELECT count(*) FROM idem_claim_many(ARRAY['m-6', 'm-7']);
ROLLBACK;
SELECT count(*) FROM idem_keys WHERE key IN ('m-6', 'm-7');

-- a savepoint rolls back what the batch claimed after it
BEGIN;
SELECT key, outcome FROM idem_claim_many(ARRAY['m-8']);
SAVEPOINT s;
SELECT key, outcome FROM idem_claim_many(ARRAY['m-9', 'm-8']);
ROLLBACK TO SAVEPOINT s;
SELECT scope, key FROM idem_current_keys();
COMMIT;
SELECT key FROM idem_keys WHERE key IN ('m-8', 'm-9') ORDER BY key;

-- scopes, leases and ttl, as for one key
SELECT key, outcome, attempt, expires_at - statement_timestamp() AS ttl
  FROM idem_claim_many(ARRAY['m-10', 'm-11'], scope => 'batch', lease => '1 minute',
                       ttl => '1 hour');
SELECT key, outcome FROM idem_claim_many(ARRAY['m-10', 'm-11'], scope => 'batch');
SELECT key, outcome FROM idem_claim_many(ARRAY['m-10'], scope => 'other');

-- an empty batch answers nothing
SELECT count(*) FROM idem_claim_many('{}');
SELECT idem_complete_many('{}');

-- bad input: an error, and nothing claimed
SELECT * FROM idem_claim_many(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12', '']);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY[['m-12', 'm-13']]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12'], fingerprints => ARRAY['a', 'b']);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12', repeat('k', 300)]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12'], fingerprints => ARRAY[repeat('f', 2000)]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12'], scope => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12'], wait => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12'], ttl => '-1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim_many(ARRAY['m-12'], lease => '2 days', ttl => '1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM idem_keys WHERE key = 'm-12';

-- completing: every key must be claimed by this transaction
BEGIN;
SELECT count(*) FROM idem_claim_many(ARRAY['m-14', 'm-15']);
SELECT idem_complete_many(ARRAY['m-14', 'm-absent']);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT idem_complete_many(ARRAY['m-1'], ARRAY['{}', '{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete_many(ARRAY['m-1', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete_many(NULL);
\echo :LAST_ERROR_SQLSTATE
-- a NULL response completes with none
BEGIN;
SELECT count(*) FROM idem_claim_many(ARRAY['m-16']);
SELECT idem_complete_many(ARRAY['m-16'], ARRAY[NULL]::jsonb[]);
COMMIT;
SELECT status, response FROM idem_keys WHERE key = 'm-16';

-- a batch in a read-only transaction is refused, unless it only replays
BEGIN READ ONLY;
SELECT key, outcome FROM idem_claim_many(ARRAY['m-1', 'm-2']);
SELECT key, outcome FROM idem_claim_many(ARRAY['m-1', 'm-17']);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
