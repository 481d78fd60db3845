-- The database the samples run against: the extension and the table of the
-- business write.  scripts/samples.sh loads it into a new database for each
-- sample test.
CREATE EXTENSION idempotency;

CREATE TABLE payments (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    amount   integer NOT NULL CHECK (amount > 0),
    currency text    NOT NULL
);
