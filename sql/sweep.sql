--
-- idem_sweep(): delete expired keys now
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

SELECT count(outcome) FROM generate_series(1, 10) AS i, LATERAL idem_claim('sw-' || i);
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 minute' * i
  FROM generate_series(1, 6) AS i WHERE key = 'sw-' || i;
-- an expired key under a live lease stays
SELECT outcome FROM idem_claim('sw-leased', lease => '1 hour');
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 hour' WHERE key = 'sw-leased';
-- an expired key whose lease ran out goes
SELECT outcome FROM idem_claim('sw-abandoned', lease => '1 hour');
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 hour',
                     locked_until = statement_timestamp() - interval '1 hour'
 WHERE key = 'sw-abandoned';

-- a bound: the oldest go first
SELECT idem_sweep(max_rows => 2);
SELECT key FROM idem_keys ORDER BY key;
SELECT idem_sweep();
SELECT key FROM idem_keys ORDER BY key;
SELECT idem_sweep();

-- the sweep uses the index on expires_at
SELECT indexrelid::regclass FROM pg_index
 WHERE indrelid = 'idem_keys'::regclass AND NOT indisprimary;

-- an expired key swept is claimed afresh
SELECT outcome, attempt FROM idem_claim('sw-1');

-- A run of batches starts each batch where the last committed full batch of
-- this session stopped.  A key skipped on the way (here, under a lease) is
-- left for the next run, which begins once a batch finds fewer keys than
-- asked.
TRUNCATE idem_keys;
SELECT outcome FROM idem_claim('run-2', lease => '1 hour');
SELECT count(outcome) FROM generate_series(1, 6) AS i, LATERAL idem_claim('run-' || i);
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 hour' + interval '1 minute' * i
  FROM generate_series(1, 6) AS i WHERE key = 'run-' || i;
SELECT idem_sweep(2);
SELECT key, status FROM idem_keys ORDER BY key;
-- the lease runs out, but the run has gone past run-2
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'run-2';
SELECT idem_sweep(2);
SELECT key FROM idem_keys ORDER BY key;
-- a short batch ends the run
SELECT idem_sweep(2);
SELECT key FROM idem_keys ORDER BY key;
-- the next run starts from the oldest key again
SELECT idem_sweep(2);
SELECT key FROM idem_keys ORDER BY key;

-- A batch that rolled back leaves no mark to follow
SELECT outcome FROM idem_claim('rb-2', lease => '1 hour');
SELECT count(outcome) FROM generate_series(1, 6) AS i, LATERAL idem_claim('rb-' || i);
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 hour' + interval '1 minute' * i
  FROM generate_series(1, 6) AS i WHERE key = 'rb-' || i;
BEGIN;
SELECT idem_sweep(2);
SELECT key FROM idem_keys ORDER BY key;
ROLLBACK;
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'rb-2';
-- rb-1 and rb-2 go: had the rolled-back mark (rb-3) been followed, rb-3 and rb-4 would
SELECT idem_sweep(2);
SELECT key FROM idem_keys ORDER BY key;
SELECT idem_sweep();

-- Nor does a batch in a savepoint that rolled back
SELECT outcome FROM idem_claim('sp-1', lease => '1 hour');
SELECT count(outcome) FROM generate_series(1, 3) AS i, LATERAL idem_claim('sp-' || i);
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 hour' + interval '1 minute' * i
  FROM generate_series(1, 3) AS i WHERE key = 'sp-' || i;
BEGIN;
SAVEPOINT s;
SELECT idem_sweep(1);
ROLLBACK TO SAVEPOINT s;
UPDATE idem_keys SET locked_until = statement_timestamp() - interval '1 second' WHERE key = 'sp-1';
-- sp-1 goes: had the mark (sp-2) been followed, sp-2 would
SELECT idem_sweep(1);
SELECT key FROM idem_keys ORDER BY key;
COMMIT;
SELECT idem_sweep();
