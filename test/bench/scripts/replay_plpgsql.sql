-- replay, PL/pgSQL claim function: finds the key and returns its response
\set k random(1, :nkeys)
SELECT claimed, response FROM plpgsql_claim(:k);
