#!/usr/bin/env bash
#
# consumers.sh: the idempotent consumer's costs, side by side in one run.
#
# A consumer applies a broker's messages in batches, one transaction per
# batch.  For batches of 1, 10, 100 and 500 messages it measures messages per
# second of:
#   many    idem_claim_many(): one call per batch
#   single  one idem_claim() call per message, in one transaction per batch:
#           one round trip per message, as a consumer without batches pays
#   hand    a hand-written INSERT ... ON CONFLICT DO NOTHING RETURNING batch
#           into a table with the same indexes (the key, and a timestamp for
#           expiry)
#   handlock the same, with a transaction-scoped advisory lock per key first:
#           what a hand-written batch needs so that a concurrent claim of a
#           key in flight waits and then replays, as the extension's does (the
#           ceiling of a batch that keeps that promise)
#   offset  idem_offset_advance(): one call per batch of an ordered partition
#           (each client its own partition), against "many", the same
#           consumer keeping one key per message
# Every scenario runs once per round, rounds interleaved; each ratio is taken
# within a round and the median over rounds is reported, with its range.
# Writes DIR/consumers.md (and .tsv) and prints the table.
#
# Usage: test/bench/consumers.sh [--pg-config PATH] [--duration SECONDS]
#                                [--rounds N] [--clients N] [--sizes "1 10 100 500"]
#                                [--out DIR] [--no-install] [--smoke]
#
# The extension is built and installed into PG_CONFIG's PostgreSQL first,
# unless --no-install (run.sh has done it).  Run as root (the cluster runs
# as the postgres user) or as a user who can write there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
. scripts/lib.sh

PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || true)}
duration=5
rounds=5
clients=4
sizes="1 10 100 500"
out="$here"
install=1
while [ $# -gt 0 ]; do
	case "$1" in
		--pg-config) PG_CONFIG=$2; shift ;;
		--duration) duration=$2; shift ;;
		--rounds) rounds=$2; shift ;;
		--clients) clients=$2; shift ;;
		--sizes) sizes=$2; shift ;;
		--out) out=$2; shift ;;
		--no-install) install=0 ;;
		--smoke) duration=1; rounds=1; sizes="1 100" ;;
		-h|--help) sed -n '/^# Usage:/,/^# as the postgres/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) echo "consumers.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$PG_CONFIG" ] || { echo "consumers.sh: no pg_config: pass --pg-config" >&2; exit 2; }
export PG_CONFIG
ensure_test_user
mkdir -p "$out"

if [ "$install" = 1 ]; then
	tree=$(writable_tree)
	(cd "$tree" && build_install "$PG_CONFIG")
fi

work=$(mktemp -d /tmp/idempotency-consumers.XXXXXX)
chown "$(test_user)" "$work" 2>/dev/null || true
port=$((20000 + RANDOM % 20000))
cleanup() {
	as_test_user pg_ctl -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
start_cluster "$work" "$port" "max_connections = 50" "shared_buffers = '512MB'" \
	"max_locks_per_transaction = 1024" "idempotency.sweep_interval = '1h'"

sql() { as_test_user psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d postgres "$@"; }
sql -c "CREATE EXTENSION idempotency" -c "
	CREATE TABLE hand_keys (
		scope text COLLATE \"C\" NOT NULL,
		key text COLLATE \"C\" NOT NULL,
		created_at timestamptz NOT NULL,
		expires_at timestamptz NOT NULL,
		PRIMARY KEY (scope, key));
	CREATE INDEX ON hand_keys (expires_at);"

# The pgbench scripts: keys are fresh for every batch (a random prefix)
scripts="$work/scripts"
mkdir -p "$scripts"
for n in $sizes; do
	cat >"$scripts/many_$n.sql" <<EOF
\set b random(1, 1000000000000)
BEGIN;
SELECT key, outcome FROM idem_claim_many(ARRAY(SELECT :b || '-' || i FROM generate_series(1, $n) i));
COMMIT;
EOF
	{
		echo "\\set b random(1, 1000000000000)"
		echo "BEGIN;"
		for i in $(seq 1 "$n"); do echo "SELECT outcome FROM idem_claim(key => :b || '-$i');"; done
		echo "COMMIT;"
	} >"$scripts/single_$n.sql"
	cat >"$scripts/hand_$n.sql" <<EOF
\set b random(1, 1000000000000)
BEGIN;
INSERT INTO hand_keys (scope, key, created_at, expires_at)
SELECT '', :b || '-' || i, now(), now() + interval '1 day' FROM generate_series(1, $n) i
ON CONFLICT DO NOTHING RETURNING key;
COMMIT;
EOF
	# the ceiling: the hand-written batch plus what the extension adds to it
	# to make a concurrent claim of an in-flight key wait and then replay, a
	# lock per key until the commit
	cat >"$scripts/handlock_$n.sql" <<EOF
\set b random(1, 1000000000000)
BEGIN;
SELECT count(pg_advisory_xact_lock(hashtextextended(:b || '-' || i, 0))) FROM generate_series(1, $n) i;
INSERT INTO hand_keys (scope, key, created_at, expires_at)
SELECT '', :b || '-' || i, now(), now() + interval '1 day' FROM generate_series(1, $n) i
ON CONFLICT DO NOTHING RETURNING key;
COMMIT;
EOF
	# each client its own partition; offsets grow with the clock
	cat >"$scripts/offset_$n.sql" <<EOF
BEGIN;
SELECT idem_offset_advance('bench', 'orders', :client_id,
	(extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
COMMIT;
EOF
done
chmod -R a+r "$scripts"

# Messages per second of one scenario: transactions per second times the batch
run() {
	local name=$1 n=$2 tps
	tps=$(as_test_user pgbench -n -M prepared -h "$work" -p "$port" -c "$clients" -j 2 -T "$duration" \
		-f "$scripts/${name}_$n.sql" postgres 2>&1 | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
	[ -n "$tps" ] || { echo "pgbench failed for ${name}_$n" >&2; exit 1; }
	awk -v t="$tps" -v n="$n" 'BEGIN { printf "%.0f\n", t * n }'
}

tsv="$out/consumers.tsv"
: >"$tsv"
echo "consumers: PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), $clients clients," \
	"$duration s per run, $rounds rounds, batches of $sizes"
for r in $(seq 1 "$rounds"); do
	for n in $sizes; do
		for name in many single hand handlock offset; do
			# a run of 500 single calls per transaction at 1 s is a handful of
			# transactions: it still measures messages per second
			rate=$(run "$name" "$n")
			printf '%s\t%s\t%s\t%s\n' "$r" "$n" "$name" "$rate" >>"$tsv"
		done
		sql -c "TRUNCATE idem_keys, hand_keys, idem_offsets" -c "CHECKPOINT"
	done
	echo "  round $r done"
done

python3 - "$tsv" "$out/consumers.md" "$("$PG_CONFIG" --version)" "$clients" "$duration" "$rounds" <<'EOF'
import sys, statistics, collections
tsv, md, version, clients, duration, rounds = sys.argv[1:]
rate = collections.defaultdict(dict)          # (n, name) -> {round: msgs/s}
for line in open(tsv):
    r, n, name, v = line.split('\t')
    rate[(int(n), name)][int(r)] = float(v)
sizes = sorted({n for n, _ in rate})

def ratio(n, a, b):
    vals = [rate[(n, a)][r] / rate[(n, b)][r] for r in rate[(n, a)] if rate[(n, b)].get(r)]
    return statistics.median(vals), min(vals), max(vals)

def fmt(t):
    m, lo, hi = t
    return "%.2fx [%.2f-%.2f]" % (m, lo, hi)

lines = ["# Idempotent consumers: messages per second", "",
         "%s, %s clients, %s s per run, %s rounds interleaved; each ratio is the median of the rounds' "
         "ratios [range]. Produced by `test/bench/consumers.sh`." % (version, clients, duration, rounds), "",
         "| batch | many (msgs/s) | single | hand-written | hand-written + locks | offset "
         "| many ÷ single (target ≥ 10 at 500) | many ÷ hand-written (target ≥ 1.0) "
         "| many ÷ hand-written + locks | offset ÷ many |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for n in sizes:
    med = {name: statistics.median(rate[(n, name)].values())
           for name in ("many", "single", "hand", "handlock", "offset")}
    lines.append("| %d | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %s |" % (
        n, med["many"], med["single"], med["hand"], med["handlock"], med["offset"],
        fmt(ratio(n, "many", "single")), fmt(ratio(n, "many", "hand")),
        fmt(ratio(n, "many", "handlock")), fmt(ratio(n, "offset", "many"))))
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
