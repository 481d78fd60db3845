#!/usr/bin/env bash
#
# run.sh: benchmark the idempotency extension against what users would write
# instead, side by side in one run.
#
# It builds and installs the extension into the PostgreSQL that PG_CONFIG
# names (default: pg_config on PATH), starts a throwaway cluster and a
# throwaway redis-server on loopback, loads the baselines, runs the scenarios
# with pgbench -M prepared (and a small libpq + hiredis client for Redis),
# prints a table of throughput and latency with ratios, writes results.md and
# results.png, and stops everything it started.
#
# Usage: test/bench/run.sh [--smoke] [--duration SECONDS] [--rounds N]
#                          [--clients N] [--hot-clients N] [--sync "on off"]
#                          [--sweep-keys N] [--storage-keys N] [--out DIR]
#                          [--pg-config PATH]... [--majors "15 18"]
#                          [--big-keys "10000 100000 1000000"] [--big-rounds N]
#                          [--savepoint-keys N] [--no-big | --big-only]
#                          [--compare REV --compare-pg-config PATH]
#                          [--callgrind | --no-callgrind] [--no-consumers]
#
# The idempotent consumer's benchmark (test/bench/consumers.sh: batches of
# keys, single claims, a hand-written batch, offsets) runs after the other
# scenarios, in a cluster of its own, and writes consumers.md beside
# results.md; --no-consumers leaves it out.
#
# --pg-config (repeated) or --majors benchmarks each PostgreSQL in turn, in
# one invocation: each major runs every scenario with its own interleaved
# rounds, and results.md shows the majors side by side.  --majors resolves
# through scripts/lib.sh (18 as its release build, never the assertion one).
#
# Big transactions (--big-keys, --big-rounds, --savepoint-keys; --no-big
# leaves them out): the COMMIT of N keys claimed in one transaction, its time
# per key and the backend's peak memory growth, and savepoint rollbacks after
# many claims against the same rollbacks without them, and a plain INSERT of
# the same rows for reference.  --big-only runs nothing else.
#
# --compare REV builds the extension of git revision REV as well and installs
# it into a second PostgreSQL installation of the same major (PATH is its
# pg_config; the two builds cannot share one, as they have the same name).
# Two clusters with identical settings then run the new-key and replay
# scenarios, rounds alternating between them, and the storage per key of
# each.  With --pg-config or --majors the comparison runs on the first one,
# right after it; alone it is all the run does.
#
# Run as root (the cluster then runs as the postgres user, and missing Debian
# packages are installed) or as a normal user who can write to PG_CONFIG's
# installation directories.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

# ---------------------------------------------------------------- options
duration=3				# seconds per pgbench run
rounds=8				# every scenario is run this many times, interleaved
clients=8
hot_clients=16
hot_keys=10
sync_modes="on off"
replay_keys=100000
sweep_keys=1000000
sweep_batch=1000		# the default of idempotency.sweep_batch_size
sweep_pause_ms=3		# pause between batches in the throttled sweep
storage_keys=100000
callgrind=""			# count server instructions per transaction (full runs)
smoke=0
out=""
pg_configs=()			# several PostgreSQL installations, one after the other
majors=""
big_keys="10000 100000 1000000"	# keys claimed in one transaction, then committed
big_rounds=3
savepoint_keys=20000		# claims before the savepoint rollbacks, and rollbacks
big=1
compare_rev=""
compare_pg_config=""
consumers=1			# the idempotent consumer's benchmark (consumers.sh)
child_args=()			# the options that each major's run gets

usage()
{
	sed -n '/^# Usage:/,/^# right after it; alone/p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case "$1" in
		--pg-config|--majors|--compare|--compare-pg-config|--out) ;;
		--smoke|--callgrind|--no-callgrind|--no-big|--big-only|--no-consumers|-h|--help) child_args+=("$1") ;;
		*) child_args+=("$1" "${2:-}") ;;
	esac
	case "$1" in
		--smoke) smoke=1 ;;
		--duration) duration=$2; shift ;;
		--rounds) rounds=$2; shift ;;
		--clients) clients=$2; shift ;;
		--hot-clients) hot_clients=$2; shift ;;
		--sync) sync_modes=$2; shift ;;
		--sweep-keys) sweep_keys=$2; shift ;;
		--storage-keys) storage_keys=$2; shift ;;
		--out) out=$2; shift ;;
		--pg-config) pg_configs+=("$2"); shift ;;
		--majors) majors=$2; shift ;;
		--big-keys) big_keys=$2; shift ;;
		--big-rounds) big_rounds=$2; shift ;;
		--savepoint-keys) savepoint_keys=$2; shift ;;
		--no-big) big=0 ;;
		--no-consumers) consumers=0 ;;
		--big-only) big=only ;;
		--compare) compare_rev=$2; shift ;;
		--compare-pg-config) compare_pg_config=$2; shift ;;
		--callgrind) callgrind=1 ;;
		--no-callgrind) callgrind=0 ;;
		-h|--help) usage 0 ;;
		*) echo "run.sh: unknown option $1" >&2; usage 2 ;;
	esac
	shift
done
if [ -n "$compare_rev" ] && [ -z "$compare_pg_config" ]; then
	echo "run.sh: --compare needs --compare-pg-config (a second installation of the same major)" >&2
	exit 2
fi

if [ "$smoke" = 1 ]; then
	duration=1
	rounds=1
	sync_modes="on"
	replay_keys=10000
	sweep_keys=20000
	storage_keys=2000
	big_keys="1000 10000"
	big_rounds=1
	savepoint_keys=2000
	callgrind=${callgrind:-0}
fi
callgrind=${callgrind:-1}

# ---------------------------------------------------------------- majors
# Several installations: run this script once for each (and once more for a
# comparison), each into its own directory, then report them side by side
if [ ${#pg_configs[@]} -gt 0 ] || [ -n "$majors" ]; then
	for m in $majors; do
		# shellcheck source=../../scripts/lib.sh
		pg_configs+=("$(. "$top/scripts/lib.sh" && PG18_FLAVOUR=release pg_config_for "$m")") ||
			{ echo "run.sh: no PostgreSQL $m" >&2; exit 1; }
	done
	if [ -z "$out" ]; then
		if [ "$smoke" = 1 ]; then out="$here/out/smoke"; else out="$here/out/full"; fi
	fi
	rm -rf "$out"
	mkdir -p "$out"
	# the comparison runs right after the first major, on the same one; a
	# failed part is reported and leaves the others their results
	failed=0
	for pgc in "${pg_configs[@]}"; do
		major=$("$pgc" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
		printf '%s major %s (%s)\n' "$(date +%H:%M:%S)" "$major" "$pgc" >&2
		PG_CONFIG=$pgc "$0" "${child_args[@]}" --out "$out/pg$major" ||
			{ echo "run.sh: the run on PostgreSQL $major failed" >&2; mv "$out/pg$major" "$out/failed-pg$major"; failed=1; }
		if [ -n "$compare_rev" ] && [ "$pgc" = "${pg_configs[0]}" ]; then
			printf '%s comparison with %s\n' "$(date +%H:%M:%S)" "$compare_rev" >&2
			PG_CONFIG=$pgc "$0" "${child_args[@]}" --compare "$compare_rev" \
				--compare-pg-config "$compare_pg_config" --out "$out/compare" ||
				{ echo "run.sh: the comparison failed" >&2; mv "$out/compare" "$out/failed-compare"; failed=1; }
		fi
	done
	python3 "$here/report.py" combine "$out" "$clients" "$hot_clients" "$hot_keys" >/dev/null
	if [ "$smoke" = 0 ] && [ "$out" = "$here/out/full" ]; then
		cp "$out/results.md" "$here/results.md"
		cp "$out/results.png" "$here/results.png"
		printf '%s wrote %s and %s\n' "$(date +%H:%M:%S)" "$here/results.md" "$here/results.png" >&2
	else
		printf '%s results in %s (not copied over the committed results)\n' "$(date +%H:%M:%S)" "$out" >&2
	fi
	exit "$failed"
fi

PG_CONFIG=${PG_CONFIG:-pg_config}

log()
{
	printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

fail()
{
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v make >/dev/null && command -v gcc >/dev/null || need_pkgs+=(build-essential)
[ -f /usr/include/hiredis/hiredis.h ] || need_pkgs+=(libhiredis-dev)
[ -f /usr/include/postgresql/libpq-fe.h ] || need_pkgs+=(libpq-dev)
[ "$callgrind" = 0 ] || command -v valgrind >/dev/null || need_pkgs+=(valgrind)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		log "installing ${need_pkgs[*]}"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
	else
		fail "missing packages; run: sudo apt-get install ${need_pkgs[*]}"
	fi
fi

command -v "$PG_CONFIG" >/dev/null || fail "pg_config not found (set PG_CONFIG)"
bindir=$("$PG_CONFIG" --bindir)
for prog in initdb pg_ctl postgres psql pgbench; do
	[ -x "$bindir/$prog" ] || fail "$bindir/$prog is missing"
done
export PATH="$bindir:$PATH"

# ---------------------------------------------------------------- workspace
work=$(mktemp -d "${TMPDIR:-/tmp}/idem-bench.XXXXXX")
chmod 755 "$work"
pg_pid=""
base_pid=""
redis_pid=""

if [ "$(id -u)" = 0 ]; then
	runas=(runuser -u postgres --)
else
	runas=()
fi

cleanup()
{
	set +e
	if [ -n "$pg_pid" ]; then
		"${runas[@]}" pg_ctl -D "$work/data" -m fast -w stop >/dev/null 2>&1
	fi
	if [ -n "$base_pid" ]; then
		"${runas[@]}" pg_ctl -D "$work/data-base" -m fast -w stop >/dev/null 2>&1
	fi
	if [ -n "$redis_pid" ]; then
		kill "$redis_pid" 2>/dev/null
		wait "$redis_pid" 2>/dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on loopback that nothing listens on
free_port()
{
	local port
	while :; do
		port=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
}

# ---------------------------------------------------------------- build
log "building the extension with $PG_CONFIG"
mkdir "$work/build"
cp -r "$top/Makefile" "$top/idempotency.control" "$top/src" "$top/sql" "$work/build/"
make -C "$work/build" -s PG_CONFIG="$PG_CONFIG" >"$work/build.log" 2>&1 ||
	{ cat "$work/build.log" >&2; fail "build failed"; }
make -C "$work/build" -s PG_CONFIG="$PG_CONFIG" install >>"$work/build.log" 2>&1 ||
	{ cat "$work/build.log" >&2; fail "install failed (run as root, or use a PG_CONFIG you can write to)"; }

if [ -n "$compare_rev" ]; then
	command -v "$compare_pg_config" >/dev/null || fail "$compare_pg_config not found"
	[ "$("$compare_pg_config" --pkglibdir)" != "$("$PG_CONFIG" --pkglibdir)" ] ||
		fail "--compare-pg-config must be another installation than PG_CONFIG"
	base_version=$(git -C "$top" show "$compare_rev:idempotency.control" |
		sed -n "s/^default_version = '\(.*\)'/\1/p")
	base_commit=$(git -C "$top" rev-parse --short "$compare_rev")
	log "building the extension of $compare_rev ($base_version) with $compare_pg_config"
	mkdir "$work/build-base"
	git -C "$top" archive "$compare_rev" Makefile idempotency.control src sql | tar -x -C "$work/build-base"
	make -C "$work/build-base" -s PG_CONFIG="$compare_pg_config" >"$work/build-base.log" 2>&1 ||
		{ cat "$work/build-base.log" >&2; fail "build of $compare_rev failed"; }
	make -C "$work/build-base" -s PG_CONFIG="$compare_pg_config" install >>"$work/build-base.log" 2>&1 ||
		{ cat "$work/build-base.log" >&2; fail "install of $compare_rev failed"; }
fi

gcc -O2 -Wall -o "$work/redis_client" "$here/redis_client.c" \
	-I"$("$PG_CONFIG" --includedir)" -I/usr/include/postgresql -lpq -lhiredis -lpthread ||
	fail "could not build redis_client"

# ---------------------------------------------------------------- servers
pgport=$(free_port)
redis_port=$(free_port)
[ "$redis_port" = "$pgport" ] && redis_port=$((pgport + 1))

# Create and start a cluster: start_cluster DATADIR PORT BINDIR
start_cluster()
{
	local data=$1 port=$2 bin=$3
	mkdir "$data"
	[ "$(id -u)" = 0 ] && chown postgres: "$data"
	"${runas[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust --no-locale -E UTF8 >"$data.initdb.log" 2>&1 ||
		{ cat "$data.initdb.log" >&2; fail "initdb failed"; }
	cat >>"$data/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work/sock'
shared_preload_libraries = 'idempotency'
# the worker sweeps only when the expiry scenario starts it
idempotency.sweep_interval = '1h'
max_connections = 60
shared_buffers = '512MB'
max_wal_size = '8GB'
checkpoint_timeout = '30min'
# each run starts from the state the script prepared: no vacuum in between
autovacuum = off
EOF
	"${runas[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null ||
		{ cat "$data/server.log" >&2; fail "the cluster did not start"; }
}

mkdir "$work/sock"
[ "$(id -u)" = 0 ] && chown postgres: "$work/sock"
start_cluster "$work/data" "$pgport" "$bindir"
pg_pid=$(head -1 "$work/data/postmaster.pid")
if [ -n "$compare_rev" ]; then
	# the same server, with the other build of the extension in its libdir
	base_port=$(free_port)
	while [ "$base_port" = "$pgport" ] || [ "$base_port" = "$redis_port" ]; do base_port=$(free_port); done
	start_cluster "$work/data-base" "$base_port" "$("$compare_pg_config" --bindir)"
	base_pid=$(head -1 "$work/data-base/postmaster.pid")
fi

redis-server --port "$redis_port" --bind 127.0.0.1 --protected-mode yes \
	--save '' --appendonly no --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!

export PGHOST=127.0.0.1 PGPORT=$pgport PGUSER=postgres PGDATABASE=postgres
conninfo="host=127.0.0.1 port=$pgport user=postgres dbname=postgres"

for _ in $(seq 50); do
	"$work/redis_client" -m load -p "$redis_port" -n 1 >/dev/null 2>&1 && break
	sleep 0.1
done

psql -X -q -v ON_ERROR_STOP=1 -f "$here/sql/setup.sql" >/dev/null
if [ -n "$compare_rev" ]; then
	PGPORT=$base_port psql -X -q -v ON_ERROR_STOP=1 -f "$here/sql/setup.sql" >/dev/null
fi

# ---------------------------------------------------------------- helpers
if [ -z "$out" ]; then
	if [ -n "$compare_rev" ]; then out="$here/out/compare"
	elif [ "$smoke" = 1 ]; then out="$here/out/smoke"; else out="$here/out/full"; fi
fi
mkdir -p "$out"
raw="$out/raw.tsv"
printf 'sync\tround\tscenario\tvariant\tclients\ttps\tp50_ms\tp99_ms\ttransactions\tnote\n' >"$raw"
extra="$out/extra.tsv"
printf 'sync\tkind\tname\tvalue\n' >"$extra"

sql()
{
	psql -X -q -At -v ON_ERROR_STOP=1 "$@"
}

# Empty the tables that the write scenarios fill, and start from a checkpoint
prep_write()
{
	sql -c "TRUNCATE orders, hand_keys, idem_keys" -c "CHECKPOINT"
}

# Load completed keys 1..replay_keys into idem_keys, hand_keys and Redis
prep_replay()
{
	sql -c "TRUNCATE orders, hand_keys, idem_keys" \
		-c "INSERT INTO idem_keys (scope, key, status, response, attempt, created_at, completed_at, expires_at)
			SELECT '', i::text, 'completed', jsonb_build_object('order_id', i, 'status', 'created'), 1,
				   now(), now(), now() + interval '1 day'
			FROM generate_series(1, $replay_keys) i" \
		-c "INSERT INTO hand_keys (key, response)
			SELECT i::text, jsonb_build_object('order_id', i, 'status', 'created')
			FROM generate_series(1, $replay_keys) i" \
		-c "VACUUM ANALYZE" -c "CHECKPOINT"
	"$work/redis_client" -m load -p "$redis_port" -n "$replay_keys" >/dev/null
}

# Run one pgbench script; append a line to raw.tsv
#   run_pgbench SYNC ROUND SCENARIO VARIANT CLIENTS SCRIPT
run_pgbench()
{
	local sync=$1 round=$2 scenario=$3 variant=$4 nclients=$5 script=$6
	local dir="$work/run" tps stats note=""

	rm -rf "$dir"
	mkdir "$dir"
	if ! (cd "$dir" && pgbench -n -M prepared -c "$nclients" -j 2 -T "$duration" \
		-D nkeys="$replay_keys" -l --log-prefix="$dir/log" \
		-f "$here/scripts/$script.sql" >"$dir/out" 2>"$dir/err"); then
		cat "$dir/out" "$dir/err" >&2
		fail "pgbench $script failed"
	fi
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$dir/out")
	stats=$(cat "$dir"/log* | python3 "$here/report.py" latency 3)
	if [ "$scenario" = hot ]; then
		note=$(sql -c "SELECT 'orders=' || count(*) || ' duplicates=' || (count(*) - count(DISTINCT idem_key)) FROM orders")
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sync" "$round" "$scenario" "$variant" \
		"$nclients" "$tps" "$stats" "$note" >>"$raw"
	log "  $scenario/$variant: $tps tps, p50/p99/n $stats $note"
}

# Run the Redis client; append a line to raw.tsv
#   run_redis SYNC ROUND SCENARIO MODE
run_redis()
{
	local sync=$1 round=$2 scenario=$3 mode=$4
	local dir="$work/run" tps stats

	rm -rf "$dir"
	mkdir "$dir"
	"$work/redis_client" -m "$mode" -c "$clients" -T "$duration" -d "$conninfo" \
		-p "$redis_port" -n "$replay_keys" -l "$dir/log" >"$dir/out" ||
		fail "redis_client $mode failed"
	tps=$(sed -n 's/^tps \(.*\)$/\1/p' "$dir/out")
	stats=$(python3 "$here/report.py" latency 1 <"$dir/log")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sync" "$round" "$scenario" redis \
		"$clients" "$tps" "$stats" "not transactional" >>"$raw"
	log "  $scenario/redis: $tps tps, p50/p99/n $stats"
}

# The variants of a scenario in the order of this round (rotated each round)
rotate()
{
	local round=$1
	shift
	local n=$# i
	local items=("$@")
	for ((i = 0; i < n; i++)); do
		echo "${items[$(((i + round) % n))]}"
	done
}

# Run one variant of a scenario
run_variant()
{
	local sync=$1 round=$2 scenario=$3 variant=$4 nclients=$clients

	case "$scenario" in
		new|nocomplete) prep_write ;;
		hot) prep_write; nclients=$hot_clients ;;
	esac
	if [ "$variant" = redis ]; then
		sql -c "CHECKPOINT"
		run_redis "$sync" "$round" "$scenario" "$scenario"
	else
		run_pgbench "$sync" "$round" "$scenario" "$variant" "$nclients" "${scenario}_${variant}"
	fi
}

# ---------------------------------------------------------------- sweep
# Load sweep_keys expired keys into idem_keys (and hand_keys with "both")
load_expired()
{
	log "  sweep: loading $sweep_keys expired keys"
	sql -c "TRUNCATE orders, idem_keys" \
		-c "INSERT INTO idem_keys (scope, key, status, response, attempt, created_at, completed_at, expires_at)
			SELECT '', 'old' || i, 'completed', jsonb_build_object('order_id', i, 'status', 'created'), 1,
				   now() - interval '2 days', now() - interval '2 days',
				   now() - interval '1 day' + i * interval '1 millisecond'
			FROM generate_series(1, $sweep_keys) i"
	if [ "$1" = both ]; then
		sql -c "TRUNCATE hand_keys" \
			-c "INSERT INTO hand_keys (key, response, created_at)
				SELECT 'old' || i, jsonb_build_object('order_id', i, 'status', 'created'),
					   now() - interval '2 days' + i * interval '1 millisecond'
				FROM generate_series(1, $sweep_keys) i"
	fi
	sql -c "VACUUM ANALYZE" -c "CHECKPOINT"
}

# Sweep every expired key of idem_keys in batches, one transaction each, with
# a pause of PAUSE_MS between batches; prints "keys seconds"
sweep_all()
{
	local pause_ms=$1 t0 t1 swept
	t0=$(date +%s.%N)
	swept=$(sql -c "DO \$\$
		DECLARE n bigint; total bigint := 0;
		BEGIN
			LOOP
				n := idem_sweep($sweep_batch);
				total := total + n;
				COMMIT;
				EXIT WHEN n < $sweep_batch;
				IF $pause_ms > 0 THEN PERFORM pg_sleep($pause_ms / 1000.0); END IF;
			END LOOP;
			RAISE NOTICE 'swept %', total;
		END \$\$" 2>&1 | sed -n 's/.*swept \([0-9]*\).*/\1/p')
	t1=$(date +%s.%N)
	echo "$swept $t0 $t1"
}

# Sweep beside new-key transactions: one pgbench run, long enough to cover the
# sweep (SECONDS), that starts a second before it; prints "keys t0 t1<TAB>tps
# p50 p99 n" of the transactions that ended during the sweep
sweep_beside_claims()
{
	local pause_ms=$1 seconds=$2 dir="$work/sweep/with$1" result stats pgb
	mkdir -p "$dir"
	(cd "$dir" && exec pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -l \
		--log-prefix="$dir/log" -f "$here/scripts/new_ext.sql" >"$dir/out" 2>&1) &
	pgb=$!
	sleep 1
	result=$(sweep_all "$pause_ms")
	wait "$pgb" || { cat "$dir/out" >&2; fail "pgbench beside the sweep failed"; }
	set -- $result
	stats=$(cat "$dir"/log* | python3 "$here/report.py" window "$2" "$3")
	printf '%s\t%s\n' "$result" "$stats"
}

# The background worker's sweep beside new-key transactions, at the default
# idempotency.sweep_rate_limit: the worker is started by a reload with a short
# interval, which is set back once it has begun.  Prints "keys t0 t1<TAB>tps
# p50 p99 n" like sweep_beside_claims, counted from the first batch seen.
sweep_by_worker()
{
	local dir="$work/sweep/worker" seconds base first t0 t1 pgb
	seconds=$(awk -v n="$sweep_keys" 'BEGIN { printf "%d", 4 + 1.5 * n / 100000 }')
	mkdir -p "$dir"
	(cd "$dir" && exec pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -l \
		--log-prefix="$dir/log" -f "$here/scripts/new_ext.sql" >"$dir/out" 2>&1) &
	pgb=$!
	sleep 1
	base=$(sql -c "SELECT keys_swept FROM idem_stats_shared()")
	sql -c "ALTER SYSTEM SET idempotency.sweep_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
	until [ "$(sql -c "SELECT keys_swept - $base FROM idem_stats_shared()")" -gt 0 ]; do
		sleep 0.05
	done
	# the rate is counted from here, without the keys swept before
	t0=$(date +%s.%N)
	first=$(sql -c "SELECT keys_swept - $base FROM idem_stats_shared()")
	sql -c "ALTER SYSTEM RESET idempotency.sweep_interval" -c "SELECT pg_reload_conf()" >/dev/null
	sql -c "DO \$\$
		BEGIN
			LOOP
				PERFORM pg_stat_clear_snapshot();
				EXIT WHEN (SELECT keys_swept FROM idem_stats_shared()) >= $base + $sweep_keys;
				PERFORM pg_sleep(0.05);
			END LOOP;
		END \$\$"
	t1=$(date +%s.%N)
	wait "$pgb" || { cat "$dir/out" >&2; fail "pgbench beside the worker failed"; }
	printf '%s %s %s\t%s\n' "$((sweep_keys - first))" "$t0" "$t1" \
		"$(cat "$dir"/log* | python3 "$here/report.py" window "$t0" "$t1")"
}

# Expiry: idem_sweep() beside new-key transactions (without and with a pause
# between batches) and alone, the worker beside them, and a hand-written
# batched DELETE alone
run_sweep()
{
	local sync=$1 base beside alone paused hand
	rm -rf "$work/sweep"
	mkdir -p "$work/sweep/base"

	# claims alone; like beside the sweep, the first second is left out
	load_expired both
	(cd "$work/sweep/base" && pgbench -n -M prepared -c "$clients" -j 2 -T $((duration + 1)) -l \
		--log-prefix="$work/sweep/base/log" -f "$here/scripts/new_ext.sql" >"$work/sweep/base/out" 2>&1) ||
		{ cat "$work/sweep/base/out" >&2; fail "pgbench failed"; }
	base=$(cat "$work"/sweep/base/log* | python3 "$here/report.py" window skip1 0)

	# the hand-written equivalent, alone: a batched DELETE through the created_at index
	local h0 h1 hswept
	h0=$(date +%s.%N)
	hswept=$(sql -c "DO \$\$
		DECLARE n bigint; total bigint := 0;
		BEGIN
			LOOP
				DELETE FROM hand_keys WHERE key IN
					(SELECT key FROM hand_keys WHERE created_at < now() - interval '1 day'
					 ORDER BY created_at LIMIT $sweep_batch);
				GET DIAGNOSTICS n = ROW_COUNT;
				total := total + n;
				COMMIT;
				EXIT WHEN n < $sweep_batch;
			END LOOP;
			RAISE NOTICE 'swept %', total;
		END \$\$" 2>&1 | sed -n 's/.*swept \([0-9]*\).*/\1/p')
	h1=$(date +%s.%N)
	hand="$hswept $h0 $h1"

	load_expired ext
	alone=$(sweep_all 0)
	# beside claims the sweep is slower: give pgbench time enough
	local took
	took=$(echo "$alone" | awk '{ print $3 - $2 }')

	load_expired ext
	beside=$(sweep_beside_claims 0 "$(awk -v t="$took" 'BEGIN { printf "%d", 3 + 8 * t }')")

	load_expired ext
	paused=$(sweep_beside_claims "$sweep_pause_ms" "$(awk -v t="$took" 'BEGIN { printf "%d", 3 + 12 * t }')")

	load_expired ext
	worker=$(sweep_by_worker)
	rate_limit=$(sql -c "SHOW idempotency.sweep_rate_limit")

	python3 - "$sync" "$sweep_batch" "$sweep_pause_ms" "$base" "$beside" "$alone" "$paused" "$hand" \
		"$worker" "$rate_limit" >>"$extra" <<'EOF'
import sys
sync, batch, pause, base, beside, alone, paused, hand, worker, rate_limit = sys.argv[1:]
def rate(text):
    keys, t0, t1 = text.split()[:3]
    return int(keys), float(t1) - float(t0)
out = [('batch', batch), ('pause_ms', pause), ('rate_limit', rate_limit)]
b = base.split('\t')
out += [('base_tps', b[0]), ('base_p50_ms', b[1]), ('base_p99_ms', b[2])]
for name, text in (('beside', beside), ('paused', paused), ('worker', worker)):
    sweep, stats = text.split('\t', 1)
    keys, secs = rate(sweep)
    s = stats.split('\t')
    out += [(name + '_keys', keys), (name + '_seconds', f'{secs:.3f}'),
            (name + '_keys_per_s', f'{keys / secs:.0f}'),
            (name + '_tps', s[0]), (name + '_p50_ms', s[1]), (name + '_p99_ms', s[2])]
for name, text in (('alone', alone), ('hand', hand)):
    keys, secs = rate(text)
    out += [(name + '_keys', keys), (name + '_keys_per_s', f'{keys / secs:.0f}')]
for k, v in out:
    print(f"{sync}\tsweep\t{k}\t{v}")
EOF
	log "  sweep: claims alone (tps p50 p99 n) $base"
	log "  sweep: beside claims (keys t0 t1, tps p50 p99 n) $beside"
	log "  sweep: with ${sweep_pause_ms} ms pauses beside claims $paused"
	log "  sweep: the worker beside claims $worker"
	log "  sweep: alone $alone; hand-written DELETE alone $hand"
}

# ---------------------------------------------------------------- storage
# Bytes per key after storage_keys new-key transactions of SCRIPT and VACUUM
#   storage_of SYNC LABEL TABLE SCRIPT
storage_of()
{
	local sync=$1 label=$2 table=$3 script=$4 per
	per=$(( (storage_keys + clients - 1) / clients ))
	prep_write
	pgbench -n -M prepared -c "$clients" -j 2 -t "$per" -f "$here/scripts/$script.sql" \
		>"$work/storage.out" 2>&1 || { cat "$work/storage.out" >&2; fail "pgbench failed"; }
	sql -c "VACUUM $table"
	sql -F $'\t' -c "SELECT '$sync', 'storage', '$label:' || m.name, m.value FROM (
		SELECT count(*) AS n,
			   pg_total_relation_size('$table') AS total,
			   pg_relation_size('$table') AS heap,
			   pg_indexes_size('$table') AS indexes,
			   round(avg(pg_column_size(t.*)), 1) AS row_bytes
		FROM $table t) s,
		LATERAL (VALUES ('keys', s.n::numeric), ('total_bytes', s.total),
						('bytes_per_key', round(s.total::numeric / s.n, 1)),
						('heap_bytes_per_key', round(s.heap::numeric / s.n, 1)),
						('index_bytes_per_key', round(s.indexes::numeric / s.n, 1)),
						('row_bytes', s.row_bytes)) m(name, value)" >>"$extra"
	sql -c "VACUUM FULL $table"
	sql -F $'\t' -c "SELECT '$sync', 'storage', '$label:compact_bytes_per_key',
		round(pg_total_relation_size('$table')::numeric / count(*), 1) FROM $table" >>"$extra"
}

run_storage()
{
	local sync=$1
	storage_of "$sync" ext idem_keys new_ext
	storage_of "$sync" hand hand_keys new_hand
	log "  storage: $(grep -P '\tstorage\t.*:bytes_per_key' "$extra" | tail -2 | cut -f3,4 | tr '\n\t' ' =')"
}

# ---------------------------------------------------------------- big transactions
# Stop the cluster and start it again with OPTIONS (-c settings; none: its
# configuration file alone)
restart_with()
{
	"${runas[@]}" pg_ctl -D "$work/data" -m fast -w stop >/dev/null
	pg_pid=""
	"${runas[@]}" pg_ctl -D "$work/data" -l "$work/data/server.log" -w ${1:+-o "$1"} start >/dev/null ||
		{ tail -n 20 "$work/data/server.log" >&2; fail "the cluster did not start again"; }
	pg_pid=$(head -1 "$work/data/postmaster.pid")
}

# A kB figure of /proc/PID/status, saved in FILE
status_kb()
{
	sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "$1"
}

# COMMIT of N keys claimed in one transaction (deferred: no row before the
# commit).  The backend's peak RSS is reset just before the COMMIT (writing
# 5 to /proc/PID/clear_refs), so that VmHWM after it minus VmRSS before it is
# the memory the COMMIT took.  Appends seconds and kB to extra.tsv.
big_commit()
{
	local n=$1 round=$2 dir="$work/big" out ms before hwm keys
	mkdir -p "$dir"
	rm -f "$dir/status.before" "$dir/status.after"
	sql -c "TRUNCATE idem_keys" -c "CHECKPOINT"
	cat >"$dir/commit.sql" <<EOF
SELECT pg_backend_pid() AS pid \gset
\setenv BENCH_BACKEND :pid
BEGIN;
SELECT count(*) FROM generate_series(1, $n) i, LATERAL idem_claim(key => 'big' || i) c;
\! grep -E '^(Vm(RSS|HWM)|Rss(Anon|Shmem))' /proc/\$BENCH_BACKEND/status >$dir/status.before && echo 5 >/proc/\$BENCH_BACKEND/clear_refs
\timing on
COMMIT;
\timing off
\! grep -E '^Vm(RSS|HWM)' /proc/\$BENCH_BACKEND/status >$dir/status.after
SELECT count(*) FROM idem_keys;
EOF
	out=$(sql -f "$dir/commit.sql") || fail "the commit of $n keys failed"
	ms=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
	keys=$(echo "$out" | tail -n 1)
	[ "$keys" = "$n" ] || fail "the commit of $n keys left $keys rows"
	before=$(status_kb "$dir/status.before" VmRSS)
	hwm=$(status_kb "$dir/status.after" VmHWM)
	printf 'all\tbig\tcommit_ms:%s:%s\t%s\n' "$n" "$round" "$ms" >>"$extra"
	printf 'all\tbig\trss_before_kb:%s:%s\t%s\n' "$n" "$round" "$before" >>"$extra"
	printf 'all\tbig\tgrowth_kb:%s:%s\t%s\n' "$n" "$round" "$((hwm - before))" >>"$extra"
	printf 'all\tbig\tanon_before_kb:%s:%s\t%s\n' "$n" "$round" "$(status_kb "$dir/status.before" RssAnon)" >>"$extra"
	printf 'all\tbig\tshmem_before_kb:%s:%s\t%s\n' "$n" "$round" "$(status_kb "$dir/status.before" RssShmem)" >>"$extra"
	log "  commit of $n keys: $ms ms, backend RSS $before kB before, peak growth $((hwm - before)) kB"
}

# The same N rows written by a plain INSERT ... SELECT into a table like
# idem_keys (its indexes included) and committed: what PostgreSQL itself
# takes per row at that size, to hold the COMMIT's time per key against
plain_insert()
{
	local n=$1 round=$2 out ms
	sql -c "TRUNCATE big_plain" -c "CHECKPOINT"
	out=$(sql -c "\\timing on" -c "BEGIN" \
		-c "INSERT INTO big_plain (scope, key, status, attempt, created_at, completed_at, expires_at)
			SELECT '', 'big' || i, 'completed', 1, now(), now(), now() + interval '1 day'
			FROM generate_series(1, $n) i" -c "COMMIT") || fail "the plain insert of $n rows failed"
	ms=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{ t += $1 } END { printf "%.3f", t }')
	printf 'all\tbig\tplain_ms:%s:%s\t%s\n' "$n" "$round" "$ms" >>"$extra"
	log "  plain INSERT and COMMIT of $n rows: $ms ms"
}

# savepoint_keys loops of SAVEPOINT, SELECT 1, ROLLBACK TO SAVEPOINT, in a
# transaction that first claimed savepoint_keys keys ("with") or nothing
# ("without"); the seconds are measured by the server, from before the first
# loop to after the last
savepoint_loops()
{
	local kind=$1 round=$2 dir="$work/big" secs
	mkdir -p "$dir"
	{
		echo "BEGIN;"
		if [ "$kind" = with ]; then
			echo "SELECT count(*) FROM generate_series(1, $savepoint_keys) i, LATERAL idem_claim(key => 'sp' || i) c;"
		fi
		echo "SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset"
		echo "\\o /dev/null"
		# one round trip per loop: psql sends the three statements at once
		awk -v n="$savepoint_keys" 'BEGIN { for (i = 0; i < n; i++) print "SAVEPOINT s\\; SELECT 1\\; ROLLBACK TO SAVEPOINT s;" }'
		echo "\\o"
		echo "SELECT extract(epoch FROM clock_timestamp()) - :t0;"
		echo "ROLLBACK;"
	} >"$dir/savepoint_$kind.sql"
	secs=$(sql -f "$dir/savepoint_$kind.sql" | tail -n 1) || fail "the savepoint loops failed"
	printf 'all\tbig\tsavepoint_s:%s:%s\t%s\n' "$kind" "$round" "$secs" >>"$extra"
	log "  $savepoint_keys savepoint rollbacks $kind $savepoint_keys claims before: $secs s"
}

run_big()
{
	local normal small round n kind max=0 locks
	export PGOPTIONS="-c synchronous_commit=on"
	for n in $big_keys; do [ "$n" -gt "$max" ] && max=$n; done
	# every key holds a lock to the end of its transaction: the shared lock
	# table (max_locks_per_transaction x about max_connections) must hold them
	locks=$(( max / 50 > 64 ? max / 50 : 64 ))
	normal=$(sql -c "SHOW shared_memory_size")
	# what the lock table alone takes: the shared memory with small buffers,
	# without and then with the big lock table
	restart_with "-c shared_buffers=32MB"
	small=$(sql -c "SHOW shared_memory_size")
	log "big transactions: max_locks_per_transaction = $locks, shared_buffers = 32MB"
	restart_with "-c max_locks_per_transaction=$locks -c shared_buffers=32MB"
	sql -c "CREATE TABLE IF NOT EXISTS big_plain (LIKE idem_keys INCLUDING DEFAULTS INCLUDING INDEXES)"
	{
		printf 'all\tbig\tlocks\t%s\n' "$locks"
		printf 'all\tbig\tshmem_normal\t%s\n' "$normal"
		printf 'all\tbig\tshmem_small_default_locks\t%s\n' "$small"
		printf 'all\tbig\tdefault_locks\t%s\n' "$(sql -c "SELECT boot_val FROM pg_settings WHERE name = 'max_locks_per_transaction'")"
		printf 'all\tbig\tshmem_big\t%s\n' "$(sql -c "SHOW shared_memory_size")"
		printf 'all\tbig\tshmem_big_buffers\t%s\n' "$(sql -c "SHOW shared_buffers")"
		printf 'all\tbig\tsavepoint_keys\t%s\n' "$savepoint_keys"
	} >>"$extra"
	for round in $(seq 1 "$big_rounds"); do
		log " big transactions, round $round of $big_rounds"
		for n in $(rotate "$round" $big_keys); do
			big_commit "$n" "$round"
			plain_insert "$n" "$round"
		done
		sql -c "TRUNCATE idem_keys, big_plain"
		for kind in $(rotate "$round" with without); do
			savepoint_loops "$kind" "$round"
		done
	done
	sql -c "TRUNCATE idem_keys" -c "DROP TABLE big_plain"
	restart_with ""
}

# ---------------------------------------------------------------- comparison
# Server instructions per new-key and replay transaction of each build,
# counted by callgrind as in run_callgrind: a figure that the machine's load
# does not change.  Each cluster in turn runs under valgrind, and is left
# stopped.
compare_callgrind()
{
	local build data bin item scenario n1 n2 ir1 ir2
	log "callgrind: server instructions per transaction, 1 client, each build"
	export PGOPTIONS="-c synchronous_commit=off"
	for build in current base; do
		if [ "$build" = base ]; then
			data=$work/data-base bin=$("$compare_pg_config" --bindir)
			export PGPORT=$base_port
		else
			data=$work/data bin=$bindir
			export PGPORT=$pgport
		fi
		"${runas[@]}" pg_ctl -D "$data" -m fast -w stop >/dev/null
		rm -rf "$work/cg"
		mkdir "$work/cg"
		if [ "$(id -u)" = 0 ]; then chown postgres: "$work/cg"; fi
		"${runas[@]}" valgrind --tool=callgrind --trace-children=yes \
			--callgrind-out-file="$work/cg/cg.%p" \
			"$bin/postgres" -D "$data" >"$work/valgrind-$build.log" 2>&1 &
		if [ "$build" = base ]; then base_pid=$!; else pg_pid=$!; fi
		for _ in $(seq 300); do
			psql -X -q -c "SELECT 1" >/dev/null 2>&1 && break
			sleep 0.2
		done
		for item in new:200:1200 replay:500:2500; do
			IFS=: read -r scenario n1 n2 <<<"$item"
			if [ "$scenario" = new ]; then prep_write; else prep_replay; fi
			ir1=$(cg_count "${scenario}_ext" "$n1")
			ir2=$(cg_count "${scenario}_ext" "$n2")
			printf 'all\tcallgrind\t%s:%s\t%s\n' "$build" "$scenario" $(( (ir2 - ir1) / (n2 - n1) )) >>"$extra"
			log "  $build $scenario: $(( (ir2 - ir1) / (n2 - n1) )) instructions per transaction"
		done
		"${runas[@]}" pg_ctl -D "$data" -m fast -w stop >/dev/null
		if [ "$build" = base ]; then base_pid=""; else pg_pid=""; fi
	done
	export PGPORT=$pgport
}

# The new-key and replay scenarios of the extension, with the current build
# and with the build of compare_rev, each in its own cluster, rounds
# alternating between them; then the storage per key of each
run_compare()
{
	local sync round scenario build
	for sync in $sync_modes; do
		export PGOPTIONS="-c synchronous_commit=$sync"
		log "synchronous_commit = $sync"
		for round in $(seq 1 "$rounds"); do
			log " round $round of $rounds"
			for scenario in new replay; do
				if [ "$scenario" = replay ]; then
					export PGPORT=$pgport
					prep_replay
					export PGPORT=$base_port
					prep_replay
				fi
				for build in $(rotate "$round" current base); do
					if [ "$build" = base ]; then export PGPORT=$base_port; else export PGPORT=$pgport; fi
					[ "$scenario" = new ] && prep_write
					run_pgbench "$sync" "$round" "$scenario" "$build" "$clients" "${scenario}_ext"
				done
			done
		done
		for build in current base; do
			if [ "$build" = base ]; then export PGPORT=$base_port; else export PGPORT=$pgport; fi
			storage_of "$sync" "$build" idem_keys new_ext
		done
		export PGPORT=$pgport
		log "  storage: $(grep -P '\tstorage\t.*:bytes_per_key' "$extra" | tail -2 | cut -f3,4 | tr '\n\t' ' =')"
	done
	if [ "$callgrind" = 1 ]; then compare_callgrind; fi
	{
		printf 'all\tcompare\tcurrent_version\t%s\n' "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$top/idempotency.control")"
		printf 'all\tcompare\tcurrent_commit\t%s\n' "$(git -C "$top" rev-parse --short HEAD)$(git -C "$top" diff --quiet HEAD -- src sql Makefile idempotency.control || echo '+changes')"
		printf 'all\tcompare\tbase_version\t%s\n' "$base_version"
		printf 'all\tcompare\tbase_commit\t%s\n' "$base_commit"
	} >>"$extra"
}

# ---------------------------------------------------------------- callgrind
# Instructions that the server backend executes per transaction, counted by
# callgrind with one client: unlike throughput, this does not depend on what
# else the machine is doing.  Each script runs n1 and then n2 transactions in
# a new connection; the difference, divided by n2 - n1, leaves out the
# connection's start.
cg_count()
{
	local script=$1 n=$2 before f v best done
	sleep 1
	before=$(ls "$work/cg")
	pgbench -n -M prepared -c 1 -t "$n" -D nkeys="$replay_keys" \
		-f "$here/scripts/$script.sql" >"$work/cg.out" 2>&1 ||
		{ cat "$work/cg.out" >&2; fail "pgbench $script under callgrind failed"; }
	# pgbench's set-up connection and its client connection each leave a
	# profile when their backend exits: wait for both, keep the larger
	for _ in $(seq 300); do
		best=0
		done=0
		for f in $(comm -13 <(echo "$before") <(ls "$work/cg")); do
			v=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$work/cg/$f")
			[ -n "$v" ] || continue
			done=$((done + 1))
			if [ "$v" -gt "$best" ]; then best=$v; fi
		done
		if [ "$done" -ge 2 ]; then break; fi
		sleep 0.2
	done
	echo "$best"
}

run_callgrind()
{
	local item scenario variant n1 n2 ir1 ir2
	log "callgrind: server instructions per transaction, 1 client"
	"${runas[@]}" pg_ctl -D "$work/data" -m fast -w stop >/dev/null
	pg_pid=""
	mkdir "$work/cg"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$work/cg"; fi
	"${runas[@]}" valgrind --tool=callgrind --trace-children=yes \
		--callgrind-out-file="$work/cg/cg.%p" \
		"$bindir/postgres" -D "$work/data" >"$work/valgrind.log" 2>&1 &
	pg_pid=$!
	for _ in $(seq 300); do
		psql -X -q -c "SELECT 1" >/dev/null 2>&1 && break
		sleep 0.2
	done
	export PGOPTIONS="-c synchronous_commit=off"
	for item in new:ext:200:1200 new:hand:200:1200 new:plpgsql:200:1200 new:bare:200:1200 \
		new:floor:200:1200 nocomplete:ext:200:1200 nocomplete:hand:200:1200 nocomplete:bare:200:1200 \
		replay:ext:500:2500 replay:pk:500:2500 replay:hand:500:2500 replay:plpgsql:500:2500; do
		IFS=: read -r scenario variant n1 n2 <<<"$item"
		case "$scenario" in
			new|nocomplete) prep_write ;;
			replay) if [ "$variant" = ext ]; then prep_replay; fi ;;
		esac
		ir1=$(cg_count "${scenario}_$variant" "$n1")
		ir2=$(cg_count "${scenario}_$variant" "$n2")
		printf 'all\tcallgrind\t%s:%s\t%s\n' "$scenario" "$variant" \
			$(( (ir2 - ir1) / (n2 - n1) )) >>"$extra"
		log "  $scenario/$variant: $(( (ir2 - ir1) / (n2 - n1) )) instructions per transaction"
	done
}

# ---------------------------------------------------------------- run
{
	echo "machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "postgres: $(postgres --version)"
	echo "pgbench: $(pgbench --version)"
	echo "redis: $(redis-server --version | cut -d' ' -f1-3)"
	echo "settings: duration ${duration}s, rounds $rounds, clients $clients, hot clients $hot_clients,"
	echo "  replay keys $replay_keys, sweep keys $sweep_keys (batches of $sweep_batch), storage keys $storage_keys"
	echo "  callgrind $callgrind"
	if [ -n "$compare_rev" ]; then
		echo "compare: the current tree against $compare_rev ($base_commit, version $base_version), two clusters"
	elif [ "$big" != 0 ]; then
		echo "big transactions: keys $big_keys, rounds $big_rounds, savepoint keys $savepoint_keys"
	fi
} >"$out/environment.txt"
cat "$out/environment.txt" >&2

if [ -n "$compare_rev" ]; then
	run_compare
else
	for sync in $sync_modes; do
		[ "$big" = only ] && break
		export PGOPTIONS="-c synchronous_commit=$sync"
		log "synchronous_commit = $sync"
		for round in $(seq 1 "$rounds"); do
			log " round $round of $rounds"
			for variant in $(rotate "$round" ext hand plpgsql redis bare floor); do
				run_variant "$sync" "$round" new "$variant"
			done
			for variant in $(rotate "$round" ext hand redis bare); do
				run_variant "$sync" "$round" nocomplete "$variant"
			done
			prep_replay
			for variant in $(rotate "$round" ext pk hand plpgsql redis); do
				run_variant "$sync" "$round" replay "$variant"
			done
			for variant in $(rotate "$round" ext hand plpgsql); do
				run_variant "$sync" "$round" hot "$variant"
			done
		done
		run_sweep "$sync"
		run_storage "$sync"
	done
	if [ "$big" != 0 ]; then run_big; fi
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/environment.txt"
if [ "$callgrind" = 1 ] && [ -z "$compare_rev" ] && [ "$big" != only ]; then run_callgrind; fi

# The idempotent consumer: batches, single claims, a hand-written batch and
# offsets, in a cluster of its own (consumers.sh)
if [ "$consumers" = 1 ] && [ -z "$compare_rev" ] && [ "$big" != only ]; then
	log "idempotent consumers (test/bench/consumers.sh)"
	bash "$here/consumers.sh" --no-install --pg-config "$PG_CONFIG" --out "$out" \
		$([ "$smoke" = 1 ] && echo --smoke) | sed 's/^/  /'
fi

# ---------------------------------------------------------------- report
if [ -n "$compare_rev" ]; then
	python3 "$here/report.py" compare "$out" "$clients"
else
	python3 "$here/report.py" report "$out" "$clients" "$hot_clients" "$hot_keys"
fi
if [ "$smoke" = 0 ] && [ "$out" = "$here/out/full" ] && [ -z "$compare_rev" ]; then
	cp "$out/results.md" "$here/results.md"
	cp "$out/results.png" "$here/results.png"
	[ -f "$out/consumers.md" ] && cp "$out/consumers.md" "$here/consumers.md"
	log "wrote $here/results.md and $here/results.png"
else
	log "results in $out (not copied over the committed results)"
fi
