-- hot keys, PL/pgSQL claim function: the advisory lock queues the others
\set h random(1, 10)
\set c random(1, 100000)
SELECT 'hot' || :h || '-' || floor(extract(epoch FROM clock_timestamp()) * 20)::bigint AS key \gset
BEGIN;
SELECT claimed::int AS claimed, response FROM plpgsql_claim(:key) \gset
\if :claimed
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :key) RETURNING id \gset
UPDATE hand_keys SET response = jsonb_build_object('order_id', :id::bigint, 'status', 'created') WHERE key = :key;
\endif
END;
