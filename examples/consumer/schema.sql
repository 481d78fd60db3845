-- What the consumer writes: one row per applied event, and the balances the
-- events move.  Neither has a unique constraint on the event id on purpose:
-- the extension is what keeps a redelivered event from being applied twice,
-- and the test counts the rows to prove it.
CREATE EXTENSION IF NOT EXISTS idempotency;

CREATE TABLE effects (
    id         bigserial PRIMARY KEY,
    msg_id     text NOT NULL,
    account    integer NOT NULL,
    amount     bigint NOT NULL,
    worker     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id      integer PRIMARY KEY,
    balance bigint NOT NULL DEFAULT 0
);
INSERT INTO accounts (id) SELECT generate_series(0, 9);

-- One row per committed batch, written in the batch's own transaction, so it
-- is exact: what the consumers applied, and the duplicates the extension
-- turned away.
CREATE TABLE consumer_batches (
    worker      text NOT NULL,
    mode        text NOT NULL,
    messages    integer NOT NULL,     -- messages in the batch
    applied     integer NOT NULL,     -- effects applied (claimed, or a new offset)
    duplicates  integer NOT NULL,     -- already applied: replay, or an old offset
    redelivered integer NOT NULL,     -- messages the broker marked as redelivered
    committed_at timestamptz NOT NULL DEFAULT now()
);
