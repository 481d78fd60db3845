-- replay, extension: the claim of a completed key returns the stored response
\set k random(1, :nkeys)
SELECT outcome, response FROM idem_claim(key => :k);
