-- An idempotent consumer: one transaction per batch of messages from a broker.
-- Keys: the message ids of a batch, each once (a key given twice answers
-- claimed twice, as two claims in one transaction do); the effect only for
-- those claimed.
BEGIN;
CREATE TEMP TABLE batch (id text, amount integer) ON COMMIT DROP;
INSERT INTO batch VALUES ('msg-1', 10), ('msg-2', 20), ('msg-1', 10);   -- a redelivery inside the batch
INSERT INTO payments (amount, currency)
SELECT b.amount, 'EUR'
  FROM (SELECT DISTINCT ON (id) id, amount FROM batch) b
  JOIN idem_claim_many((SELECT array_agg(DISTINCT id) FROM batch), scope => 'payments-consumer') c
    ON c.key = b.id AND c.outcome = 'claimed';
COMMIT;                                                         -- then ack the batch to the broker

-- Ordered partitions (Kafka, streams): one row per partition, not per message.
BEGIN;
SELECT idem_offset_advance('billing', 'orders', 0, 41);         -- true: new, apply its effects
COMMIT;
SELECT idem_offset_advance('billing', 'orders', 0, 41);         -- false: already applied
SELECT idem_offset_get('billing', 'orders', 0);                 -- 42: where to resume reading
