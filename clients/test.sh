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
. clients/lib.sh

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

clients_setup

# The Idempotency-Key parsers of both packages, against one table of sf-string cases
set +e
as_test_user env PYTHONPATH="$PYTHONPATH" "$PY" "$dir/clients/tests/sf_keys.py" >"$dir/sf-python.log" 2>&1
report $? "python: parse_key on the sf-string cases of tests/sf_keys.json" "$dir/sf-python.log"
as_test_user node "$dir/clients/tests/sf_keys.js" >"$dir/sf-node.log" 2>&1
report $? "node: parseKey on the sf-string cases of tests/sf_keys.json" "$dir/sf-node.log"
set -e

# FastAPI 0.92 on Debian 12: check that it imports (the cases below check that it serves)
fastapi_ok=0
if as_test_user env PYTHONPATH="$PYTHONPATH" "$PY" -c 'import fastapi, uvicorn, fastapi_app' \
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
		timeout 180 "$PY" "$dir/clients/tests/driver.py" "$name" "$aport" "$direct" -- "$@") >"$log" 2>&1
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

for mode in direct pgbouncer; do
	if [ $mode = direct ]; then dsn=$direct; else dsn=$pooled; fi
	# shellcheck disable=SC2046
	run_app "flask-$mode" "$dsn" $(app_command flask)
	# shellcheck disable=SC2046
	run_app "django-$mode" "$dsn" $(app_command django)
	if [ $fastapi_ok -eq 1 ]; then
		# shellcheck disable=SC2046
		run_app "fastapi-$mode" "$dsn" $(app_command fastapi)
	fi
	if [ "$npm_rc" -eq 0 ]; then
		# shellcheck disable=SC2046
		run_app "express-$mode" "$dsn" $(app_command express)
	else
		report 1 "express-$mode (npm ci failed)" "$dir/npm.log"
	fi
done

cd /
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
