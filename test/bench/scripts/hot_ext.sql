-- hot keys, extension: the winner runs the request, the others wait and replay
\set h random(1, 10)
\set c random(1, 100000)
SELECT 'hot' || :h || '-' || floor(extract(epoch FROM clock_timestamp()) * 20)::bigint AS key \gset
BEGIN;
SELECT (outcome = 'claimed')::int AS claimed, response FROM idem_claim(key => :key) \gset
\if :claimed
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :key) RETURNING id \gset
SELECT idem_complete(key => :key, response => jsonb_build_object('order_id', :id::bigint, 'status', 'created'));
\endif
END;
