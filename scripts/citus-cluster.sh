#!/usr/bin/env bash
#
# A throwaway Citus cluster on this machine: a coordinator and two workers,
# reached on loopback, with Citus and the extension preloaded and created on
# every node, and the workers registered with the coordinator.
#
#   scripts/citus-cluster.sh start DIR PORT    coordinator on PORT, workers on PORT+1, PORT+2
#   scripts/citus-cluster.sh add DIR NAME PORT another worker, registered with the coordinator
#   scripts/citus-cluster.sh stop-node DIR NAME    stop one node (coord, w1, w2 or an added one)
#   scripts/citus-cluster.sh start-node DIR NAME   start it again
#   scripts/citus-cluster.sh stop DIR          stop every server (DIR is kept)
#
# The PostgreSQL is that of PG_CONFIG (default: pg_config in PATH), which must
# have Citus (scripts/build-citus.sh) and the extension installed.  The
# servers run as the unprivileged test user (postgres when run as root), with
# trust authentication on loopback and unix sockets in DIR; the database is
# "postgres".  wal_level is logical, so that shards move online.  Further server settings may be passed in CITUS_SETTINGS, one a
# line.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PG_CONFIG=${PG_CONFIG:-pg_config}
PG_CONFIG=$(command -v "$PG_CONFIG")
export PG_CONFIG

usage() { echo "usage: $0 start DIR PORT | add DIR NAME PORT | stop-node DIR NAME | start-node DIR NAME | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
nodes="coord w1 w2"

psql_node() {
	local port=$1
	shift
	as_test_user psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -d postgres "$@"
}

# init_node NAME PORT: a new server with Citus and the extension created
init_node() {
	local n=$1 p=$2
	mkdir -p "$dir/$n"
	[ "$(id -u)" -ne 0 ] || chown "$(test_user)" "$dir/$n"
	as_test_user initdb -D "$dir/$n/data" -A trust -U postgres --no-sync >/dev/null
	cat >>"$dir/$n/data/postgresql.conf" <<CONF
port = $p
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/$n'
shared_preload_libraries = 'citus,idempotency'
max_prepared_transactions = 100
max_connections = 200
fsync = off
wal_level = logical
citus.node_conninfo = 'sslmode=prefer'
${CITUS_SETTINGS:-}
CONF
	as_test_user pg_ctl -D "$dir/$n/data" -l "$dir/$n/server.log" -w start >/dev/null
	psql_node "$p" -c "CREATE EXTENSION citus" -c "CREATE EXTENSION idempotency"
}

case "$cmd" in
start)
	[ $# -eq 3 ] || usage
	port=$3
	ensure_test_user
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ "$(id -u)" -ne 0 ] || chown "$(test_user)" "$dir"
	echo "$port" >"$dir/coordinator.port"
	i=0
	for n in $nodes; do
		init_node "$n" $((port + i))
		i=$((i + 1))
	done
	psql_node "$port" -c "SELECT citus_set_coordinator_host('127.0.0.1', $port)" \
		-c "SELECT citus_add_node('127.0.0.1', $((port + 1)))" \
		-c "SELECT citus_add_node('127.0.0.1', $((port + 2)))" >/dev/null
	echo "citus cluster: coordinator 127.0.0.1:$port, workers :$((port + 1)) :$((port + 2)), in $dir"
	;;
add)
	[ $# -eq 4 ] || usage
	dir=$(cd "$dir" && pwd)
	init_node "$3" "$4"
	psql_node "$(cat "$dir/coordinator.port")" -c "SELECT citus_add_node('127.0.0.1', $4)" >/dev/null
	echo "citus cluster: worker :$4 added"
	;;
stop-node)
	[ $# -eq 3 ] || usage
	as_test_user pg_ctl -D "$dir/$3/data" -m fast -w stop >/dev/null
	;;
start-node)
	[ $# -eq 3 ] || usage
	as_test_user pg_ctl -D "$dir/$3/data" -l "$dir/$3/server.log" -w start >/dev/null
	;;
stop)
	for d in "$dir"/*/data; do
		if [ -f "$d/postmaster.pid" ]; then
			as_test_user pg_ctl -D "$d" -m fast -w stop >/dev/null || true
		fi
	done
	;;
*) usage ;;
esac
