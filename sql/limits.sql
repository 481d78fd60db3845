--
-- Every input has a limit, enforced at the call with a clear error that
-- names the argument, never at COMMIT
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- fingerprint: at most 1024 bytes
SELECT outcome FROM idem_claim('lim-1', fingerprint => repeat('f', 1024));
SELECT * FROM idem_claim('lim-2', fingerprint => repeat('f', 1025));
\echo :LAST_ERROR_SQLSTATE

-- recovery point: at most idempotency.max_response_size bytes
BEGIN;
SET LOCAL idempotency.max_response_size = '1kB';
SELECT outcome FROM idem_claim('lim-3', lease => '1 minute');
SELECT idem_checkpoint('lim-3', repeat('r', 1024)) IS NOT NULL AS checkpointed;
SELECT idem_checkpoint('lim-3', repeat('r', 1025));
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- a lease no longer than the ttl, the default ttl included
SELECT * FROM idem_claim('lim-4', ttl => '1 minute', lease => '2 minutes');
\echo :LAST_ERROR_SQLSTATE
SET idempotency.default_ttl = '1h';
SELECT * FROM idem_claim('lim-4', lease => '2 hours');
\echo :LAST_ERROR_SQLSTATE
SELECT outcome FROM idem_claim('lim-4', lease => '1 hour');
RESET idempotency.default_ttl;

-- ttl and lease at most 100 years, with an error that names them
SELECT * FROM idem_claim('lim-5', ttl => '178000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('lim-5', ttl => '-178000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM idem_claim('lim-5', ttl => '100 years 1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT outcome FROM idem_claim('lim-5', ttl => '100 years');
SELECT * FROM idem_claim('lim-6', ttl => '100 years', lease => '200000 years');
\echo :LAST_ERROR_SQLSTATE

-- idempotency.max_key_length is capped so that every accepted key can be
-- indexed: the longest key and scope, in 4-byte characters, commit
SET idempotency.max_key_length = 326;
\echo :LAST_ERROR_SQLSTATE
SET idempotency.max_key_length = 325;
BEGIN;
SELECT outcome FROM idem_claim(repeat(U&'\+01F511', 325), scope => repeat(U&'\+01F3F7', 325));
COMMIT;
SELECT length(key) AS characters, octet_length(key) + octet_length(scope) AS bytes
  FROM idem_keys WHERE length(key) = 325;
SELECT * FROM idem_claim(repeat(U&'\+01F511', 326));
\echo :LAST_ERROR_SQLSTATE
RESET idempotency.max_key_length;

-- attempt: an error, never a wrap-around
SELECT outcome FROM idem_claim('lim-7', lease => '1 minute');
UPDATE idem_keys SET attempt = 2147483647, locked_until = now() - interval '1 second'
 WHERE key = 'lim-7';
SELECT * FROM idem_claim('lim-7', lease => '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT attempt, status FROM idem_keys WHERE key = 'lim-7';

-- none of the refused calls left a key behind
SELECT left(key, 5) AS key FROM idem_keys ORDER BY key;
TRUNCATE idem_keys;
