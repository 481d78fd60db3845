--
-- idem_renew(): a leased attempt proves it still holds its key, just before
-- an external effect, and extends its lease; a released attempt is told so
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

SELECT outcome, attempt FROM idem_claim('n-1', lease => '1 minute', ttl => '1 day');
-- the current attempt renews, by the claim's lease or by the one given
SELECT idem_renew('n-1', 1) - statement_timestamp() AS extended;
SELECT idem_renew('n-1', 1, lease => '5 minutes') - statement_timestamp() AS extended;
SELECT locked_until > statement_timestamp() + interval '4 minutes' AS renewed FROM idem_keys WHERE key = 'n-1';
-- a lease renewed past the ttl keeps the key that long
SELECT outcome, attempt FROM idem_claim('n-2', lease => '1 minute', ttl => '2 minutes');
SELECT idem_renew('n-2', 1, lease => '10 minutes') - statement_timestamp() AS extended;
SELECT expires_at = locked_until AS kept FROM idem_keys WHERE key = 'n-2';

-- another attempt number: refused
SELECT idem_renew('n-1', 2);
\echo :LAST_ERROR_SQLSTATE

-- once the lease ran out and the key was taken over, the old attempt is stale
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'n-1';
SELECT outcome, attempt FROM idem_claim('n-1', lease => '1 minute');
SELECT idem_renew('n-1', 1);
\echo :LAST_ERROR_SQLSTATE
-- while the lease ran out but nobody took over, the attempt still holds
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'n-1';
SELECT idem_renew('n-1', 2) > statement_timestamp() AS renewed;

-- a released attempt is told that it was released, before and after a takeover
SELECT idem_release('n-1', attempt => 2);
SELECT idem_renew('n-1', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('n-1', '{}', attempt => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_checkpoint('n-1', 'step', attempt => 2);
\echo :LAST_ERROR_SQLSTATE
-- releasing again gives nothing up
SELECT idem_release('n-1', attempt => 2);
SELECT outcome, attempt FROM idem_claim('n-1', lease => '1 minute');
SELECT idem_renew('n-1', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('n-1', '{}', attempt => 2);
\echo :LAST_ERROR_SQLSTATE
-- an older attempt, taken over before the release, is stale
SELECT idem_renew('n-1', 1);
\echo :LAST_ERROR_SQLSTATE
-- the new attempt holds the key
SELECT idem_renew('n-1', 3) > statement_timestamp() AS renewed;
SELECT idem_complete('n-1', '{"done": true}', attempt => 3);

-- a completed key, a key without a lease, and no key: refused
SELECT idem_renew('n-1', 3);
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT outcome FROM idem_claim('n-3');
SELECT idem_renew('n-3', 1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT idem_renew('n-absent', 1);
\echo :LAST_ERROR_SQLSTATE

-- bad input
SELECT idem_renew('n-2', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_renew('n-2', 1, lease => '0 s');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_renew('n-2', 1, lease => '1000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_renew(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
BEGIN READ ONLY;
SELECT idem_renew('n-2', 1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
