#!/usr/bin/env bash
#
# Runs the SQL samples with psql against a real server and checks what they
# did.  The connection comes from the libpq environment (PGHOST, PGPORT,
# PGUSER, PGDATABASE), in a database where ../schema.sql was loaded.
# Run: bash test.sh
#
set -euo pipefail
cd "$(dirname "$0")"

q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "not ok: $*" >&2; exit 1; }

# payment.sql: claimed, one payment, then the retry replays the response
out=$(q -F ' ' -f payment.sql)
echo "$out"
[ "$(sed -n 1p <<<"$out" | cut -d' ' -f1)" = claimed ] || fail "payment.sql: first claim not claimed"
grep -q '^replay {"id": 981, "status": 201} 1 ' <<<"$out" || fail "payment.sql: the retry did not replay the response"
[ "$(q -c 'SELECT count(*) FROM payments')" = 1 ] || fail "payment.sql: not one payment"

# leased.sql: in progress under its lease, then completed by attempt 1
out=$(q -F ' ' -f leased.sql)
echo "$out"
grep -q '^claimed  1 ' <<<"$out" || fail "leased.sql: not claimed with attempt 1"
[ "$(q -c "SELECT status || ' ' || response::text FROM idem_lookup('charge-981')")" = 'completed {"charge": "ch_1"}' ] ||
	fail "leased.sql: not completed with the response"

# sweep.sql: the procedure deletes every expired key, in batches
q -f sweep.sql
q -c "SELECT count(*) FROM generate_series(1, 2500) AS g, idem_claim('exp-' || g, ttl => '1 millisecond')" >/dev/null
sleep 0.1
q -c "CALL sweep_idempotency_keys(1000)"
[ "$(q -c "SELECT count(*) FROM idem_keys WHERE key LIKE 'exp-%'")" = 0 ] || fail "sweep.sql: expired keys left"
[ "$(q -c "SELECT count(*) FROM idem_keys WHERE key = 'pay-7f3a'")" = 1 ] || fail "sweep.sql: a live key was swept"
# consumer.sql: a redelivered message in the batch applies once; a second
# run of the whole batch applies nothing; offsets answer new, then duplicate
out=$(q -F ' ' -f consumer.sql)
echo "$out"
[ "$(q -c "SELECT count(*) FROM payments WHERE amount IN (10, 20)")" = 2 ] ||
	fail "consumer.sql: not one payment per message"
q -f consumer.sql >/dev/null
[ "$(q -c "SELECT count(*) FROM payments WHERE amount IN (10, 20)")" = 2 ] ||
	fail "consumer.sql: a redelivered batch applied again"
[ "$(tr '\n' ' ' <<<"$out")" = "t f 42 " ] || fail "consumer.sql: offsets answered: $out"

# stamping.sql: the payment carries the key of the request that created it
out=$(q -f stamping.sql)
echo "$out"
[ "$(q -c "SELECT count(*) FROM payments WHERE request_key = 'pay-stamp-1' AND amount = 30")" = 1 ] ||
	fail "stamping.sql: the payment is not stamped with its key"
[ "$(q -c "SELECT count(*) FROM payments WHERE request_key IS NOT NULL")" = 1 ] ||
	fail "stamping.sql: rows written outside a claim were stamped"
echo "ok"
