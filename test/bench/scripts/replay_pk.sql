-- replay, reference: a prepared primary-key SELECT of the stored response
\set k random(1, :nkeys)
SELECT response FROM hand_keys WHERE key = :k;
