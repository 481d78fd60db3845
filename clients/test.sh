#!/usr/bin/env bash
#
# Test the HTTP middleware (clients/python, clients/node) over real HTTP,
# against a throwaway PostgreSQL with the extension preloaded, directly and
# through PgBouncer in transaction pooling mode.
#
#   PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config clients/test.sh
#
# The extension must already be installed into that PostgreSQL.  Installs the
# Debian packages it needs if they are missing, and the npm packages of
# clients/node (npm ci, from package-lock.json).  Servers run as an
# unprivileged user (postgres when started as root) on loopback ports and are
# stopped at the end.  Prints "ok ..." or "FAILED ..." per case, then
# "clients: N passed, M failed" as its last line; exits non-zero on failure.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

: "${PG_CONFIG:?set PG_CONFIG to the pg_config of the PostgreSQL to test on}"
export PG_CONFIG
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/idempotency.control" ]; then
	echo "the extension is not installed into $("$PG_CONFIG" --bindir)/..: run make install first" >&2
	exit 2
fi

passed=0
failed=0
report() {
	local rc=$1 name=$2 log=${3:-}
	if [ "$rc" -eq 0 ]; then
		echo "ok $name"
		passed=$((passed + 1))
	else
		echo "FAILED $name"
		failed=$((failed + 1))
		[ -n "$log" ] && [ -s "$log" ] && sed 's/^/    /' "$log" | tail -n 40
	fi
	return 0
}

ensure_test_user
ensure_packages python3-psycopg python3-flask python3-django python3-fastapi python3-uvicorn \
	gunicorn pgbouncer
command -v node >/dev/null || ensure_packages nodejs
command -v npm >/dev/null || ensure_packages npm
PY=/usr/bin/python3

dir=$(mktemp -d /tmp/idempotency-clients.XXXXXX)
port=$((20000 + RANDOM % 20000))
bport=$((port + 1))
aport=$((port + 2))
cleanup() {
	if [ -f "$dir/pgbouncer.pid" ]; then
		kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
	fi
	if [ -f "$dir/data/postmaster.pid" ]; then
		(cd "$dir" && as_test_user pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null 2>&1) || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

# a copy the test user may read and write (the checkout may be under /root)
mkdir -p "$dir/clients"
cp -a clients/python clients/tests "$dir/clients/"
mkdir -p "$dir/clients/node"
cp -a clients/node/index.js clients/node/lib clients/node/package.json clients/node/package-lock.json \
	"$dir/clients/node/"
set +e
(cd "$dir/clients/node" && npm ci --no-audit --no-fund --loglevel=error) >"$dir/npm.log" 2>&1
npm_rc=$?
set -e
[ "$(id -u)" -eq 0 ] && chown -R postgres "$dir"
cd "$dir"

# PostgreSQL on a unix socket and on loopback
start_cluster "$dir" "$port" "listen_addresses = '127.0.0.1'" "max_connections = 200"
as_test_user createdb -h "$dir" -p "$port" -U postgres test
as_test_user psql -X -q -h "$dir" -p "$port" -U postgres -d test -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION idempotency;
CREATE TABLE payments (id bigserial PRIMARY KEY, ref text NOT NULL, amount integer NOT NULL);
SQL

# PgBouncer in transaction pooling mode, on loopback
echo '"postgres" ""' >"$dir/userlist.txt"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
test = host=$dir port=$port dbname=test

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
server_reset_query =
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
[ "$(id -u)" -eq 0 ] && chown postgres "$dir/userlist.txt" "$dir/pgbouncer.ini"
as_test_user pgbouncer -d -q "$dir/pgbouncer.ini"

direct="postgresql://postgres@127.0.0.1:$port/test"
pooled="postgresql://postgres@127.0.0.1:$bport/test"
apps="$dir/clients/tests/apps"
export PYTHONPATH="$dir/clients/python:$apps"

# FastAPI 0.92 on Debian 12: check that it imports and serves before relying on it
fastapi_ok=0
if as_test_user env PYTHONPATH="$PYTHONPATH" $PY -c 'import fastapi, uvicorn, fastapi_app' \
	>"$dir/fastapi-check.log" 2>&1; then
	fastapi_ok=1
fi
report $((1 - fastapi_ok)) "FastAPI and uvicorn import (fastapi $($PY -c 'import fastapi; print(fastapi.__version__)' 2>/dev/null || echo missing))" \
	"$dir/fastapi-check.log"

# Run the cases against one app server
run_app() {
	local name=$1 dsn=$2 log
	shift 2
	log="$dir/$name.log"
	set +e
	(cd "$dir" && as_test_user env PYTHONPATH="$PYTHONPATH" DATABASE_URL="$dsn" PORT="$aport" \
		timeout 180 $PY "$dir/clients/tests/driver.py" "$name" "$aport" "$direct" -- "$@") >"$log" 2>&1
	local rc=$?
	set -e
	local line
	while IFS= read -r line; do
		case $line in
		"ok "*) echo "$line"; passed=$((passed + 1)) ;;
		"FAILED "*) echo "$line"; failed=$((failed + 1)) ;;
		"    "*) echo "$line" ;;
		esac
	done <"$log"
	if ! grep -q '^RESULT ' "$log"; then
		report 1 "$name: the driver did not finish (exit $rc)" "$log"
		[ -f "$dir/server-$name.log" ] && tail -n 20 "$dir/server-$name.log" | sed 's/^/    /'
	elif grep -q '^FAILED ' "$log" && [ -f "$dir/server-$name.log" ]; then
		tail -n 30 "$dir/server-$name.log" | sed 's/^/    /'
	fi
	return 0
}

gunicorn_cmd() {
	echo gunicorn --workers 2 --worker-class gthread --threads 16 --bind "127.0.0.1:$aport" \
		--chdir "$apps" --log-level warning "$1"
}

for mode in direct pgbouncer; do
	if [ $mode = direct ]; then dsn=$direct; else dsn=$pooled; fi
	# shellcheck disable=SC2046
	run_app "flask-$mode" "$dsn" $(gunicorn_cmd flask_app:app)
	# shellcheck disable=SC2046
	run_app "django-$mode" "$dsn" $(gunicorn_cmd django_app:application)
	if [ $fastapi_ok -eq 1 ]; then
		run_app "fastapi-$mode" "$dsn" $PY -m uvicorn --host 127.0.0.1 --port "$aport" \
			--app-dir "$apps" --log-level warning fastapi_app:app
	fi
	if [ $npm_rc -eq 0 ]; then
		run_app "express-$mode" "$dsn" node "$apps/express_app.js"
	else
		report 1 "express-$mode (npm ci failed)" "$dir/npm.log"
	fi
done

cd /
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
