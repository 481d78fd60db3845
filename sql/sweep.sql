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
