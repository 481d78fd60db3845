--
-- One transaction that claims many keys: more than the few its list of
-- claims searches one by one, so that they are found through its hash table
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- 30 keys with expired rows: claiming them again writes their rows at once
SELECT count(outcome) FROM generate_series(1, 30) AS i, LATERAL idem_claim('w-' || i);
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 minute';

BEGIN;
-- 50 new keys, in two scopes with the same names
SELECT outcome, count(*) FROM generate_series(1, 50) AS i, LATERAL idem_claim('m-' || i)
 GROUP BY 1;
SELECT outcome, count(*) FROM generate_series(1, 50) AS i,
       LATERAL idem_claim('m-' || i, scope => 'other') GROUP BY 1;
SELECT outcome, attempt, count(*) FROM generate_series(1, 30) AS i, LATERAL idem_claim('w-' || i)
 GROUP BY 1, 2;
-- each key is found again, in its own scope
SELECT outcome, count(*) FROM generate_series(1, 50) AS i, LATERAL idem_claim('m-' || i)
 GROUP BY 1;
SELECT count(*) FROM generate_series(1, 50) AS i, LATERAL idem_lookup('m-' || i, scope => 'other')
 WHERE status = 'in_progress';
-- complete the even keys with a response, release ten keys of the other scope
SELECT count(idem_complete('m-' || i, jsonb_build_object('n', i))) FROM generate_series(2, 50, 2) AS i;
SELECT count(idem_complete('w-' || i, jsonb_build_object('w', i))) FROM generate_series(1, 30, 3) AS i;
SELECT count(*) FILTER (WHERE idem_release('m-' || i, scope => 'other'))
  FROM generate_series(1, 10) AS i;
SAVEPOINT s;
-- undone below: complete the odd keys, claim five released keys again
SELECT count(idem_complete('m-' || i, '{"undone": true}')) FROM generate_series(1, 49, 2) AS i;
SELECT outcome, count(*) FROM generate_series(1, 5) AS i,
       LATERAL idem_claim('m-' || i, scope => 'other') GROUP BY 1;
SELECT count(idem_complete('m-' || i, '{"undone": true}', scope => 'other'))
  FROM generate_series(1, 5) AS i;
ROLLBACK TO SAVEPOINT s;
SELECT status, response, count(*) FROM generate_series(1, 4) AS i, LATERAL idem_lookup('m-' || i)
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) FROM generate_series(1, 10) AS i, LATERAL idem_lookup('m-' || i, scope => 'other');
COMMIT;

-- at commit: every claim still standing is completed, with its response if it had one
SELECT scope, left(key, 2) AS keys, status, attempt, count(*), count(response) AS responses
  FROM idem_keys GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4;
SELECT count(*) FROM idem_keys WHERE response ? 'undone';
SELECT key, response FROM idem_keys WHERE key IN ('m-2', 'm-3', 'w-4') AND scope = '' ORDER BY key;

-- nested savepoints: a rollback undoes what its savepoint and those inside it
-- did (released or not), and nothing from before it
TRUNCATE idem_keys;
BEGIN;
SELECT count(outcome) FROM generate_series(1, 20) AS i, LATERAL idem_claim('n-' || i);
SAVEPOINT a;
SELECT count(idem_complete('n-' || i, '{"a": 1}')) FROM generate_series(1, 5) AS i;
SAVEPOINT b;
SELECT count(idem_complete('n-' || i, '{"b": 1}')) FROM generate_series(6, 10) AS i;
RELEASE SAVEPOINT b;
SELECT count(*) FILTER (WHERE idem_release('n-' || i)) FROM generate_series(11, 12) AS i;
SAVEPOINT c;
SELECT count(idem_complete('n-' || i, '{"c": 1}')) FROM generate_series(13, 15) AS i;
ROLLBACK TO SAVEPOINT c;
-- 1-10 completed, 11-12 released, 13-20 in progress
SELECT status, response, count(*) FROM generate_series(1, 20) AS i, LATERAL idem_lookup('n-' || i)
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(idem_complete('n-' || i, '{"a2": 1}')) FROM generate_series(16, 17) AS i;
ROLLBACK TO SAVEPOINT a;
SELECT count(idem_complete('n-' || i, '{"top": 1}')) FROM generate_series(1, 2) AS i;
COMMIT;
-- all 20 claims stand: two completed at the top level, the rest at commit
SELECT status, response, count(*) FROM idem_keys WHERE key LIKE 'n-%' GROUP BY 1, 2 ORDER BY 1, 2;
