--
-- idem_complete(..., body): a response kept byte for byte
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- any bytes, NUL and invalid UTF-8 included, come back as they were given
BEGIN;
SELECT outcome FROM idem_claim('b-1');
SELECT idem_complete('b-1', '{"status": 201, "headers": {"content-type": "application/json"}}',
                     body => '\x00ff7b2261223a20317d0d0a'::bytea);
-- the claiming transaction already sees it as completed
SELECT status, body FROM idem_lookup('b-1');
COMMIT;
SELECT outcome, response, body, body = '\x00ff7b2261223a20317d0d0a'::bytea AS same
  FROM idem_claim('b-1');

-- JSON text whose key order and spacing jsonb would not keep
BEGIN;
SELECT outcome FROM idem_claim('b-2');
SELECT idem_complete('b-2', body => convert_to('{"b": 1,  "a": [1.50, 2]}', 'UTF8'));
COMMIT;
SELECT convert_from(body, 'UTF8') AS body, response FROM idem_claim('b-2');

-- a body for a key written at once (a leased claim), and a large body,
-- stored out of line
SELECT outcome, attempt FROM idem_claim('b-3', lease => '1 minute');
SELECT idem_complete('b-3', body => decode(repeat('00ff', 100000), 'hex'), attempt => 1);
SELECT outcome, length(body), md5(body) = md5(decode(repeat('00ff', 100000), 'hex')) AS same
  FROM idem_claim('b-3');

-- only a replay carries the body
SELECT outcome, attempt FROM idem_claim('b-4', fingerprint => 'x', lease => '1 minute');
SELECT idem_complete('b-4', body => '\x01', attempt => 1);
SELECT outcome, body FROM idem_claim('b-4', fingerprint => 'y');

-- no body: NULL
BEGIN;
SELECT outcome FROM idem_claim('b-5');
COMMIT;
SELECT outcome, body FROM idem_claim('b-5');

-- the body counts against idempotency.max_response_size
SET idempotency.max_response_size = 1024;
BEGIN;
SELECT outcome FROM idem_claim('b-6');
SELECT idem_complete('b-6', body => decode(repeat('ab', 1025), 'hex'));
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
RESET idempotency.max_response_size;
