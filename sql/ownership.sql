--
-- Keys belong to roles: a role reaches only its own keys and those of roles
-- whose privileges it has (by naming them as owner); two unrelated roles that
-- use one key string hold two keys, and neither learns of the other
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;
CREATE ROLE idem_alice;
CREATE ROLE idem_bob;
CREATE ROLE idem_group NOLOGIN;
CREATE ROLE idem_member IN ROLE idem_group;
GRANT EXECUTE ON FUNCTION idem_forget(text, text, name)
   TO idem_alice, idem_bob, idem_member;

-- bob: a completed key with a response to keep secret, and a leased key
SET ROLE idem_bob;
BEGIN;
SELECT outcome FROM idem_claim('pay-1', fingerprint => 'fp-bob', scope => 'tenantB');
SELECT idem_complete('pay-1', '{"card": "4242"}', scope => 'tenantB');
COMMIT;
SELECT outcome, attempt FROM idem_claim('charge-9', lease => '1 hour');
RESET ROLE;

-- alice sees none of it
SET ROLE idem_alice;
SELECT count(*) FROM idem_lookup('pay-1', 'tenantB');
SELECT count(*) FROM idem_lookup('charge-9');
-- the same key string is a new key of hers: claimed, neither replay nor mismatch
BEGIN;
SELECT outcome, response, attempt FROM idem_claim('pay-1', fingerprint => 'fp-alice', scope => 'tenantB');
ROLLBACK;
-- bob's leased key does not exist for her: no error names his attempt
SELECT idem_complete('charge-9', '{"stolen": true}', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_checkpoint('charge-9', 'charged', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_release('charge-9', attempt => 1) AS released;
SELECT idem_forget('charge-9') AS forgotten;
-- her own leased claim of that key string neither waits for nor sees his
SELECT outcome, attempt FROM idem_claim('charge-9', lease => '1 hour', wait => false);
-- naming bob as the owner is refused, whatever the function
SELECT * FROM idem_claim('pay-1', scope => 'tenantB', owner => 'idem_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_lookup('pay-1', 'tenantB', owner => 'idem_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('charge-9', '{}', attempt => 1, owner => 'idem_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_checkpoint('charge-9', 'charged', attempt => 1, owner => 'idem_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_release('charge-9', attempt => 1, owner => 'idem_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_forget('charge-9', owner => 'idem_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_forget('charge-9', owner => 'idem_nobody');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- bob's keys are as he left them
SET ROLE idem_bob;
SELECT outcome, response FROM idem_claim('pay-1', fingerprint => 'fp-bob', scope => 'tenantB');
SELECT key, status, attempt, owner FROM idem_lookup('charge-9');
SELECT idem_checkpoint('charge-9', 'charged', attempt => 1) IS NOT NULL AS checkpointed;
RESET ROLE;

-- a superuser reaches any role's keys by naming the role; its own are apart
SELECT outcome, response FROM idem_claim('pay-1', scope => 'tenantB', owner => 'idem_bob');
SELECT count(*) AS own_keys FROM idem_lookup('pay-1', 'tenantB');
SELECT recovery_point FROM idem_lookup('charge-9', owner => 'idem_bob');

-- members of a group role share its keys on purpose, by naming it
SET ROLE idem_member;
BEGIN;
SELECT outcome FROM idem_claim('order-5', owner => 'idem_group');
SELECT idem_complete('order-5', '{"order": 5}', owner => 'idem_group');
COMMIT;
SELECT outcome, response FROM idem_claim('order-5', owner => 'idem_group');
SELECT count(*) AS own_keys FROM idem_lookup('order-5');
RESET ROLE;
SET ROLE idem_alice;
SELECT * FROM idem_claim('order-5', owner => 'idem_group');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- the table records each key's owner
SELECT key, scope, owner, status FROM idem_keys ORDER BY key, owner::text;

TRUNCATE idem_keys;
REVOKE EXECUTE ON FUNCTION idem_forget(text, text, name)
  FROM idem_alice, idem_bob, idem_member;
DROP ROLE idem_alice, idem_bob, idem_member, idem_group;
