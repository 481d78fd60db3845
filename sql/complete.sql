--
-- idem_complete(): storing the result of a claim
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- complete inside the claiming transaction; the retry replays the response
BEGIN;
SELECT outcome FROM idem_claim('c-1');
SELECT idem_complete('c-1', '{"id": 42, "items": [1, 2, 3], "note": "it''s \"done\""}');
SELECT status, response, completed_at IS NOT NULL AS completed FROM idem_lookup('c-1');
COMMIT;
SELECT outcome, response FROM idem_claim('c-1');

-- a NULL response means "done, nothing was kept"
BEGIN;
SELECT outcome FROM idem_claim('c-2');
SELECT idem_complete('c-2');
COMMIT;
SELECT outcome, response IS NULL AS no_response FROM idem_claim('c-2');

-- a JSON scalar, an array, a large response (stored out of line) come back intact
BEGIN;
SELECT outcome FROM idem_claim('c-3');
SELECT idem_complete('c-3', '"just a string"');
SELECT outcome FROM idem_claim('c-4');
SELECT idem_complete('c-4', '[null, true, 1.50, {"a": {}}]');
SELECT outcome FROM idem_claim('c-5');
SELECT idem_complete('c-5', jsonb_build_object('blob', repeat(md5('x'), 5000)));
COMMIT;
SELECT response FROM idem_claim('c-3');
SELECT response FROM idem_claim('c-4');
SELECT length(response->>'blob'), md5(response::text) = md5(jsonb_build_object('blob', repeat(md5('x'), 5000))::text) AS intact
  FROM idem_claim('c-5');

-- a claim in autocommit was completed at its commit: completing it later fails
SELECT outcome FROM idem_claim('c-6');
SELECT idem_complete('c-6', '{"late": true}');
\echo :LAST_ERROR_SQLSTATE
SELECT response FROM idem_lookup('c-6');

-- completing twice fails, and the first response stays
BEGIN;
SELECT outcome FROM idem_claim('c-7');
SELECT idem_complete('c-7', '{"first": true}');
SELECT idem_complete('c-7', '{"second": true}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- completing a key nobody claimed fails
SELECT idem_complete('never-claimed');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM idem_keys WHERE key = 'never-claimed';

-- inside its own transaction a claim outlives its ttl: it is still ours
BEGIN;
SELECT outcome FROM idem_claim('c-8', ttl => '1 microsecond');
SELECT pg_sleep(0.01);
SELECT outcome, attempt FROM idem_claim('c-8');
SELECT idem_complete('c-8', '"late but mine"');
SELECT outcome, response FROM idem_claim('c-8');
COMMIT;
-- once committed it expires: the next claim starts afresh
SELECT outcome, attempt, response FROM idem_claim('c-8');

-- completing a committed key that expired fails
SELECT outcome FROM idem_claim('c-8b', lease => '1 hour');
UPDATE idem_keys SET expires_at = statement_timestamp() - interval '1 second',
                     locked_until = statement_timestamp() - interval '1 second'
 WHERE key = 'c-8b';
SELECT idem_complete('c-8b', '{}', attempt => 1);
\echo :LAST_ERROR_SQLSTATE

-- the attempt, when given, must be the current one
BEGIN;
SELECT outcome, attempt FROM idem_claim('c-9');
SELECT idem_complete('c-9', '{}', attempt => 2);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT outcome, attempt FROM idem_claim('c-9');
SELECT idem_complete('c-9', '{"with": "attempt"}', attempt => 1);
COMMIT;
SELECT response FROM idem_claim('c-9');

-- a failed completion changes nothing: the key is still ours and in progress
BEGIN;
SELECT outcome FROM idem_claim('c-10');
SAVEPOINT s;
SELECT idem_complete('c-10', '{}', attempt => 5);
ROLLBACK TO SAVEPOINT s;
SELECT status, response FROM idem_lookup('c-10');
SELECT idem_complete('c-10', '{"ok": 1}');
COMMIT;
SELECT response FROM idem_claim('c-10');

-- scopes: completing in one scope leaves the other alone
BEGIN;
SELECT outcome FROM idem_claim('c-11', scope => 'a');
SELECT outcome FROM idem_claim('c-11', scope => 'b');
SELECT idem_complete('c-11', '"for a"', scope => 'a');
COMMIT;
SELECT scope, response FROM idem_keys WHERE key = 'c-11' ORDER BY scope;
