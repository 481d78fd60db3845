/* idempotency--0.2.sql */

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
-- fast whatever the database's locale.  A key belongs to the role that
-- claimed it (owner): two roles that use the same key string hold two keys.
-- The owner is a regrole, which pg_dump writes as the role's name, so a key
-- stays with the same role through a restore into another cluster; pg_upgrade
-- keeps role OIDs.  Owner 0 (shown as '-') is a key claimed under version
-- 0.1, which records no role: every role reaches it, as in 0.1.  The default
-- serves rows that an operator inserts by hand.
--
-- The columns are ordered for the row's size, not for reading: the 8-byte
-- columns first, then the 4-byte ones, then the variable-length ones, so
-- that no alignment padding falls between them and the owner costs the row
-- nothing in most cases.  A table updated from 0.1 has the columns of 0.2
-- last.  released_attempt is the last attempt given up with idem_release(),
-- so that its worker is told so, not that its lease ran out.
--
CREATE TABLE @extschema@.idem_keys (
	created_at		timestamptz NOT NULL,
	completed_at	timestamptz,
	expires_at		timestamptz NOT NULL,
	locked_until	timestamptz,
	lease			interval,
	status			@extschema@.idem_status NOT NULL,
	attempt			integer NOT NULL,
	owner			regrole NOT NULL DEFAULT CURRENT_USER::regrole,
	released_attempt integer,
	scope			text COLLATE "C" NOT NULL,
	key				text COLLATE "C" NOT NULL,
	fingerprint		text,
	response		jsonb,
	recovery_point	text,
	body			bytea,
	CONSTRAINT idem_keys_pkey PRIMARY KEY (scope, key, owner)
);

CREATE INDEX idem_keys_expires_at_idx ON @extschema@.idem_keys (expires_at);

COMMENT ON TABLE @extschema@.idem_keys IS 'one row per live idempotency key';

-- The functions are the interface: nobody but the table's owner touches it.
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
	expires_at		timestamptz,
	body			bytea
);

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

CREATE FUNCTION @extschema@.idem_release(
	key text,
	scope text DEFAULT '',
	attempt integer DEFAULT NULL,
	owner name DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

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

CREATE FUNCTION @extschema@.idem_lookup(
	key text,
	scope text DEFAULT '',
	owner name DEFAULT NULL)
RETURNS SETOF @extschema@.idem_keys
AS 'MODULE_PATHNAME', 'idem_lookup'
LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 1;

CREATE FUNCTION @extschema@.idem_forget(
	key text,
	scope text DEFAULT '',
	owner name DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

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

-- Who may call what (the README's privileges table says why):
--  * claim, complete, checkpoint, renew, release, lookup and fingerprint:
--    PUBLIC.
--    A role reaches only its own keys and those of roles whose privileges it
--    has, so these are safe for every role.
--  * forget deletes a completed key, so that its request runs again, and
--    sweep deletes every role's expired keys: operators' tools, granted by
--    the database owner to the roles that need them.
REVOKE EXECUTE ON FUNCTION @extschema@.idem_forget(text, text, name) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.idem_sweep(integer) FROM PUBLIC;

--
-- Statistics
--
-- Counters are cluster-wide and kept in shared memory: NULL unless the library
-- is in shared_preload_libraries.  The sweeper columns are this database's.
CREATE FUNCTION @extschema@.idem_stats_shared(
	OUT claims bigint,
	OUT replays bigint,
	OUT in_progress_answers bigint,
	OUT mismatches bigint,
	OUT takeovers bigint,
	OUT completions bigint,
	OUT releases bigint,
	OUT keys_swept bigint,
	OUT counters_since timestamptz,
	OUT sweeper_runs bigint,
	OUT sweeper_keys bigint,
	OUT last_sweep_at timestamptz,
	OUT last_sweep_keys bigint,
	OUT last_sweep_error text,
	OUT last_sweep_error_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'idem_stats_shared'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- The keys are counted as of now; the view reads the table with its owner's
-- rights, so a monitoring role needs no access to the keys themselves.
CREATE VIEW @extschema@.idem_stats AS
SELECT s.claims, s.replays, s.in_progress_answers, s.mismatches, s.takeovers,
	   s.completions, s.releases, s.keys_swept, s.counters_since,
	   s.sweeper_runs, s.sweeper_keys, s.last_sweep_at, s.last_sweep_keys,
	   s.last_sweep_error, s.last_sweep_error_at,
	   k.keys_in_progress, k.keys_completed, k.keys_expired
  FROM @extschema@.idem_stats_shared() AS s,
	   (SELECT pg_catalog.count(*) FILTER (
				WHERE i.status OPERATOR(pg_catalog.=) 'in_progress'::@extschema@.idem_status
				  AND i.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS keys_in_progress,
			   pg_catalog.count(*) FILTER (
				WHERE i.status OPERATOR(pg_catalog.=) 'completed'::@extschema@.idem_status
				  AND i.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS keys_completed,
			   pg_catalog.count(*) FILTER (
				WHERE i.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS keys_expired
		  FROM @extschema@.idem_keys AS i) AS k;

COMMENT ON VIEW @extschema@.idem_stats IS 'idempotency counters, sweeper state and live keys';

-- Counters cover every database of the cluster: for monitoring roles only.
REVOKE ALL ON FUNCTION @extschema@.idem_stats_shared() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.idem_stats_shared() TO pg_monitor;
REVOKE ALL ON @extschema@.idem_stats FROM PUBLIC;
GRANT SELECT ON @extschema@.idem_stats TO pg_monitor;

--
-- Background worker
--
-- Start the launcher without a restart, when the library is not preloaded.
CREATE FUNCTION @extschema@.idem_start_worker()
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_start_worker'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION @extschema@.idem_start_worker() FROM PUBLIC;

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
