-- new key, PL/pgSQL claim function: claim, business write, store the response
\set k random(1, 9223372036854775806)
\set c random(1, 100000)
BEGIN;
SELECT claimed FROM plpgsql_claim(:k);
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :k) RETURNING id \gset
UPDATE hand_keys SET response = jsonb_build_object('order_id', :id::bigint, 'status', 'created') WHERE key = :k;
END;
