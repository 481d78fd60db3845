-- A payment and its retry, in plain SQL.  The tables are in ../schema.sql.
BEGIN;
SELECT * FROM idem_claim(key => 'pay-7f3a');          -- claimed: run the handler
INSERT INTO payments (amount, currency) VALUES (100, 'EUR');   -- your business write
SELECT idem_complete(key => 'pay-7f3a', response => '{"status": 201, "id": 981}');
COMMIT;

SELECT * FROM idem_claim(key => 'pay-7f3a');          -- the retry: replay, with the stored response
