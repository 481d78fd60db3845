#!/usr/bin/env bash
#
# Fault-injection test of the idempotent consumer (examples/consumer/consumer.js)
# against a real broker, NATS JetStream, and a real PostgreSQL.
#
#   PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config examples/consumer/test.sh
#   CONSUMER_N=100000 PG_CONFIG=... examples/consumer/test.sh      # the long run
#
# For each mode (keys: idem_claim_many on a shared durable consumer; offsets:
# idem_offset_advance, one ordered reader per partition), it publishes N
# events (CONSUMER_N, default 20000) to a stream on disk, runs several
# consumers (CONSUMER_WORKERS, default 4), and while they work: kill -9s a
# consumer in the middle of a batch again and again, lets consumers die on
# their own between COMMIT and the ack, kills the broker and restarts it, stops
# PostgreSQL in immediate mode (a crash) and starts it again, and restarts the
# broker once more, gracefully.  At the end every event must have been applied
# exactly once (checked in SQL: count, duplicates, missing ids, balances), and
# some events must have been delivered more than once, or the faults proved
# nothing.
#
# The extension must already be installed into the PostgreSQL of PG_CONFIG.
# Installs what it needs if it is missing (Debian: nats-server, nodejs, npm;
# nats and pg from npm, as locked in package-lock.json), starts the broker on
# a loopback port and a throwaway cluster on a unix socket, both as an
# unprivileged user (postgres when run as root), and stops them at the end,
# even on failure.  The last line is "consumer: N passed, M failed"; the exit
# status is non-zero if anything failed.  CONSUMER_MODES="keys" runs one mode;
# CONSUMER_KEEP=1 keeps the logs.
#
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

: "${PG_CONFIG:?set PG_CONFIG to the pg_config of the PostgreSQL to test with}"
export PG_CONFIG
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/idempotency.control" ]; then
	echo "the extension is not installed into $("$PG_CONFIG" --bindir)/..: run make install first" >&2
	exit 2
fi

N=${CONSUMER_N:-20000}
WORKERS=${CONSUMER_WORKERS:-4}
BATCH=${CONSUMER_BATCH:-200}
MODES=${CONSUMER_MODES:-keys offsets}
TIMEOUT=${CONSUMER_TIMEOUT:-300}        # seconds a mode may take to apply every event
CRASH_AFTER_COMMIT=${CONSUMER_CRASH_AFTER_COMMIT:-0.01}

passed=0
failed=0
summary_printed=0
report() {
	local ok=$1 name=$2
	if [ "$ok" = 1 ]; then
		echo "ok $name"
		passed=$((passed + 1))
	else
		echo "FAILED $name"
		failed=$((failed + 1))
	fi
}

# What it needs.  Another apt-get may hold dpkg's lock for a while: wait for it.
ensure_test_user
need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
	for try in $(seq 1 30); do
		ensure_packages "${need[@]}" && break
		[ "$try" -eq 30 ] && { echo "could not install ${need[*]}" >&2; exit 2; }
		sleep 10
	done
fi
NATS_SERVER=$(command -v nats-server)

dir=$(mktemp -d /tmp/idempotency-consumer.XXXXXX)
pgport=$((20000 + RANDOM % 20000))
natsport=$((20000 + RANDOM % 20000))
while [ "$natsport" -eq "$pgport" ]; do natsport=$((20000 + RANDOM % 20000)); done
declare -A worker_pid=()
nats_pid=""

summary() {
	echo "consumer: $passed passed, $failed failed"
	summary_printed=1
}

# Stop what this test started, by the ids it recorded
cleanup() {
	local rc=$? name
	set +e
	if [ "$summary_printed" = 0 ]; then
		# stopped by an unexpected error: say so, with what the server logged
		report 0 "the test ran to its end (it stopped with status $rc)"
		[ -f "$dir/server.log" ] && tail -n 30 "$dir/server.log" | sed 's/^/    server.log: /'
		summary
		[ "$rc" -eq 0 ] && rc=1
	fi
	for name in "${!worker_pid[@]}"; do kill_ours 9 "${worker_pid[$name]}"; done
	kill_ours 9 "$nats_pid"
	if [ -f "$dir/data/postmaster.pid" ]; then
		(cd "$dir" && as_test_user pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null 2>&1)
	fi
	if [ "${CONSUMER_KEEP:-0}" = 1 ]; then echo "logs kept in $dir" >&2; else rm -rf "$dir"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A copy that the test user may read and write (the checkout may be under /root)
cp -a examples/consumer "$dir/consumer"
rm -rf "$dir/consumer/node_modules"
if ! (cd "$dir/consumer" && npm ci --no-audit --no-fund --loglevel=error) >"$dir/npm.log" 2>&1; then
	cat "$dir/npm.log" >&2
	report 0 "npm ci in examples/consumer"
	summary
	exit 1
fi
[ "$(id -u)" -eq 0 ] && chown -R postgres "$dir"
cd "$dir"

start_cluster "$dir" "$pgport" "max_connections = 40" "deadlock_timeout = 100ms"

# psql as the cluster's superuser, over the unix socket (trust): no need to
# switch users, which costs more than the query under load
sql() {
	local db=$1
	shift
	"$("$PG_CONFIG" --bindir)/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$dir" -p "$pgport" -U postgres -d "$db" "$@"
}

# Start a process in the background as the test user; its pid (not the one of
# runuser) is written to $dir/NAME.pid and echoed
spawn() {
	local name=$1 log=$2
	shift 2
	rm -f "$dir/$name.pid"
	as_test_user bash -c 'echo $$ >"$0"; exec "$@"' "$dir/$name.pid" "$@" >>"$log" 2>&1 &
	local i
	for i in $(seq 1 100); do
		[ -s "$dir/$name.pid" ] && { cat "$dir/$name.pid"; return 0; }
		sleep 0.05
	done
	echo "could not start $name" >&2
	return 1
}

start_nats() {
	nats_pid=$(spawn nats "$dir/nats.log" "$NATS_SERVER" -js -a 127.0.0.1 -p "$natsport" -sd "$dir/nats-store")
	local i
	for i in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$natsport") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nats-server did not start" >&2
	return 1
}

stop_nats() {
	local signal=$1 i
	kill_ours "$signal" "$nats_pid" || true
	for i in $(seq 1 100); do
		ours "$nats_pid" || break
		sleep 0.1
	done
	nats_pid=""
}

# One consumer process of MODE, named NAME (offsets mode: reading PARTITION)
start_worker() {
	local mode=$1 name=$2 partition=${3:-0}
	worker_pid[$name]=$(spawn "$name" "$dir/$mode-workers.log" env \
		PGHOST="$dir" PGPORT="$pgport" PGUSER=postgres PGDATABASE="$mode" PGAPPNAME="$name" \
		NATS_URL="nats://127.0.0.1:$natsport" MODE="$mode" PARTITION="$partition" BATCH="$BATCH" \
		WORKER="$name" DELIVERY_LOG="$dir/$mode-deliveries.tsv" CRASH_AFTER_COMMIT="$CRASH_AFTER_COMMIT" \
		node "$dir/consumer/consumer.js")
}

# Is PID still one of this test's processes?  A pid whose process died may be
# handed to another process, a server backend say, which a kill -9 would crash
ours() {
	local pid=$1
	[ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qE "consumer\.js|nats-server .*-p $natsport"
}
alive() { ours "$1"; }
kill_ours() {
	local signal=$1 pid=$2
	ours "$pid" && kill "-$signal" "$pid" 2>/dev/null
}

run_mode() {
	local mode=$1 name i
	if [ "$mode" = keys ]; then
		echo "== keys: $N events, $WORKERS consumers sharing a durable consumer, batches of $BATCH"
	else
		echo "== offsets: $N events in $WORKERS partitions, a consumer for each and a second one for partition 0, batches of $BATCH"
	fi
	as_test_user createdb -h "$dir" -p "$pgport" -U postgres "$mode"
	sql "$mode" -f "$dir/consumer/schema.sql" >/dev/null

	# the events are published once, for both modes: the stream keeps them
	# through the broker's restarts, and acks in keys mode do not remove them
	if [ -d "$dir/nats-store" ]; then
		start_nats
	else
		start_nats
		(cd "$dir/consumer" && as_test_user env NATS_URL="nats://127.0.0.1:$natsport" \
			node publish.js "$N" "$WORKERS") | sed 's/^/   /'
	fi

	# keys mode: WORKERS consumers share one durable consumer; offsets mode:
	# WORKERS partitions, one consumer each
	local -a names=()
	declare -A partition_of=()
	for i in $(seq 1 "$WORKERS"); do
		name="$mode-w$i"
		names+=("$name")
		partition_of[$name]=$((i - 1))
		start_worker "$mode" "$name" "$((i - 1))"
	done
	if [ "$mode" = offsets ]; then
		# one more reader of partition 0, as if a rebalance gave the partition
		# to a new owner while the old one still runs: both read every event
		# of it, and the stored offset must turn the second reading away
		name="$mode-w$((WORKERS + 1))"
		names+=("$name")
		partition_of[$name]=0
		start_worker "$mode" "$name" 0
	fi

	local started now line busy count=0 kills=0 self_kills=0 broker_restarts=0 pg_restarts=0 last_kill=0
	started=$(date +%s.%N)
	while :; do
		sleep 0.3
		now=$(date +%s.%N)
		# restart the consumers that died (killed here, or dead by their own fault injection)
		for name in "${names[@]}"; do
			if ! alive "${worker_pid[$name]}"; then
				wait "${worker_pid[$name]}" 2>/dev/null || true
				[ "${killed[$name]:-0}" = 1 ] || self_kills=$((self_kills + 1))
				killed[$name]=0
				start_worker "$mode" "$name" "${partition_of[$name]}"
			fi
		done
		# how far they got, and a consumer that is inside a transaction right now
		line=$(sql "$mode" -F ' ' -c "SELECT (SELECT count(*) FROM effects),
			(SELECT application_name FROM pg_stat_activity
			  WHERE application_name LIKE '$mode-w%' AND xact_start IS NOT NULL
			  ORDER BY random() LIMIT 1)" 2>/dev/null) || line=""
		if [ -n "$line" ]; then
			read -r count busy <<<"$line"
		else
			busy=""
		fi
		[ "$count" -ge "$N" ] && break
		if awk -v n="$now" -v s="$started" -v t="$TIMEOUT" 'BEGIN { exit !(n - s > t) }'; then
			echo "   timed out after $TIMEOUT s with $count of $N effects"
			break
		fi
		# the broker dies at 20%, PostgreSQL crashes at 45%, the broker restarts cleanly at 70%
		if [ "$broker_restarts" -eq 0 ] && [ "$count" -ge $((N * 20 / 100)) ]; then
			echo "   at $count: kill -9 the broker, start it again"
			stop_nats KILL
			sleep 0.5
			start_nats
			broker_restarts=1
		elif [ "$pg_restarts" -eq 0 ] && [ "$count" -ge $((N * 45 / 100)) ]; then
			echo "   at $count: crash PostgreSQL (immediate stop), start it again"
			as_test_user pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null
			sleep 0.5
			as_test_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
			pg_restarts=1
		elif [ "$broker_restarts" -eq 1 ] && [ "$count" -ge $((N * 70 / 100)) ]; then
			echo "   at $count: stop the broker, start it again"
			stop_nats TERM
			start_nats
			broker_restarts=2
		fi
		# and, every quarter second or so until 90%, kill -9 the consumer that
		# was inside a transaction: mid-batch
		if [ "$count" -lt $((N * 90 / 100)) ] && [ -n "$busy" ] &&
			awk -v n="$now" -v l="$last_kill" 'BEGIN { exit !(n - l > 0.25) }'; then
			if kill_ours 9 "${worker_pid[$busy]}"; then
				kills=$((kills + 1))
				killed[$busy]=1
				last_kill=$now
			fi
		fi
	done
	local finished secs
	finished=$(date +%s.%N)
	secs=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", b - a }')
	# let whatever is still unacked come back (ack_wait is 3 s): it must change nothing
	sleep 4
	for name in "${names[@]}"; do kill_ours 9 "${worker_pid[$name]}" || true; done
	for name in "${names[@]}"; do wait "${worker_pid[$name]}" 2>/dev/null || true; unset "worker_pid[$name]"; done
	stop_nats TERM

	# The checks, in SQL
	sql "$mode" -c "CREATE TABLE deliveries (msg_id text, seq bigint, worker text)"
	sql "$mode" -c "\\copy deliveries FROM '$dir/$mode-deliveries.tsv'"
	local total distinct missing balances deliveries redeliveries duplicates flagged
	total=$(sql "$mode" -c "SELECT count(*) FROM effects")
	distinct=$(sql "$mode" -c "SELECT count(DISTINCT msg_id) FROM effects")
	missing=$(sql "$mode" -c "SELECT count(*) FROM generate_series(1, $N) g
		WHERE NOT EXISTS (SELECT FROM effects WHERE msg_id = 'ev-' || g)")
	balances=$(sql "$mode" -c "SELECT count(*) FROM accounts a FULL JOIN
		(SELECT g % 10 AS id, sum(g % 100 + 1) AS balance FROM generate_series(1, $N) g GROUP BY 1) e
		USING (id) WHERE a.balance IS DISTINCT FROM e.balance")
	deliveries=$(sql "$mode" -c "SELECT count(*) FROM deliveries")
	redeliveries=$(sql "$mode" -c "SELECT count(*) - count(DISTINCT msg_id) FROM deliveries")
	duplicates=$(sql "$mode" -c "SELECT coalesce(sum(duplicates), 0) FROM consumer_batches")
	flagged=$(sql "$mode" -c "SELECT coalesce(sum(redelivered), 0) FROM consumer_batches")

	echo "   $N events applied in $secs s ($(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') events/s, faults included)"
	echo "   faults: $kills consumers killed mid-batch, $self_kills died between COMMIT and ack," \
		"$broker_restarts broker restarts, $pg_restarts PostgreSQL crash"
	echo "   deliveries: $deliveries for $N events, $redeliveries redeliveries" \
		"($flagged flagged by the broker in committed batches); $duplicates duplicates turned away by the extension"

	report "$([ "$total" -eq "$N" ] && echo 1 || echo 0)" "$mode: $total effects for $N events"
	report "$([ "$total" -eq "$distinct" ] && echo 1 || echo 0)" "$mode: no event applied twice ($((total - distinct)) duplicates)"
	report "$([ "$missing" -eq 0 ] && echo 1 || echo 0)" "$mode: no event lost ($missing missing)"
	report "$([ "$balances" -eq 0 ] && echo 1 || echo 0)" "$mode: balances add up ($balances accounts off)"
	report "$([ "$redeliveries" -gt 0 ] && echo 1 || echo 0)" "$mode: redeliveries happened ($redeliveries)"
	report "$([ "$kills" -gt 0 ] && [ "$broker_restarts" -eq 2 ] && [ "$pg_restarts" -eq 1 ] && echo 1 || echo 0)" \
		"$mode: every fault was injected"
	if [ "$mode" = keys ]; then
		local keys
		keys=$(sql "$mode" -c "SELECT count(*) FROM idem_keys WHERE scope = 'events' AND status = 'completed'")
		report "$([ "$keys" -eq "$N" ] && echo 1 || echo 0)" "keys: $keys completed keys for $N events"
	else
		local offsets
		offsets=$(sql "$mode" -c "SELECT count(*) FROM generate_series(0, $WORKERS - 1) p
			WHERE idem_offset_get('workers', 'EVENTS', p) IS DISTINCT FROM
			      (SELECT max(seq) + 1 FROM deliveries WHERE msg_id IN
			          (SELECT 'ev-' || g FROM generate_series(1, $N) g WHERE g % $WORKERS = p))")
		report "$([ "$offsets" -eq 0 ] && echo 1 || echo 0)" "offsets: every partition's stored offset is its last event ($offsets off)"
	fi
}

declare -A killed=()
for mode in $MODES; do
	case "$mode" in
	keys | offsets) run_mode "$mode" ;;
	*) echo "unknown mode: $mode (keys, offsets)" >&2; failed=$((failed + 1)) ;;
	esac
done

# No server process may have crashed: the only restart is the immediate stop above
crashes=$(grep -cE 'terminated by signal|was terminated by exception|PANIC|TRAP:' "$dir/server.log" || true)
report "$([ "$crashes" -eq 0 ] && echo 1 || echo 0)" "no PostgreSQL server process crashed ($crashes lines in the server log)"
[ "$crashes" -eq 0 ] || grep -E -B2 -A8 'terminated by signal|was terminated by exception|PANIC|TRAP:' "$dir/server.log" |
	head -n 60 | sed 's/^/    server.log: /'

cd /
summary
[ "$failed" -eq 0 ]
