-- replay, hand-written SQL: the insert finds the key, then read its response
\set k random(1, :nkeys)
BEGIN;
INSERT INTO hand_keys (key) VALUES (:k) ON CONFLICT DO NOTHING RETURNING 1 AS claimed;
SELECT response FROM hand_keys WHERE key = :k;
END;
