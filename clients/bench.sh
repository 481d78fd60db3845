#!/usr/bin/env bash
#
# Requests per second and p99 latency of each app's idempotent route
# (POST /payments: claim, insert, complete, commit) against the same handler
# without the middleware (POST /plain: insert, commit), in one run, with wrk.
#
#   PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config clients/bench.sh [APP...]
#
# APP is flask, django, fastapi or express (all by default).  BENCH_SECONDS
# (default 10) is the length of each measurement, BENCH_CONNECTIONS (default
# 16) the number of concurrent HTTP connections.  Every request carries a new
# key.  Each route is warmed up for 2 s first.  Prints a Markdown table.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. clients/lib.sh

seconds=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-16}
apps_to_run=${*:-flask django fastapi express}
clients_setup wrk
cp "$dir/clients/tests/bench.lua" "$dir/bench.lua"

# Run wrk against one route; print "requests/s p99 errors"
measure() {
	local out rps p99 errors
	out=$(wrk --threads 2 --connections "$conns" --duration "${seconds}s" --timeout 10s --latency \
		--script "$dir/bench.lua" "http://127.0.0.1:$aport$1")
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
	errors=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {n += 1} END {print n + 0}' <<<"$out")
	echo "$rps $p99 $errors"
}

echo "wrk, ${seconds} s per route, $conns connections, $(nproc) CPUs, PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}')"
echo
echo "| app | route | requests/s | p99 latency | errors |"
echo "|---|---|---:|---:|---:|"
for app in $apps_to_run; do
	# in a session of its own, whose id is written to app.pid, to stop it whole
	# shellcheck disable=SC2016,SC2046
	as_test_user env PYTHONPATH="$PYTHONPATH" DATABASE_URL="$direct" PORT="$aport" \
		setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/app.pid" $(app_command "$app") \
		>"$dir/server-$app.log" 2>&1 &
	for _ in $(seq 100); do
		(echo >"/dev/tcp/127.0.0.1/$aport") 2>/dev/null && break
		sleep 0.1
	done
	for route in /plain /payments; do # warm up: open the pools' connections
		wrk --threads 2 --connections "$conns" --duration 2s --script "$dir/bench.lua" \
			"http://127.0.0.1:$aport$route" >/dev/null
	done
	for route in /plain /payments; do
		read -r rps p99 errors <<<"$(measure "$route")"
		label="without idempotency"
		[ "$route" = /payments ] && label="with the middleware"
		echo "| $app | $label | $rps | $p99 | $errors |"
	done
	kill -TERM -- "-$(cat "$dir/app.pid")" 2>/dev/null || true
	wait 2>/dev/null || true
done
