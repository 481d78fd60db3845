--
-- Bad input: an ERROR with the right SQLSTATE, and nothing changes
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;
SELECT outcome FROM idem_claim('e-live');

-- the key
SELECT * FROM idem_claim(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim(repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim(repeat('ü', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT outcome FROM idem_claim(repeat('ü', 255));

-- the scope
SELECT * FROM idem_claim('e-1', scope => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('e-1', scope => repeat('s', 256));
\echo :LAST_ERROR_SQLSTATE

-- ttl and lease must be positive
SELECT * FROM idem_claim('e-1', ttl => '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('e-1', ttl => '-1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('e-1', ttl => '1 month -31 days');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('e-1', lease => '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('e-1', lease => '-5 minutes');
\echo :LAST_ERROR_SQLSTATE

-- wait must be true or false
SELECT * FROM idem_claim('e-1', wait => NULL);
\echo :LAST_ERROR_SQLSTATE

-- none of that left anything behind
SELECT left(key, 8) AS key, length(key) FROM idem_keys ORDER BY key;

-- the other functions check the key and scope the same way
SELECT idem_complete(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_release(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_checkpoint('', 'step');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_lookup(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_lookup('e-live', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_forget('');
\echo :LAST_ERROR_SQLSTATE

-- a response over idempotency.max_response_size
BEGIN;
SELECT outcome FROM idem_claim('e-2');
SET LOCAL idempotency.max_response_size = '1kB';
SELECT idem_complete('e-2', jsonb_build_object('big', repeat('x', 2000)));
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- completing, checkpointing or releasing what this caller does not own
SELECT idem_complete('e-absent', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_complete('e-live', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_release('e-live');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_checkpoint('e-live', 'step');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT outcome FROM idem_claim('e-3');
SELECT idem_checkpoint('e-3', 'step');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- idem_sweep's bound
SELECT idem_sweep(0);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_sweep(-1);
\echo :LAST_ERROR_SQLSTATE

-- still nothing changed
SELECT left(key, 8) AS key, status, response FROM idem_keys ORDER BY key;

-- distributing with Citus needs Citus
SELECT idem_distribute();
\echo :LAST_ERROR_SQLSTATE
