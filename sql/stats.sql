--
-- idem_stats: counters kept in shared memory (this suite preloads the
-- library), the sweeper's record for this database, and the live keys
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- the columns
SELECT attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute
 WHERE attrelid = 'idem_stats'::regclass AND attnum > 0
 ORDER BY attnum;

-- preloaded, the counters run; the worker has not visited this database yet
-- (its interval is an hour here), so its record is empty, not NULL
SELECT claims IS NOT NULL AS counting, counters_since <= now() AS since_start,
       sweeper_runs, sweeper_keys, last_sweep_at, last_sweep_keys,
       last_sweep_error, last_sweep_error_at
  FROM idem_stats;

-- one answer of each kind, counted exactly
CREATE TEMP TABLE before AS SELECT * FROM idem_stats;
SELECT outcome FROM idem_claim('st-1', fingerprint => 'a');
SELECT outcome FROM idem_claim('st-1', fingerprint => 'a');
SELECT outcome FROM idem_claim('st-1', fingerprint => 'b');
SELECT outcome FROM idem_claim('st-2', lease => '1 hour');
SELECT outcome FROM idem_claim('st-2');
UPDATE idem_keys SET locked_until = now() - interval '1 second' WHERE key = 'st-2';
SELECT outcome, attempt FROM idem_claim('st-2', lease => '1 hour');
SELECT idem_complete('st-2', '{"ok": true}', attempt => 2);
SELECT outcome FROM idem_claim('st-3', lease => '1 hour');
SELECT idem_release('st-3', attempt => 1);
SELECT outcome FROM idem_claim('st-4');
UPDATE idem_keys SET expires_at = now() - interval '1 second' WHERE key = 'st-4';
SELECT idem_sweep();
-- an answer is counted when it is given, even if its transaction rolls back
BEGIN;
SELECT outcome FROM idem_claim('st-5');
ROLLBACK;
SELECT a.claims - b.claims AS claims,
       a.replays - b.replays AS replays,
       a.in_progress_answers - b.in_progress_answers AS in_progress_answers,
       a.mismatches - b.mismatches AS mismatches,
       a.takeovers - b.takeovers AS takeovers,
       a.completions - b.completions AS completions,
       a.releases - b.releases AS releases,
       a.keys_swept - b.keys_swept AS keys_swept,
       a.counters_since = b.counters_since AS same_since
  FROM idem_stats a, before b;

-- live keys by status, and expired keys waiting for a sweep
TRUNCATE idem_keys;
SELECT count(*) FROM generate_series(1, 2) AS i, LATERAL idem_claim('st-done-' || i);
SELECT outcome FROM idem_claim('st-6', lease => '1 hour');
SELECT outcome FROM idem_claim('st-7');
UPDATE idem_keys SET expires_at = now() - interval '1 second' WHERE key = 'st-7';
SELECT keys_in_progress, keys_completed, keys_expired FROM idem_stats;
-- the counts are of the table's rows as the query's snapshot sees them: a
-- new key's row is written when its transaction commits, so an open claim of
-- a new key is not counted yet
BEGIN;
SELECT outcome FROM idem_claim('st-8');
SELECT keys_in_progress FROM idem_stats;
ROLLBACK;

-- privileges: pg_monitor reads the view, without access to the keys
CREATE ROLE regress_idem_monitor IN ROLE pg_monitor;
CREATE ROLE regress_idem_nobody;
SELECT has_table_privilege('regress_idem_monitor', 'idem_stats', 'SELECT') AS monitor_view,
       has_table_privilege('regress_idem_monitor', 'idem_keys', 'SELECT') AS monitor_keys,
       has_table_privilege('regress_idem_nobody', 'idem_stats', 'SELECT') AS public_view,
       has_function_privilege('regress_idem_nobody', 'idem_stats_shared()', 'EXECUTE') AS public_counters;
SET ROLE regress_idem_monitor;
SELECT keys_in_progress, keys_completed, keys_expired, claims > 0 AS counted FROM idem_stats;
SELECT count(*) FROM idem_keys;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_idem_nobody;
SELECT keys_completed FROM idem_stats;
\echo :LAST_ERROR_SQLSTATE
SELECT claims FROM idem_stats_shared();
\echo :LAST_ERROR_SQLSTATE
SELECT idem_start_worker();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_idem_monitor;
DROP ROLE regress_idem_nobody;

-- the launcher runs (preloaded): idem_start_worker() starts no second one
SELECT idem_start_worker();
SELECT backend_type, datname FROM pg_stat_activity
 WHERE backend_type = 'idempotency launcher';

-- the setting that sizes the sweeper records exists when preloaded
SELECT name, setting, unit, context, min_val, max_val
  FROM pg_settings WHERE name = 'idempotency.max_databases';
