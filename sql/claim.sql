--
-- idem_claim(): every row of the contract's outcome table
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- a new key is claimed, attempt 1, expiring after the default ttl (24 hours)
SELECT outcome, response, attempt, recovery_point,
       expires_at = statement_timestamp() + interval '24 hours' AS default_ttl
  FROM idem_claim('order-1');

-- in autocommit the claim committed at once, completed with a NULL response
SELECT status, response IS NULL AS no_response, completed_at IS NOT NULL AS completed_at_set,
       attempt, locked_until, lease
  FROM idem_keys WHERE key = 'order-1';
SELECT outcome, response, attempt FROM idem_claim('order-1');

-- the explicit-transaction pattern: claim, business write, complete, commit
CREATE TABLE orders (id serial PRIMARY KEY, idem_key text, amount int);
BEGIN;
SELECT outcome FROM idem_claim(key => 'order-2');
INSERT INTO orders (idem_key, amount) VALUES ('order-2', 100);
SELECT idem_complete(key => 'order-2', response => '{"order_id": 1, "status": "paid"}');
COMMIT;
-- a retry gets the first attempt's result
SELECT outcome, response, attempt FROM idem_claim(key => 'order-2');
SELECT outcome::text FROM idem_claim('order-2');

-- claiming twice in one transaction: claimed again (same attempt), never waits
-- on itself, even with wait => false; replay once this transaction completed it
BEGIN;
SELECT outcome, attempt FROM idem_claim('order-3');
SELECT outcome, attempt FROM idem_claim('order-3', wait => false);
SELECT status FROM idem_lookup('order-3');
SELECT idem_complete('order-3', '"done"');
SELECT outcome, response FROM idem_claim('order-3');
COMMIT;

-- two claims of one key in one statement
SELECT array_agg(o) AS outcomes
  FROM (SELECT (idem_claim('order-4')).outcome AS o FROM generate_series(1, 3)) s;

-- rollback removes the claim with the business write: a retry claims afresh
BEGIN;
SELECT outcome FROM idem_claim('order-5');
INSERT INTO orders (idem_key, amount) VALUES ('order-5', 500);
ROLLBACK;
SELECT count(*) FROM idem_keys WHERE key = 'order-5';
SELECT count(*) FROM orders WHERE idem_key = 'order-5';
SELECT outcome, attempt FROM idem_claim('order-5');

-- savepoints behave: a claim inside a rolled-back savepoint is gone
BEGIN;
SELECT outcome FROM idem_claim('order-6');
SAVEPOINT s1;
SELECT outcome FROM idem_claim('order-7');
SELECT idem_complete('order-6', '{"in": "savepoint"}');
ROLLBACK TO SAVEPOINT s1;
SELECT key, status, response FROM idem_lookup('order-6');
SELECT count(*) FROM idem_lookup('order-7');
-- a new key's row is written to the table when its transaction commits
SELECT count(*) FROM idem_keys WHERE key IN ('order-6', 'order-7');
COMMIT;
-- order-6 was completed at commit with a NULL response; order-7 never existed
SELECT key, status, response FROM idem_keys WHERE key IN ('order-6', 'order-7') ORDER BY key;

-- a completion inside a released savepoint stays
BEGIN;
SELECT outcome FROM idem_claim('order-8');
SAVEPOINT s2;
SELECT idem_complete('order-8', '{"kept": true}');
RELEASE SAVEPOINT s2;
COMMIT;
SELECT outcome, response FROM idem_claim('order-8');

-- two-phase commit: the claim is completed when the transaction is prepared,
-- and becomes visible with COMMIT PREPARED
BEGIN;
SELECT outcome FROM idem_claim('order-2pc');
PREPARE TRANSACTION 'idem_2pc';
SELECT count(*) FROM idem_keys WHERE key = 'order-2pc';
SELECT outcome FROM idem_claim('order-2pc', wait => false);
COMMIT PREPARED 'idem_2pc';
SELECT status FROM idem_keys WHERE key = 'order-2pc';
SELECT outcome FROM idem_claim('order-2pc');

-- an expired key is claimed afresh, replacing the old row
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second'
 WHERE key = 'order-2';
SELECT outcome, response, attempt FROM idem_claim('order-2', fingerprint => 'other');
SELECT status, fingerprint, response FROM idem_keys WHERE key = 'order-2';
SELECT count(*) FROM idem_keys WHERE key = 'order-2';

-- the ttl argument
SELECT outcome, expires_at = statement_timestamp() + interval '10 minutes' AS ttl_used
  FROM idem_claim('order-9', ttl => '10 minutes');

-- fingerprints: mismatch only when both are non-NULL and differ
BEGIN;
SELECT outcome FROM idem_claim('pay-1', fingerprint => 'fp-a');
SELECT idem_complete('pay-1', '{"charge": "ch_1"}');
COMMIT;
SELECT outcome, response FROM idem_claim('pay-1', fingerprint => 'fp-a');
-- a mismatch carries no response, attempt or expiry
SELECT outcome, response, attempt, recovery_point, expires_at
  FROM idem_claim('pay-1', fingerprint => 'fp-b');
SELECT outcome, response FROM idem_claim('pay-1');
-- nothing changed
SELECT fingerprint, response FROM idem_keys WHERE key = 'pay-1';
-- a key claimed without a fingerprint replays for any fingerprint
SELECT outcome FROM idem_claim('pay-2');
SELECT outcome FROM idem_claim('pay-2', fingerprint => 'fp-x');
-- a mismatch inside the claiming transaction
BEGIN;
SELECT outcome FROM idem_claim('pay-3', fingerprint => 'fp-1');
SELECT outcome FROM idem_claim('pay-3', fingerprint => 'fp-2');
ROLLBACK;

-- scopes keep keys apart
SELECT outcome FROM idem_claim('shared', scope => 'tenant-a');
SELECT outcome FROM idem_claim('shared', scope => 'tenant-b');
SELECT outcome FROM idem_claim('shared', scope => 'tenant-a');
SELECT outcome FROM idem_claim('shared');
SELECT scope, key, status FROM idem_keys WHERE key = 'shared' ORDER BY scope;

-- keys are data, never SQL: quotes, backslashes, Unicode, long keys
SELECT outcome FROM idem_claim($$'); DROP TABLE orders; --$$);
SELECT outcome FROM idem_claim(E'back\\slash "quoted" ключ 鍵 🔑');
SELECT outcome FROM idem_claim(E'back\\slash "quoted" ключ 鍵 🔑');
SELECT outcome FROM idem_claim(repeat('é', 255));
SELECT count(*) FROM orders;
SELECT key FROM idem_keys WHERE key LIKE '%DROP%' OR key LIKE 'back%' ORDER BY key;

-- the result row of every outcome, through a function scan
SELECT outcome, response, attempt, recovery_point, expires_at IS NOT NULL AS expires
  FROM idem_claim('order-1') WHERE outcome = 'replay';

DROP TABLE orders;
