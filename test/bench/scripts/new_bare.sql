-- new key, the same five statements with no key kept: what no claim can beat
\set k random(1, 9223372036854775806)
\set c random(1, 100000)
BEGIN;
SELECT :k::text AS key;
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :k) RETURNING id \gset
SELECT jsonb_build_object('order_id', :id::bigint, 'status', 'created') AS response;
END;
