--
-- idem_offset_advance(), idem_offset_get(), idem_offset_forget(): stream
-- offsets of idempotent consumers
--
\set SHOW_CONTEXT never
TRUNCATE idem_offsets;

-- nothing stored yet: no offset to resume from
SELECT idem_offset_get('billing', 'orders', 0);

-- an offset is new once; at or below the stored one it is a duplicate
SELECT idem_offset_advance('billing', 'orders', 0, 41);
SELECT idem_offset_advance('billing', 'orders', 0, 41);
SELECT idem_offset_advance('billing', 'orders', 0, 40);
-- gaps are allowed: offsets need not be consecutive
SELECT idem_offset_advance('billing', 'orders', 0, 45);
SELECT idem_offset_get('billing', 'orders', 0);

-- partitions, streams and groups are independent
SELECT idem_offset_advance('billing', 'orders', 1, 0);
SELECT idem_offset_advance('billing', 'refunds', 0, 7);
SELECT idem_offset_advance('audit', 'orders', 0, 3);
SELECT consumer_group, stream, partition, committed_offset
  FROM idem_offsets ORDER BY 1, 2, 3;

-- an advance commits or rolls back with the transaction's other writes
BEGIN;
SELECT idem_offset_advance('billing', 'orders', 0, 50);
ROLLBACK;
SELECT idem_offset_get('billing', 'orders', 0);
BEGIN;
SELECT idem_offset_advance('billing', 'orders', 0, 50);
SAVEPOINT s;
SELECT idem_offset_advance('billing', 'orders', 0, 60);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT idem_offset_get('billing', 'orders', 0);

-- one row per partition, however many messages
DO $$
BEGIN
	FOR i IN 51..1050 LOOP
		PERFORM idem_offset_advance('billing', 'orders', 0, i);
	END LOOP;
END;
$$;
SELECT count(*), max(committed_offset) FROM idem_offsets
 WHERE consumer_group = 'billing' AND stream = 'orders' AND partition = 0;

-- forget drops a group, and says how many partitions it had
SELECT idem_offset_forget('billing');
SELECT idem_offset_get('billing', 'orders', 0);
SELECT idem_offset_forget('billing');

-- offsets belong to roles, as keys do
CREATE ROLE idem_consumer_a;
CREATE ROLE idem_consumer_b;
CREATE ROLE idem_consumers;
GRANT idem_consumers TO idem_consumer_a;
SET ROLE idem_consumer_a;
SELECT idem_offset_advance('g', 'orders', 0, 10);
SELECT idem_offset_advance('g', 'orders', 0, 20, owner => 'idem_consumers');
RESET ROLE;
SET ROLE idem_consumer_b;
-- b has its own offsets, and cannot reach a's
SELECT idem_offset_get('g', 'orders', 0);
SELECT idem_offset_advance('g', 'orders', 0, 5);
SELECT idem_offset_get('g', 'orders', 0, owner => 'idem_consumer_a');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_forget('g', owner => 'idem_consumer_a');
\echo :LAST_ERROR_SQLSTATE
-- nor read the table
SELECT count(*) FROM idem_offsets;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT consumer_group, partition, owner, committed_offset FROM idem_offsets
 WHERE consumer_group = 'g' ORDER BY owner::text;
SET ROLE idem_consumer_a;
SELECT idem_offset_get('g', 'orders', 0), idem_offset_get('g', 'orders', 0, owner => 'idem_consumers');
RESET ROLE;

-- bad input: an error, and nothing stored
SELECT idem_offset_advance(NULL, 'orders', 0, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_advance('g', NULL, 0, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_advance('g', 'orders', NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_advance('g', 'orders', 0, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_advance('g', 'orders', -1, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_advance('g', 'orders', 0, -1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_advance('g', 'orders', 0, 1, owner => 'idem_nobody');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_get('g', 'orders', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_forget(NULL);
\echo :LAST_ERROR_SQLSTATE
BEGIN READ ONLY;
SELECT idem_offset_advance('g', 'orders', 0, 100);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- the highest offset has no next one
SELECT idem_offset_advance('edge', 'orders', 0, 9223372036854775807);
SELECT idem_offset_get('edge', 'orders', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT idem_offset_forget('edge');

SELECT idem_offset_forget('g'), idem_offset_forget('g', owner => 'idem_consumer_a'),
       idem_offset_forget('g', owner => 'idem_consumers'),
       idem_offset_forget('g', owner => 'idem_consumer_b');
DROP ROLE idem_consumer_a, idem_consumer_b, idem_consumers;
