#!/usr/bin/env bash
#
# The main job: install what is missing (Debian 12), build the extension,
# start a throwaway PostgreSQL with it preloaded, and show it at work:
# claim, replay, a conflict while the first attempt is in flight, a mismatch,
# and a leased claim taken over after its worker died.  Everything is removed
# at the end.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# the demo runs on Debian's PostgreSQL 15, or on PG_MAJOR=18 (built from source); with
# IDEM_INSTALLED=1 it uses the extension already installed (a package)
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=$(pg_config_for "$PG_MAJOR")
ensure_test_user
[ -n "${IDEM_INSTALLED:-}" ] || build_install "$PG_CONFIG"

dir=$(mktemp -d /tmp/idempotency-demo.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
# a directory the test user may enter (the checkout may be under /root)
cd "$dir"
port=$((20000 + RANDOM % 20000))
cleanup() {
	as_test_user pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

start_cluster "$dir" "$port" "idempotency.sweep_interval = '1s'"

psql() {
	as_test_user psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

echo "PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}') with idempotency, on a throwaway cluster"
psql -c "CREATE EXTENSION idempotency" \
	-c "CREATE TABLE payments (id bigserial PRIMARY KEY, idem_key text, amount int)"

echo
echo "== 1. The first request claims the key, pays, and stores the response, in one transaction"
psql <<'SQL'
BEGIN;
SELECT outcome, attempt FROM idem_claim(key => 'pay-42', fingerprint => idem_fingerprint('{"amount": 100}'));
INSERT INTO payments (idem_key, amount) VALUES ('pay-42', 100);
SELECT idem_complete(key => 'pay-42', response => '{"status": 201, "payment_id": 1}') IS NOT NULL AS completed;
COMMIT;
SQL

echo "== 2. The client retries: it gets the first response, and nothing is paid twice"
psql <<'SQL'
SELECT outcome, response FROM idem_claim(key => 'pay-42', fingerprint => idem_fingerprint('{"amount": 100}'));
SELECT count(*) AS payments FROM payments WHERE idem_key = 'pay-42';
SQL

echo "== 3. The same key with a different body is refused (HTTP 422)"
psql -c "SELECT outcome FROM idem_claim(key => 'pay-43', fingerprint => idem_fingerprint('{\"amount\": 5}'))" \
	-c "SELECT outcome FROM idem_claim(key => 'pay-43', fingerprint => idem_fingerprint('{\"amount\": 500}'))"

echo "== 4. A retry while the first attempt is still in flight"
psql -c "BEGIN" -c "SELECT outcome AS first_attempt FROM idem_claim('pay-44')" \
	-c "INSERT INTO payments (idem_key, amount) VALUES ('pay-44', 70)" \
	-c "SELECT pg_sleep(2)" -c "COMMIT" >/dev/null &
first=$!
sleep 0.5
echo "   without waiting (HTTP 409):"
psql -c "SELECT outcome FROM idem_claim('pay-44', wait => false)"
echo "   waiting for the first attempt to commit, then replaying it:"
psql -c "SELECT outcome, attempt FROM idem_claim('pay-44')"
wait "$first"

echo "== 5. A leased claim for an external call; its worker dies; the next one takes over"
psql <<'SQL'
SELECT outcome, attempt FROM idem_claim('email-7', lease => '1 second');
SELECT idem_checkpoint('email-7', 'rendered', attempt => 1) IS NOT NULL AS checkpointed;
SELECT outcome AS while_leased FROM idem_claim('email-7', lease => '1 second');
\echo '   ... the worker dies; its lease runs out ...'
\! sleep 1.2
SELECT outcome, attempt, recovery_point FROM idem_claim('email-7', lease => '30 seconds');
\echo '   the old worker wakes up and tries to finish: fenced off'
\set ON_ERROR_STOP off
SELECT idem_complete('email-7', '{"sent": "twice"}', attempt => 1);
\set ON_ERROR_STOP on
SELECT idem_complete('email-7', '{"sent": true}', attempt => 2) IS NOT NULL AS completed_by_attempt_2;
SQL

echo "== 6. The keys"
psql -c "SELECT key, status, attempt, response, recovery_point FROM idem_keys ORDER BY key"
echo "demo finished; the cluster is removed"
