-- new key, extension: claim, business write, complete, one transaction
\set k random(1, 9223372036854775806)
\set c random(1, 100000)
BEGIN;
SELECT outcome FROM idem_claim(key => :k);
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :k) RETURNING id \gset
SELECT idem_complete(key => :k, response => jsonb_build_object('order_id', :id::bigint, 'status', 'created'));
END;
