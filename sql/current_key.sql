--
-- idem_current_key(), idem_current_keys(): stamp business rows with the key
-- of the request that created them
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

CREATE TABLE idem_test_orders (
	id serial PRIMARY KEY,
	amount numeric NOT NULL,
	request_key text DEFAULT idem_current_key()
);

-- outside a claim: none
SELECT idem_current_key();
SELECT count(*) FROM idem_current_keys();

-- the claim of this transaction is the row's default
BEGIN;
SELECT outcome FROM idem_claim('k-1');
INSERT INTO idem_test_orders (amount) VALUES (10);
SELECT idem_current_key();
COMMIT;
-- and the next transaction has none
INSERT INTO idem_test_orders (amount) VALUES (20);
SELECT amount, request_key FROM idem_test_orders ORDER BY id;

-- "what did request K create?"
SELECT amount FROM idem_test_orders WHERE request_key = 'k-1';

-- the latest claim that still holds: not a released one, not one rolled back
BEGIN;
SELECT outcome FROM idem_claim('k-2', scope => 's');
SELECT outcome FROM idem_claim('k-3');
SELECT idem_current_key();
SAVEPOINT a;
SELECT outcome FROM idem_claim('k-4');
SELECT idem_current_key();
ROLLBACK TO SAVEPOINT a;
SELECT idem_current_key();
SELECT idem_release('k-3');
SELECT idem_current_key();
SELECT scope, key FROM idem_current_keys();
COMMIT;

-- a batch: every key it claimed (in the order of its locks); a replay is
-- not a claim
BEGIN;
SELECT key, outcome FROM idem_claim_many(ARRAY['k-5', 'k-1', 'k-6']);
SELECT scope, key FROM idem_current_keys() ORDER BY key;
COMMIT;

-- in a trigger, stamped on every row
CREATE FUNCTION idem_test_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.request_key := coalesce(idem_current_key(), 'none');
	RETURN NEW;
END;
$$;
CREATE TRIGGER stamp BEFORE INSERT ON idem_test_orders
	FOR EACH ROW EXECUTE FUNCTION idem_test_stamp();
BEGIN;
SELECT outcome FROM idem_claim('k-7');
INSERT INTO idem_test_orders (amount) VALUES (30), (31);
COMMIT;
INSERT INTO idem_test_orders (amount) VALUES (40);
SELECT amount, request_key FROM idem_test_orders WHERE amount >= 30 ORDER BY id;

-- a leased claim commits on its own: not listed
BEGIN;
SELECT outcome FROM idem_claim('k-8', lease => '1 minute');
SELECT idem_current_key();
COMMIT;

DROP TABLE idem_test_orders;
DROP FUNCTION idem_test_stamp();
