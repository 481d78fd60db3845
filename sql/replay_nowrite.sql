--
-- The replay path writes nothing: no transaction id, no WAL, no lock
--
TRUNCATE idem_keys;

CREATE FUNCTION wal_records(query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	plan json;
BEGIN
	EXECUTE 'EXPLAIN (ANALYZE, WAL, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT JSON) ' || query
	   INTO plan;
	RETURN (plan->0->'Plan'->>'WAL Records')::bigint;
END
$$;

BEGIN;
SELECT outcome FROM idem_claim('w-1', fingerprint => 'fp');
SELECT idem_complete('w-1', jsonb_build_object('payload', repeat('r', 5000)));
COMMIT;
-- the first read may set hint bits; after that a replay must not write
SELECT outcome FROM idem_claim('w-1');

BEGIN;
SELECT outcome, length(response->>'payload') FROM idem_claim('w-1');
SELECT outcome FROM idem_claim('w-1', fingerprint => 'fp');
SELECT outcome FROM idem_claim('w-1', fingerprint => 'other');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid_assigned;
SELECT count(*) AS advisory_locks FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;

SELECT wal_records($$SELECT * FROM idem_claim('w-1')$$) AS replay_wal_records;
SELECT wal_records($$SELECT * FROM idem_claim('w-1', fingerprint => 'other')$$) AS mismatch_wal_records;

-- a leased key in progress is answered without writing too
SELECT outcome FROM idem_claim('w-2', lease => '1 hour');
SELECT outcome FROM idem_claim('w-2');
SELECT wal_records($$SELECT * FROM idem_claim('w-2')$$) AS in_progress_wal_records;

-- for contrast: a claim writes, and holds the key's lock in the extension's lock space
SELECT wal_records($$SELECT * FROM idem_claim('w-3')$$) > 0 AS claim_writes_wal;
BEGIN;
SELECT outcome FROM idem_claim('w-4');
SELECT pg_current_xact_id_if_assigned() IS NOT NULL AS xid_assigned;
SELECT locktype, mode, granted, objsubid FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;

DROP FUNCTION wal_records(text);
