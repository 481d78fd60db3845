-- Stamp business rows with the key of the request that created them.
ALTER TABLE payments ADD COLUMN request_key text DEFAULT idem_current_key();

BEGIN;
SELECT outcome FROM idem_claim(key => 'pay-stamp-1');
INSERT INTO payments (amount, currency) VALUES (30, 'EUR');     -- request_key = 'pay-stamp-1'
COMMIT;

SELECT id, amount FROM payments WHERE request_key = 'pay-stamp-1';   -- what did that request create?
