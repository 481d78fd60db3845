-- hot keys, hand-written SQL: the insert waits for the winner, then read its response
\set h random(1, 10)
\set c random(1, 100000)
SELECT 'hot' || :h || '-' || floor(extract(epoch FROM clock_timestamp()) * 20)::bigint AS key \gset
BEGIN;
WITH ins AS (INSERT INTO hand_keys (key) VALUES (:key) ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) AS claimed FROM ins \gset
\if :claimed
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :key) RETURNING id \gset
UPDATE hand_keys SET response = jsonb_build_object('order_id', :id::bigint, 'status', 'created') WHERE key = :key;
\else
SELECT response FROM hand_keys WHERE key = :key;
\endif
END;
