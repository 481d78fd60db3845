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
-- A response can also be stored byte for byte (body), and a claim replays it.
--
ALTER TABLE @extschema@.idem_keys ADD COLUMN body bytea;

-- The last attempt given up with idem_release(), for its worker's error
ALTER TABLE @extschema@.idem_keys ADD COLUMN released_attempt integer;
ALTER TYPE @extschema@.idem_claim_result ADD ATTRIBUTE body bytea;

--
-- Every function that names a key gains an argument owner: the role whose
-- keys the call reaches (by default the current role).  A claim can bound
-- its wait (wait_timeout), and a completion can store a body.
--
DROP FUNCTION @extschema@.idem_claim(text, text, interval, text, boolean, interval);
CREATE FUNCTION @extschema@.idem_claim(
	key text,
	fingerprint text DEFAULT NULL,
	ttl interval DEFAULT NULL,
	scope text DEFAULT '',
	wait boolean DEFAULT true,
	lease interval DEFAULT NULL,
	owner name DEFAULT NULL,
	wait_timeout interval DEFAULT NULL,
	notify boolean DEFAULT false)
RETURNS @extschema@.idem_claim_result
AS 'MODULE_PATHNAME', 'idem_claim'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

DROP FUNCTION @extschema@.idem_complete(text, jsonb, text, integer);
CREATE FUNCTION @extschema@.idem_complete(
	key text,
	response jsonb DEFAULT NULL,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL,
	owner name DEFAULT NULL,
	body bytea DEFAULT NULL)
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

CREATE FUNCTION @extschema@.idem_renew(
	key text,
	attempt integer,
	scope text DEFAULT '',
	lease interval DEFAULT NULL,
	owner name DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'idem_renew'
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

--
-- What the current transaction claimed, to stamp business rows with it
-- (a column DEFAULT, a trigger): the latest claim's key, and all of them.
--
CREATE FUNCTION @extschema@.idem_current_key()
RETURNS text
AS 'MODULE_PATHNAME', 'idem_current_key'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.idem_current_keys(
	OUT scope text,
	OUT key text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'idem_current_keys'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

--
-- Batches: many keys of one scope claimed, and completed, in one call.
--
CREATE FUNCTION @extschema@.idem_claim_many(
	keys text[],
	fingerprints text[] DEFAULT NULL,
	ttl interval DEFAULT NULL,
	scope text DEFAULT '',
	wait boolean DEFAULT true,
	lease interval DEFAULT NULL,
	owner name DEFAULT NULL,
	wait_timeout interval DEFAULT NULL)
RETURNS TABLE (
	key text,
	outcome @extschema@.idem_outcome,
	response jsonb,
	attempt integer,
	recovery_point text,
	expires_at timestamptz,
	body bytea)
AS 'MODULE_PATHNAME', 'idem_claim_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;

CREATE FUNCTION @extschema@.idem_complete_many(
	keys text[],
	responses jsonb[] DEFAULT NULL,
	scope text DEFAULT '',
	owner name DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'idem_complete_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

--
-- Stream offsets of idempotent consumers: per consumer group, stream,
-- partition and role, the highest offset whose effects committed.  One row
-- per partition, never expired; idem_offset_forget() drops a group.  Like
-- idem_keys, only the functions touch it.
--
CREATE TABLE @extschema@.idem_offsets (
	consumer_group	text COLLATE "C" NOT NULL,
	stream			text COLLATE "C" NOT NULL,
	partition		integer NOT NULL CHECK (partition >= 0),
	owner			regrole NOT NULL DEFAULT CURRENT_USER::regrole,
	committed_offset bigint NOT NULL CHECK (committed_offset >= 0),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT idem_offsets_pkey PRIMARY KEY (consumer_group, stream, partition, owner)
);

COMMENT ON TABLE @extschema@.idem_offsets IS 'per consumer group, stream and partition, the highest committed offset';

REVOKE ALL ON @extschema@.idem_offsets FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('@extschema@.idem_offsets', '');

CREATE FUNCTION @extschema@.idem_offset_advance(
	consumer_group text,
	stream text,
	partition integer,
	message_offset bigint,
	owner name DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_offset_advance'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION @extschema@.idem_offset_get(
	consumer_group text,
	stream text,
	partition integer,
	owner name DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_offset_get'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.idem_offset_forget(
	consumer_group text,
	owner name DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_offset_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- The payload of the notification on channel 'idempotency' that announces
-- the end of a key that a claim with notify found in flight.
CREATE FUNCTION @extschema@.idem_notify_token(
	key text,
	scope text DEFAULT '',
	owner name DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'idem_notify_token'
LANGUAGE C STABLE PARALLEL SAFE;

--
-- Citus: distribute idem_keys by scope and delegate every function that
-- takes a scope to the node that holds the key's shard.  Run on the
-- coordinator, once the extension is created on every node; run it again
-- after ALTER EXTENSION UPDATE, so that new functions are delegated too.
-- The extension does not need Citus: without it this is an error.
--
CREATE FUNCTION @extschema@.idem_distribute(
	colocate_with regclass DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $idem_distribute$
DECLARE
	keys regclass := '@extschema@.idem_keys'::regclass;
	ext oid;
	dist_column text;
	dist_type oid;
	dist_collation oid;
	method "char";
	keys_colocation integer;
	other_colocation integer;
	f regprocedure;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'extension "citus" is not installed'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'idem_distribute() distributes table "idem_keys" with Citus.',
				  HINT = 'Create extension citus, and extension idempotency, on every node of the cluster, then call idem_distribute() on the coordinator.';
	END IF;

	-- a co-located table must hash its distribution column as scope is hashed
	IF colocate_with IS NOT NULL THEN
		EXECUTE 'SELECT p.partmethod, p.colocationid, pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)
				   FROM pg_catalog.pg_dist_partition AS p WHERE p.logicalrelid = $1'
			INTO method, other_colocation, dist_column USING colocate_with;
		IF method IS DISTINCT FROM 'h' THEN
			RAISE EXCEPTION 'table % is not a hash-distributed Citus table', colocate_with
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = 'idem_keys can only be co-located with a table that Citus distributes by hash.',
					  HINT = format('Distribute it first: SELECT create_distributed_table(%L, ''<column>''), on a column of type text COLLATE "C".',
									colocate_with::text);
		END IF;
		SELECT a.atttypid, a.attcollation INTO dist_type, dist_collation
		  FROM pg_attribute AS a
		 WHERE a.attrelid = colocate_with AND a.attname = dist_column;
		IF dist_type IS DISTINCT FROM 'text'::regtype
		   OR dist_collation IS DISTINCT FROM (SELECT c.oid FROM pg_collation AS c
												WHERE c.collname = 'C' AND c.collnamespace = 'pg_catalog'::regnamespace) THEN
			RAISE EXCEPTION 'distribution column "%" of table % is % COLLATE %, not text COLLATE "C"',
					dist_column, colocate_with, format_type(dist_type, NULL),
					coalesce((SELECT quote_ident(c.collname) FROM pg_collation AS c WHERE c.oid = dist_collation), 'none')
				USING ERRCODE = 'datatype_mismatch',
					  DETAIL = 'Citus co-locates rows by the hash of the distribution column, and idem_keys is distributed by scope, of type text COLLATE "C": the other table''s column must have the same type and collation.',
					  HINT = format('Undistribute the table, change the column, and distribute it again: SELECT undistribute_table(%L); ALTER TABLE %s ALTER COLUMN %I TYPE text COLLATE "C"; SELECT create_distributed_table(%L, %L);',
									colocate_with::text, colocate_with::text, dist_column,
									colocate_with::text, dist_column);
		END IF;
	END IF;

	-- idem_keys: distributed by scope, unless it already is
	EXECUTE 'SELECT p.partmethod, p.colocationid, pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)
			   FROM pg_catalog.pg_dist_partition AS p WHERE p.logicalrelid = $1'
		INTO method, keys_colocation, dist_column USING keys;
	IF method IS NULL THEN
		IF colocate_with IS NULL THEN
			-- a group of its own: Citus's default one may hold tables of
			-- another collation, which cannot be co-located with it
			PERFORM create_distributed_table(keys, 'scope', colocate_with => 'none');
		ELSE
			PERFORM create_distributed_table(keys, 'scope', colocate_with => colocate_with::text);
		END IF;
		RETURN NEXT keys::text;
	ELSIF method <> 'h' OR dist_column <> 'scope' THEN
		RAISE EXCEPTION 'table "idem_keys" is already a Citus table, not distributed by scope'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Undo it with undistribute_table(''idem_keys''), then call idem_distribute() again.';
	ELSIF colocate_with IS NOT NULL AND keys_colocation IS DISTINCT FROM other_colocation THEN
		RAISE EXCEPTION 'table "idem_keys" is already distributed, and not co-located with table %', colocate_with
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Co-locate them with SELECT update_distributed_table_colocation(''idem_keys'', colocate_with => %L).',
								colocate_with::text);
	END IF;

	-- every function of the extension with an input argument named scope, as
	-- the catalog has it now
	SELECT e.oid INTO ext FROM pg_extension AS e WHERE e.extname = 'idempotency';
	FOR f IN
		SELECT p.oid::regprocedure
		  FROM pg_proc AS p
		  JOIN pg_depend AS d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
						   AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext
						   AND d.deptype = 'e'
		 WHERE EXISTS (SELECT FROM unnest(p.proargnames, p.proargmodes) AS a(argname, argmode)
						WHERE a.argname = 'scope' AND coalesce(a.argmode, 'i') IN ('i', 'b'))
		 ORDER BY p.proname, p.oid
	LOOP
		PERFORM create_distributed_function(f, distribution_arg_name => 'scope',
											colocate_with => keys::text, force_delegation => true);
		RETURN NEXT f::text;
	END LOOP;
END
$idem_distribute$;

COMMENT ON FUNCTION @extschema@.idem_distribute(regclass) IS 'Citus: distribute idem_keys by scope and delegate the functions to the shard''s node';

REVOKE ALL ON FUNCTION @extschema@.idem_distribute(regclass) FROM PUBLIC;
