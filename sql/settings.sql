--
-- The idempotency.* settings: units, defaults, limits
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

SELECT name, setting, unit, context, vartype, min_val, max_val, short_desc
  FROM pg_settings
 WHERE name IN ('idempotency.default_ttl', 'idempotency.max_key_length',
                'idempotency.max_response_size')
 ORDER BY name;
SHOW idempotency.default_ttl;
SHOW idempotency.max_response_size;

-- default_ttl takes units and applies when no ttl is given
SET idempotency.default_ttl = '90min';
SHOW idempotency.default_ttl;
SELECT expires_at = statement_timestamp() + interval '90 minutes' AS ttl_90min
  FROM idem_claim('s-1');
SELECT expires_at = statement_timestamp() + interval '5 minutes' AS explicit_ttl_wins
  FROM idem_claim('s-2', ttl => '5 minutes');
RESET idempotency.default_ttl;
SET idempotency.default_ttl = 0;
\echo :LAST_ERROR_SQLSTATE

-- max_key_length, in characters
SET idempotency.max_key_length = 4;
SELECT outcome FROM idem_claim('abcd');
SELECT outcome FROM idem_claim('äöüß');
SELECT outcome FROM idem_claim('abcde');
\echo :LAST_ERROR_SQLSTATE
RESET idempotency.max_key_length;
SELECT outcome FROM idem_claim('abcde');

-- max_response_size, in bytes, with units
SET idempotency.max_response_size = '64B';
BEGIN;
SELECT outcome FROM idem_claim('s-3');
SELECT idem_complete('s-3', '{"fits": true}');
SELECT outcome FROM idem_claim('s-4');
SELECT idem_complete('s-4', jsonb_build_object('too', repeat('x', 100)));
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
RESET idempotency.max_response_size;

-- limits are for superusers to change
CREATE ROLE idem_settings_user;
SET ROLE idem_settings_user;
SET idempotency.max_key_length = 10000;
\echo :LAST_ERROR_SQLSTATE
SET idempotency.default_ttl = '1h';
RESET ROLE;
DROP ROLE idem_settings_user;

-- an unknown setting in the reserved prefix is refused
SET idempotency.no_such_setting = 1;
\echo :LAST_ERROR_SQLSTATE
