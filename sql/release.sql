--
-- idem_release(): give a claim up so that a retry runs again
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- release a claim in its own transaction, then commit other writes: the key is free
BEGIN;
SELECT outcome FROM idem_claim('r-1');
SELECT idem_release('r-1');
SELECT count(*) FROM idem_lookup('r-1');
COMMIT;
SELECT count(*) FROM idem_keys WHERE key = 'r-1';
SELECT outcome, attempt FROM idem_claim('r-1');

-- nothing to release: false
SELECT idem_release('r-absent');
BEGIN;
SELECT outcome FROM idem_claim('r-2');
SELECT idem_release('r-2');
SELECT idem_release('r-2');
COMMIT;

-- a completed key cannot be released
SELECT idem_release('r-1');
\echo :LAST_ERROR_SQLSTATE
SELECT status FROM idem_keys WHERE key = 'r-1';

-- the attempt, when given, must be the current one
BEGIN;
SELECT outcome FROM idem_claim('r-3');
SELECT idem_release('r-3', attempt => 7);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- release is scoped
BEGIN;
SELECT outcome FROM idem_claim('r-4', scope => 'a');
SELECT outcome FROM idem_claim('r-4', scope => 'b');
SELECT idem_release('r-4', scope => 'a');
COMMIT;
SELECT scope, status FROM idem_keys WHERE key = 'r-4' ORDER BY scope;

-- an expired key is not live: nothing to release
SELECT outcome FROM idem_claim('r-5', lease => '1 hour');
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second',
                     locked_until = statement_timestamp() - interval '1 second'
 WHERE key = 'r-5';
SELECT idem_release('r-5', attempt => 1);

-- a release inside a rolled-back savepoint is undone
BEGIN;
SELECT outcome FROM idem_claim('r-6');
SAVEPOINT s;
SELECT idem_release('r-6');
SELECT count(*) FROM idem_lookup('r-6');
ROLLBACK TO SAVEPOINT s;
SELECT status FROM idem_lookup('r-6');
-- released and claimed again in one transaction: one row, the second claim's
SELECT idem_release('r-6');
SELECT outcome, attempt FROM idem_claim('r-6');
SELECT idem_complete('r-6', '"second"');
COMMIT;
SELECT outcome, response FROM idem_claim('r-6');
SELECT count(*) FROM idem_keys WHERE key = 'r-6';

-- a claim released in its transaction leaves nothing at commit
BEGIN;
SELECT outcome FROM idem_claim('r-7');
SELECT idem_forget('r-7');
COMMIT;
SELECT count(*) FROM idem_keys WHERE key = 'r-7';
