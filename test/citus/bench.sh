#!/usr/bin/env bash
#
# pgbench through a Citus coordinator: new keys (claim and complete in one
# transaction) and replays, with idem_keys
#   - plain: on a single PostgreSQL without Citus,
#   - local: a plain table on the coordinator of a Citus cluster,
#   - distributed: distributed by scope, the functions delegated to the
#     worker that holds the key's shard;
# then, to see where the time goes, the same calls for one scope whose shard
# is on the first worker, through the coordinator (delegated) and made
# directly on that worker (no delegation), with CLIENTS and with one client.
#
#   PG_CONFIG=... test/citus/bench.sh [SECONDS] [CLIENTS]
#
# The servers listen on CITUS_BENCH_PORT (default: the first free from 56500 on)
# and the ports after it.
#
# Expects Citus and the extension installed into PG_CONFIG's PostgreSQL.
# Prints one line per configuration and workload: tps and mean latency.
#
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

secs=${1:-20}
clients=${2:-8}
PG_CONFIG=${PG_CONFIG:-pg_config}
PG_CONFIG=$(command -v "$PG_CONFIG")
export PG_CONFIG
ensure_test_user
base=$(mktemp -d /tmp/idem-citus-bench.XXXXXX)
chown "$(test_user)" "$base" 2>/dev/null || true
# free_ports FROM: the first of FROM, FROM+10, ... with it and the ten after it
# not listening on loopback (other servers on this machine may hold some)
free_ports() {
	local p=$1 i busy
	while :; do
		busy=0
		for i in $(seq 0 10); do
			if (exec 3<>"/dev/tcp/127.0.0.1/$((p + i))") 2>/dev/null; then
				busy=1
				break
			fi
		done
		[ "$busy" -eq 1 ] || { echo "$p"; return; }
		p=$((p + 20))
	done
}
port=${CITUS_BENCH_PORT:-$(free_ports 56500)}

cleanup() {
	scripts/citus-cluster.sh stop "$base/cluster" || true
	if [ -f "$base/plain/data/postmaster.pid" ]; then
		as_test_user pg_ctl -D "$base/plain/data" -m fast -w stop >/dev/null || true
	fi
	rm -rf "$base"
}
trap cleanup EXIT

sql() {
	local p=$1
	shift
	as_test_user psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" -d postgres "$@"
}

# The workloads: scopes t0..t999; new keys are random 63-bit numbers
cat >"$base/new.sql" <<'SQL'
\set t random(0, 999)
\set n random(1, 9000000000000000000)
BEGIN;
SELECT * FROM idem_claim(key => 'n:n', scope => 't:t');
SELECT idem_complete(key => 'n:n', scope => 't:t', response => '{"status": 201}');
COMMIT;
SQL
cat >"$base/replay.sql" <<'SQL'
\set i random(1, 10000)
\set t :i % 1000
SELECT * FROM idem_claim(key => 'r:i', scope => 't:t');
SQL
chmod 644 "$base"/*.sql

# 10000 completed keys to replay
populate() {
	sql "$1" -c "INSERT INTO idem_keys (scope, key, status, response, attempt, created_at, completed_at, expires_at)
		SELECT 't' || (i % 1000), 'r' || i, 'completed', '{\"status\": 201}', 1, now(), now(), now() + interval '1 day'
		FROM generate_series(1, 10000) AS i"
}

run() {
	local label=$1 p=$2 w out c=${3:-$clients} suffix=${4:-}
	for w in new replay; do
		out=$(as_test_user pgbench -n -h 127.0.0.1 -p "$p" -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$secs" -f "$base/$w$suffix.sql" postgres 2>&1) ||
			{ echo "$out" >&2; return 1; }
		printf '%-12s %-7s tps %8.0f  latency %6.2f ms  failed %s\n' "$label" "$w" \
			"$(echo "$out" | sed -nE 's/^tps = ([0-9.]+).*/\1/p')" \
			"$(echo "$out" | sed -nE 's/^latency average = ([0-9.]+) ms/\1/p')" \
			"$(echo "$out" | sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p')"
	done
}

# a single plain node
mkdir -p "$base/plain"
chown "$(test_user)" "$base/plain" 2>/dev/null || true
as_test_user initdb -D "$base/plain/data" -A trust -U postgres --no-sync >/dev/null
cat >>"$base/plain/data/postgresql.conf" <<CONF
port = $((port + 10))
listen_addresses = '127.0.0.1'
unix_socket_directories = '$base/plain'
shared_preload_libraries = 'idempotency'
max_connections = 200
fsync = off
CONF
as_test_user pg_ctl -D "$base/plain/data" -l "$base/plain/server.log" -w start >/dev/null
sql $((port + 10)) -c "CREATE EXTENSION idempotency"
populate $((port + 10))
run plain $((port + 10))
as_test_user pg_ctl -D "$base/plain/data" -m fast -w stop >/dev/null

# a Citus cluster, idem_keys a plain table on the coordinator
scripts/citus-cluster.sh start "$base/cluster" "$port" >/dev/null
populate "$port"
run local "$port"

# distributed, the functions delegated
sql "$port" -c "TRUNCATE idem_keys" -c "SELECT count(*) FROM idem_distribute()" >/dev/null
populate "$port"
run distributed "$port"

# one scope whose shard is on the first worker: delegated, and direct
hot=$(sql "$port" -At -c "SELECT s FROM (SELECT 'hot' || i AS s, i FROM generate_series(1, 500) AS i) AS x
	WHERE (SELECT nodeport FROM pg_dist_shard_placement
			WHERE shardid = get_shard_id_for_distribution_column('idem_keys', s)) = $((port + 1))
	ORDER BY i LIMIT 1")
sed "s/'t:t'/'$hot'/" "$base/new.sql" >"$base/new-hot.sql"
sed "s/'t:t'/'$hot'/" "$base/replay.sql" >"$base/replay-hot.sql"
chmod 644 "$base"/*.sql
sql "$port" -c "INSERT INTO idem_keys (scope, key, status, response, attempt, created_at, completed_at, expires_at)
	SELECT '$hot', 'r' || i, 'completed', '{\"status\": 201}', 1, now(), now(), now() + interval '1 day'
	FROM generate_series(1, 10000) AS i"
run "delegated" "$port" "$clients" -hot
run "direct" $((port + 1)) "$clients" -hot

# Where the time goes, with one client: the client's round trip (SELECT 1),
# a delegated function that does nothing, a replay and a new key; each
# through the coordinator and directly on the worker, the two interleaved,
# 4 s a run, the median latency of 3 runs
sql "$port" -c "CREATE FUNCTION bench_noop(scope text) RETURNS text LANGUAGE plpgsql AS \$\$ BEGIN RETURN scope; END \$\$" \
	-c "SELECT create_distributed_function('bench_noop(text)', 'scope', colocate_with => 'idem_keys', force_delegation => true)" >/dev/null
echo "SELECT 1;" >"$base/one-hot.sql"
echo "SELECT bench_noop('$hot');" >"$base/noop-hot.sql"
chmod 644 "$base"/*.sql
latency() {
	as_test_user pgbench -n -h 127.0.0.1 -p "$1" -c 1 -T 4 -f "$base/$2-hot.sql" postgres 2>&1 |
		sed -nE 's/^latency average = ([0-9.]+) ms/\1/p'
}
median() { sort -n | sed -n 2p; }
for w in one noop replay new; do
	d=""
	x=""
	for round in 1 2 3; do
		d="$d$(latency "$port" "$w")
"
		x="$x$(latency $((port + 1)) "$w")
"
	done
	printf '%-7s one client: delegated %6s ms  direct %6s ms\n' "$w" \
		"$(printf '%s' "$d" | median)" "$(printf '%s' "$x" | median)"
done
