-- new key without a response, the same four statements with no key kept
\set k random(1, 9223372036854775806)
\set c random(1, 100000)
BEGIN;
SELECT :k::text AS key;
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, :k) RETURNING id;
END;
