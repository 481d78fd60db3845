/* idempotency--0.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION idempotency" to load this file. \quit

--
-- Types
--
CREATE TYPE @extschema@.idem_status AS ENUM ('in_progress', 'completed');

CREATE TYPE @extschema@.idem_outcome AS ENUM ('claimed', 'replay', 'in_progress', 'mismatch');

--
-- The keys table: one row per live key.  Scope and key use the "C" collation:
-- they are identifiers, compared byte for byte, which keeps the primary key
-- fast whatever the database's locale.
--
CREATE TABLE @extschema@.idem_keys (
	scope			text COLLATE "C" NOT NULL,
	key				text COLLATE "C" NOT NULL,
	status			@extschema@.idem_status NOT NULL,
	fingerprint		text,
	response		jsonb,
	attempt			integer NOT NULL,
	recovery_point	text,
	created_at		timestamptz NOT NULL,
	completed_at	timestamptz,
	expires_at		timestamptz NOT NULL,
	locked_until	timestamptz,
	lease			interval,
	CONSTRAINT idem_keys_pkey PRIMARY KEY (scope, key)
);

CREATE INDEX idem_keys_expires_at_idx ON @extschema@.idem_keys (expires_at);

COMMENT ON TABLE @extschema@.idem_keys IS 'one row per live idempotency key';

-- The functions are the interface: nobody but the owner touches the table.
REVOKE ALL ON @extschema@.idem_keys FROM PUBLIC;

-- pg_dump keeps the keys: a restore must not forget what was already done.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.idem_keys', '');

--
-- Functions
--
-- The result of idem_claim() is a named row type rather than OUT
-- parameters: the executor then finds its columns in the type cache, instead
-- of decoding the function's argument arrays at every call.
CREATE TYPE @extschema@.idem_claim_result AS (
	outcome			@extschema@.idem_outcome,
	response		jsonb,
	attempt			integer,
	recovery_point	text,
	expires_at		timestamptz
);

CREATE FUNCTION @extschema@.idem_claim(
	key text,
	fingerprint text DEFAULT NULL,
	ttl interval DEFAULT NULL,
	scope text DEFAULT '',
	wait boolean DEFAULT true,
	lease interval DEFAULT NULL)
RETURNS @extschema@.idem_claim_result
AS 'MODULE_PATHNAME', 'idem_claim'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_complete(
	key text,
	response jsonb DEFAULT NULL,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_release(
	key text,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_checkpoint(
	key text,
	recovery_point text,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'idem_checkpoint'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_lookup(
	key text,
	scope text DEFAULT '')
RETURNS SETOF @extschema@.idem_keys
AS 'MODULE_PATHNAME', 'idem_lookup'
LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

CREATE FUNCTION @extschema@.idem_forget(
	key text,
	scope text DEFAULT '')
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_sweep(
	max_rows integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_sweep'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_fingerprint(
	request jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'idem_fingerprint'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Operator functions: deleting keys is not for every role.
REVOKE EXECUTE ON FUNCTION @extschema@.idem_forget(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.idem_sweep(integer) FROM PUBLIC;

--
-- Statistics
--
