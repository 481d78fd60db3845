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

-- for contrast: a leased claim is written at once, and the measure sees it
SELECT wal_records($$SELECT * FROM idem_claim('w-3', lease => '1 minute')$$) > 0 AS leased_claim_writes_wal;

-- a new transactional claim holds the key's lock in the extension's lock
-- space, and writes its row only when its transaction commits
BEGIN;
SELECT outcome FROM idem_claim('w-4');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid_before_commit;
SELECT locktype, mode, granted, objsubid FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
SELECT status, xmin <> '0'::xid AS written FROM idem_keys WHERE key = 'w-4';

DROP FUNCTION wal_records(text);
