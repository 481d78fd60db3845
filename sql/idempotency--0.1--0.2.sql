/* idempotency--0.1--0.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION idempotency UPDATE TO '0.2'" to load this file. \quit

--
-- Keys belong to roles.  Keys claimed under 0.1 record no role: they get
-- owner 0 ('-'), which every role reaches, as every role did in 0.1, until
-- they expire.  The primary key gains the owner, so that two roles that use
-- the same key string hold two keys.
--
-- (a regrole constant cannot be a stored default, hence the UPDATE)
ALTER TABLE @extschema@.idem_keys
	ADD COLUMN owner regrole;
UPDATE @extschema@.idem_keys SET owner = '-';
ALTER TABLE @extschema@.idem_keys
	ALTER COLUMN owner SET NOT NULL,
	ALTER COLUMN owner SET DEFAULT CURRENT_USER::regrole;
ALTER TABLE @extschema@.idem_keys
	DROP CONSTRAINT idem_keys_pkey,
	ADD CONSTRAINT idem_keys_pkey PRIMARY KEY (scope, key, owner);

--
-- Every function that names a key gains a last argument, owner: the role
-- whose keys the call reaches (by default the current role).
--
DROP FUNCTION @extschema@.idem_claim(text, text, interval, text, boolean, interval);
CREATE FUNCTION @extschema@.idem_claim(
	key text,
	fingerprint text DEFAULT NULL,
	ttl interval DEFAULT NULL,
	scope text DEFAULT '',
	wait boolean DEFAULT true,
	lease interval DEFAULT NULL,
	owner name DEFAULT NULL)
RETURNS @extschema@.idem_claim_result
AS 'MODULE_PATHNAME', 'idem_claim'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

DROP FUNCTION @extschema@.idem_complete(text, jsonb, text, integer);
CREATE FUNCTION @extschema@.idem_complete(
	key text,
	response jsonb DEFAULT NULL,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL,
	owner name DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

DROP FUNCTION @extschema@.idem_release(text, text, integer);
CREATE FUNCTION @extschema@.idem_release(
	key text,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL,
	owner name DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

DROP FUNCTION @extschema@.idem_checkpoint(text, text, text, integer);
CREATE FUNCTION @extschema@.idem_checkpoint(
	key text,
	recovery_point text,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL,
	owner name DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'idem_checkpoint'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

DROP FUNCTION @extschema@.idem_lookup(text, text);
CREATE FUNCTION @extschema@.idem_lookup(
	key text,
	scope text DEFAULT '',
	owner name DEFAULT NULL)
RETURNS SETOF @extschema@.idem_keys
AS 'MODULE_PATHNAME', 'idem_lookup'
LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 1;

DROP FUNCTION @extschema@.idem_forget(text, text);
CREATE FUNCTION @extschema@.idem_forget(
	key text,
	scope text DEFAULT '',
	owner name DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- forget stays an operator's tool (see idempotency--0.2.sql)
REVOKE EXECUTE ON FUNCTION @extschema@.idem_forget(text, text, name) FROM PUBLIC;
