-- Expiry without the background worker: a procedure that deletes expired keys
-- in batches, committing after each, for pg_cron or a system cron entry.

-- in the application database
CREATE PROCEDURE sweep_idempotency_keys(batch int DEFAULT 1000)
LANGUAGE plpgsql AS $$
BEGIN
  LOOP
    EXIT WHEN idem_sweep(batch) < batch;
    COMMIT;
  END LOOP;
END $$;
