-- new key, floor: the business write alone, no idempotency
\set c random(1, 100000)
INSERT INTO orders (customer_id, amount, idem_key) VALUES (:c, 42.50, NULL) RETURNING id;
