--
-- The catalog is checked when it is loaded: hostile DDL on the extension's
-- objects gives a clear error that names the object, never a crash or a
-- silent no-op
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- a column of another type
ALTER TABLE idem_keys ALTER COLUMN attempt TYPE text;
SELECT * FROM idem_claim('cat-1', lease => '1 minute');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE idem_keys ALTER COLUMN attempt TYPE integer USING attempt::integer;
SELECT outcome FROM idem_claim('cat-1', lease => '1 minute');

-- a NOT NULL constraint dropped
ALTER TABLE idem_keys ALTER COLUMN attempt DROP NOT NULL;
SELECT * FROM idem_claim('cat-2');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE idem_keys ALTER COLUMN attempt SET NOT NULL;

-- a column dropped, then added back at another position
ALTER TABLE idem_keys DROP COLUMN recovery_point;
SELECT * FROM idem_claim('cat-2');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE idem_keys ADD COLUMN recovery_point text;
SELECT outcome FROM idem_claim('cat-2', lease => '1 minute');
SELECT idem_checkpoint('cat-2', 'step 1', attempt => 1) IS NOT NULL AS checkpointed;
SELECT recovery_point FROM idem_lookup('cat-2');

-- the expiry index of another access method: no silent no-op
UPDATE idem_keys SET expires_at = now() - interval '1 second', locked_until = NULL;
DROP INDEX idem_keys_expires_at_idx;
CREATE INDEX idem_keys_expires_hash ON idem_keys USING hash (expires_at);
SELECT idem_sweep();
\echo :LAST_ERROR_SQLSTATE
DROP INDEX idem_keys_expires_hash;
CREATE INDEX idem_keys_expires_brin ON idem_keys USING brin (expires_at);
SELECT idem_sweep();
\echo :LAST_ERROR_SQLSTATE
DROP INDEX idem_keys_expires_brin;
CREATE INDEX idem_keys_expires_at_idx ON idem_keys (expires_at);
SELECT idem_sweep();

-- the primary key replaced by one on other columns
ALTER TABLE idem_keys DROP CONSTRAINT idem_keys_pkey,
  ADD CONSTRAINT idem_keys_pkey PRIMARY KEY (key, scope, owner);
SELECT * FROM idem_claim('cat-3');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE idem_keys DROP CONSTRAINT idem_keys_pkey,
  ADD CONSTRAINT idem_keys_pkey PRIMARY KEY (scope, key, owner);

-- the table renamed, and another planted under its name
ALTER TABLE idem_keys RENAME TO idem_keys_moved;
CREATE TABLE idem_keys (LIKE idem_keys_moved INCLUDING ALL);
SELECT * FROM idem_claim('cat-3');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM idem_keys;
DROP TABLE idem_keys;
ALTER TABLE idem_keys_moved RENAME TO idem_keys;
SELECT outcome FROM idem_claim('cat-3');

-- the key claimed since the sweep is there
SELECT key, status FROM idem_keys ORDER BY key;

-- the result type of idem_claim() altered: what the error says to do works
ALTER TYPE idem_claim_result DROP ATTRIBUTE expires_at;
SELECT * FROM idem_claim('cat-4');
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION idempotency;
CREATE EXTENSION idempotency;
SELECT outcome FROM idem_claim('cat-4');
TRUNCATE idem_keys;
