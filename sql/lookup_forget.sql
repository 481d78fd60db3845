--
-- idem_lookup() and idem_forget()
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- an absent key: zero rows, never a row of NULLs
SELECT count(*) FROM idem_lookup('l-absent');
SELECT * FROM idem_lookup('l-absent');

-- a live key: its row, typed as idem_keys
BEGIN;
SELECT outcome FROM idem_claim('l-1', fingerprint => 'fp', scope => 's');
SELECT scope, key, status, fingerprint, response, attempt FROM idem_lookup('l-1', scope => 's');
SELECT idem_complete('l-1', '{"r": 1}', scope => 's');
COMMIT;
SELECT scope, key, status, fingerprint, response, attempt, recovery_point,
       created_at <= completed_at AS ordered, expires_at > statement_timestamp() AS live,
       locked_until, lease
  FROM idem_lookup('l-1', 's');
SELECT pg_typeof(l) FROM idem_lookup('l-1', 's') AS l;
SELECT count(*) FROM idem_lookup('l-1');

-- an expired key is not returned
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second' WHERE key = 'l-1';
SELECT count(*) FROM idem_lookup('l-1', 's');

-- read-only transactions can look up and replay, but not claim
SELECT outcome FROM idem_claim('l-2');
BEGIN READ ONLY;
SELECT key, status FROM idem_lookup('l-2');
SELECT outcome FROM idem_claim('l-2');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid;
SELECT outcome FROM idem_claim('l-3');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT count(*) FROM idem_keys WHERE key = 'l-3';

-- forget deletes a key whatever its state, and says whether it did
SELECT idem_forget('l-2');
SELECT idem_forget('l-2');
SELECT count(*) FROM idem_keys WHERE key = 'l-2';
SELECT idem_forget('l-1');
SELECT idem_forget('l-1', scope => 's');
BEGIN;
SELECT outcome FROM idem_claim('l-4');
SELECT idem_forget('l-4');
COMMIT;
SELECT count(*) FROM idem_keys WHERE key = 'l-4';
-- a forgotten key is claimed afresh
SELECT outcome, attempt FROM idem_claim('l-2');
