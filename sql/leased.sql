--
-- Leased claims: in progress while the lease runs, takeover after it, fencing
-- (lease expiry is simulated by moving locked_until; the isolation specs wait
-- for real leases to run out)
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- a leased claim commits in progress, held until locked_until
SELECT outcome, attempt, recovery_point,
       expires_at = statement_timestamp() + interval '24 hours' AS ttl_kept
  FROM idem_claim('pay-1', lease => '30 seconds');
SELECT status, attempt, lease,
       locked_until = created_at + interval '30 seconds' AS lease_set
  FROM idem_keys WHERE key = 'pay-1';

-- other callers get in_progress at once, with or without wait
SELECT outcome, attempt FROM idem_claim('pay-1');
SELECT outcome, attempt FROM idem_claim('pay-1', wait => false, lease => '30 seconds');
SELECT outcome FROM idem_claim('pay-1', fingerprint => 'fp');

-- a checkpoint records progress and extends the lease by its length
SELECT idem_checkpoint('pay-1', 'charged', attempt => 1)
       = statement_timestamp() + interval '30 seconds' AS lease_extended;
SELECT recovery_point FROM idem_keys WHERE key = 'pay-1';
-- a NULL recovery point only extends the lease
SELECT idem_checkpoint('pay-1', NULL, attempt => 1) IS NOT NULL AS extended;
SELECT recovery_point FROM idem_keys WHERE key = 'pay-1';

-- from another transaction the attempt is required
SELECT idem_checkpoint('pay-1', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('pay-1', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_release('pay-1');
\echo :LAST_ERROR_SQLSTATE

-- the lease runs out: the next claim takes over with attempt 2 and the recovery point
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'pay-1';
SELECT outcome, attempt, recovery_point FROM idem_claim('pay-1', lease => '1 minute');
SELECT status, attempt, lease, locked_until > statement_timestamp() AS leased FROM idem_keys WHERE key = 'pay-1';

-- the old attempt is fenced off
SELECT idem_complete('pay-1', '{"from": "attempt 1"}', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_checkpoint('pay-1', 'stale', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_release('pay-1', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('pay-1', '{}', attempt => 3);
\echo :LAST_ERROR_SQLSTATE

-- the current attempt completes; everybody replays its response
SELECT idem_complete('pay-1', '{"from": "attempt 2"}', attempt => 2);
SELECT outcome, response, attempt FROM idem_claim('pay-1');
SELECT status, locked_until FROM idem_keys WHERE key = 'pay-1';

-- a leased claim is not completed at commit
BEGIN;
SELECT outcome FROM idem_claim('pay-2', lease => '1 minute');
COMMIT;
SELECT status FROM idem_keys WHERE key = 'pay-2';
-- inside its own transaction the attempt is optional
BEGIN;
SELECT outcome FROM idem_claim('pay-3', lease => '1 minute');
SELECT idem_checkpoint('pay-3', 'step-1') IS NOT NULL AS extended;
SELECT idem_complete('pay-3', '"done"');
COMMIT;
SELECT status, response, recovery_point FROM idem_keys WHERE key = 'pay-3';

-- release with the attempt frees the key: the next claim runs again, with the
-- next attempt and no recovery point, so the released attempt stays fenced off
SELECT idem_checkpoint('pay-2', 'half-way', attempt => 1) IS NOT NULL AS checkpointed;
SELECT idem_release('pay-2', attempt => 1);
SELECT status, attempt, locked_until, recovery_point FROM idem_keys WHERE key = 'pay-2';
SELECT count(*) FROM idem_lookup('pay-2');
SELECT outcome, attempt, recovery_point FROM idem_claim('pay-2', lease => '1 minute');
SELECT idem_complete('pay-2', '"from the released attempt"', attempt => 1);
\echo :LAST_ERROR_SQLSTATE

-- a takeover without a lease is transactional: completed at its commit
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'pay-2';
SELECT outcome, attempt FROM idem_claim('pay-2');
SELECT status, attempt, lease, locked_until FROM idem_keys WHERE key = 'pay-2';

-- a lease as long as the ttl: the key is kept as long as it is leased
SELECT outcome, expires_at = statement_timestamp() + interval '2 hours' AS kept_for_lease
  FROM idem_claim('pay-4', ttl => '2 hours', lease => '2 hours');

-- a key whose ttl passed but whose lease has not is still in progress
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second' WHERE key = 'pay-4';
SELECT outcome FROM idem_claim('pay-4');
SELECT count(*) FROM idem_lookup('pay-4');

-- a leased key abandoned past its ttl is claimed afresh, but its attempt
-- number is not handed out again: the late worker stays fenced off
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second',
                     locked_until = statement_timestamp() - interval '1 second'
 WHERE key = 'pay-4';
SELECT outcome, attempt, recovery_point FROM idem_claim('pay-4', lease => '1 minute');
SELECT idem_complete('pay-4', '{}', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
-- a completed key that expired starts again at attempt 1
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second' WHERE key = 'pay-1';
SELECT outcome, attempt, response FROM idem_claim('pay-1');
