-- Objects for the benchmark: the business table that every variant writes,
-- the extension, and the baselines written as an application developer would.

CREATE EXTENSION idempotency;

-- The business write, the same in every variant and scenario.
CREATE TABLE orders (
	id			bigserial PRIMARY KEY,
	customer_id	integer NOT NULL,
	amount		numeric(12, 2) NOT NULL,
	idem_key	text,
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- Baseline (b) and (c): a hand-written key table.  The key is the primary key
-- (byte-wise collation, as an identifier should be); a NULL response means the
-- request is still running; created_at is indexed so that old keys can be
-- expired with a batched DELETE.
CREATE TABLE hand_keys (
	key			text COLLATE "C" PRIMARY KEY,
	response	jsonb,
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hand_keys_created_at_idx ON hand_keys (created_at);

-- Baseline (c): a PL/pgSQL claim function.  The advisory lock serialises
-- callers of one key until the end of the transaction; after it the lookup
-- sees whatever the previous holder committed.
CREATE FUNCTION plpgsql_claim(p_key text, OUT claimed boolean, OUT response jsonb)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(hashtextextended(p_key, 0));
	SELECT k.response INTO response FROM hand_keys k WHERE k.key = p_key;
	IF FOUND THEN
		claimed := false;
		RETURN;
	END IF;
	INSERT INTO hand_keys (key) VALUES (p_key);
	claimed := true;
END
$$;
