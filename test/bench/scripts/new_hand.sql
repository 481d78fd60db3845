-- new key, hand-written SQL: insert the key, business write, store the response
\set k random(1, 9223372036854775806)
\set c random(1, 100000)
BEGIN;
INSERT INTO hand_keys (key) VALUES (:k) ON CONFLICT DO NOTHING RETURNING 1 AS claimed;
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :k) RETURNING id \gset
UPDATE hand_keys SET response = jsonb_build_object('order_id', :id::bigint, 'status', 'created') WHERE key = :k;
END;
