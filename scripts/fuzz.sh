#!/usr/bin/env bash
#
# The long fuzz run: nothing a role can call may crash the server or fail an
# assertion; bad input gets an ERROR, never a crash.
#
# Builds the extension from this checkout into a private copy of PostgreSQL
# (18 built from source with assertions by default), starts a throwaway
# cluster with the extension preloaded, and runs, for the given time:
#   1. the hostile-change check of test/fuzz/idem_fuzz.py (each change to the
#      extension's objects, then every function),
#   2. the fuzzer itself: several roles calling every function with random and
#      hostile arguments, in transactions and savepoints, beside concurrent
#      DDL (about 3/4 of the time),
#   3. sqlsmith as a limited role, then as a superuser (the rest).
# The oracle: no lost connection, no "TRAP:" (failed assertion), PANIC or
# crash in the server log, and idem_keys can be counted and reindexed at the
# end.  Prints the SQLSTATEs seen, any internal error (XX000) with its SQL,
# and ends with "fuzz: passed" or "fuzz: FAILED" (exit status 1).
#
#   scripts/fuzz.sh                          10 minutes on 18 with assertions
#   scripts/fuzz.sh --minutes 30 --seed 42   replay or lengthen a run
#   scripts/fuzz.sh --major 15               Debian's PostgreSQL 15
#   scripts/fuzz.sh --hostile-ddl            the DDL session also breaks the
#                                            keys table (then recreates the extension)
#   scripts/fuzz.sh --keep                   keep the cluster's directory
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

minutes=10
seed=$((RANDOM * 32768 + RANDOM))
major=18
workers=4
extra=()
keep=""
while [ $# -gt 0 ]; do
	case "$1" in
	--minutes) minutes=$2; shift 2 ;;
	--seed) seed=$2; shift 2 ;;
	--major) major=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	--hostile-ddl) extra+=(--hostile-ddl); shift ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--minutes N] [--seed N] [--major 15|18] [--workers N] [--hostile-ddl] [--keep]" >&2; exit 2 ;;
	esac
done

ensure_packages python3-psycopg sqlsmith
PG_CONFIG=$(pg_config_for "$major")
ensure_test_user
echo "fuzz: PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), $minutes minutes, seed $seed"

dir=$(mktemp -d /tmp/idempotency-fuzz.XXXXXX)
port=$((20000 + RANDOM % 20000))
cleanup() {
	local rc=$?
	[ "$rc" -eq 0 ] || keep=1
	if [ -n "${PGBIN:-}" ] && [ -d "$dir/data" ]; then
		as_test_user "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
	fi
	if [ -n "$keep" ]; then echo "fuzz: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

# A private copy of that PostgreSQL (it is relocatable), so that nothing else
# installing into it changes the code under test during the run
pgdir="$dir/pg"
mkdir -p "$pgdir"
case "$("$PG_CONFIG" --bindir)" in
/usr/lib/postgresql/*)
	# Debian's layout: programs and libraries, data files, headers
	v=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
	mkdir -p "$pgdir/usr/lib/postgresql" "$pgdir/usr/share/postgresql" "$pgdir/usr/include"
	cp -a "/usr/lib/postgresql/$v" "$pgdir/usr/lib/postgresql/"
	cp -a "/usr/share/postgresql/$v" "$pgdir/usr/share/postgresql/"
	cp -a /usr/include/postgresql "$pgdir/usr/include/"
	PG_CONFIG="$pgdir/usr/lib/postgresql/$v/bin/pg_config"
	;;
*)
	prefix=$(cd "$("$PG_CONFIG" --bindir)/.." && pwd)
	cp -a "$prefix/." "$pgdir/"
	PG_CONFIG="$pgdir/bin/pg_config"
	;;
esac
export PG_CONFIG
PGBIN=$("$PG_CONFIG" --bindir)
# only this checkout's version of the extension in it
rm -rf "$("$PG_CONFIG" --sharedir)"/extension/idempotency[-.]* \
	"$("$PG_CONFIG" --pkglibdir)"/idempotency.so "$("$PG_CONFIG" --pkglibdir)"/bitcode/idempotency*

# Build from a copy of the checkout, warnings as errors
cp -a . "$dir/tree"
(cd "$dir/tree" && make -s PG_CONFIG="$PG_CONFIG" clean >/dev/null &&
	make -s PG_CONFIG="$PG_CONFIG" PG_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter" &&
	make -s PG_CONFIG="$PG_CONFIG" install >/dev/null)
rm -rf "$dir/tree"
chown -R "$(test_user)" "$dir" 2>/dev/null || true

start_cluster "$dir" "$port" "idempotency.sweep_interval = '1s'" \
	"max_prepared_transactions = 5" "restart_after_crash = on" "log_min_messages = warning" \
	"log_error_verbosity = verbose" "backtrace_functions = 'relation_open,func_parallel'"

# python3 from Debian (psycopg is Debian's package)
python=python3
as_test_user "$python" -c 'import psycopg' 2>/dev/null || python=/usr/bin/python3
fuzzer="$dir/idem_fuzz.py"
cp test/fuzz/idem_fuzz.py "$fuzzer"
chmod 644 "$fuzzer"
fuzz() {
	as_test_user "$python" "$fuzzer" --host "$dir" --port "$port" --superuser postgres \
		--server-log "$dir/server.log" --seed "$seed" "$@"
}
psql_su() {
	as_test_user psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

total=$((minutes * 60))
failed=0
# from here on, a failing step is recorded, and the run goes on
set +e

echo
echo "== 1. hostile changes to the extension's objects"
fuzz --dbname postgres --hostile-check 2>&1 | tee "$dir/hostile.out" | grep -vE '^hostile: .* ok=[0-9]+$' || true
grep -q '^idem_fuzz: passed' "$dir/hostile.out" || failed=1

left=$((total - SECONDS))
fuzz_secs=$((left * 3 / 4))
smith_secs=$(((left - fuzz_secs) / 2))
[ "$fuzz_secs" -ge 10 ] || fuzz_secs=10
[ "$smith_secs" -ge 5 ] || smith_secs=5

echo
echo "== 2. the fuzzer, $fuzz_secs s, $workers sessions and concurrent DDL"
# a long run goes on after a crash, to find what else there is
fuzz --dbname postgres --setup --seconds "$fuzz_secs" --workers "$workers" --keep-going "${extra[@]}" 2>&1 |
	tee "$dir/fuzz.out" | grep -vE '^    [0-9]{10}\.' || true
grep -q '^idem_fuzz: passed' "$dir/fuzz.out" || failed=1

echo
echo "== 3. sqlsmith, $smith_secs s as a limited role, $smith_secs s as a superuser"
psql_su -c "CREATE DATABASE smith" \
	-c "ALTER DATABASE smith SET statement_timeout = '1s'" \
	-c "ALTER DATABASE smith SET lock_timeout = '500ms'" \
	-c "ALTER DATABASE smith SET idle_in_transaction_session_timeout = '5s'"
fuzz --dbname smith --setup-only
for role in fuzz_app postgres; do
	# the budget starts once sqlsmith has loaded the catalog (slow with assertions)
	# (a client: it needs no unprivileged user, and so gets the signal itself)
	sqlsmith --target="host=$dir port=$port dbname=smith user=$role" --seed="$seed" \
		--max-queries=100000000 --verbose >"$dir/smith-$role.out" 2>"$dir/smith-$role.err" &
	smith=$!
	for _ in $(seq 300); do
		grep -q 'Generating indexes...done' "$dir/smith-$role.err" && break
		kill -0 "$smith" 2>/dev/null || break
		sleep 1
	done
	sleep "$smith_secs"
	kill -INT "$smith" 2>/dev/null
	for _ in $(seq 30); do kill -0 "$smith" 2>/dev/null || break; sleep 1; done
	kill -KILL "$smith" 2>/dev/null
	wait "$smith" 2>/dev/null
	grep -q 'Generating indexes...done' "$dir/smith-$role.err" ||
		{ echo "sqlsmith as $role did not run:"; tail -n 5 "$dir/smith-$role.err"; failed=1; }
	echo "sqlsmith as $role: $(sed -nE 's/^queries: //p' "$dir/smith-$role.err" | tail -n 1) queries," \
		"error rate $(sed -nE 's/^error rate: //p' "$dir/smith-$role.err" | tail -n 1)"
	# its most frequent errors
	awk '/^queries:/ { n = 0 } /^[0-9]+\t/ { l[n++] = $0 } END { for (i = 0; i < n; i++) print l[i] }' \
		"$dir/smith-$role.err" | sort -rn | head -n 8 | sed 's/^/    /' || true
done

echo
echo "== the oracle"
sleep 1
if grep -nE 'received (smart|fast|immediate) shutdown request' "$dir/server.log"; then
	echo "the server was shut down from outside during the run (above): the run is incomplete"
	failed=1
fi
if grep -nE 'TRAP:|PANIC:|terminated by signal|terminating any other active server processes' "$dir/server.log"; then
	echo "the server log shows a crash or a failed assertion (above)"
	grep -nE -B2 -A8 'TRAP:|terminated by signal' "$dir/server.log" | head -n 80 || true
	failed=1
fi
for db in postgres smith; do
	if psql_su -d "$db" -c "SELECT count(*) AS keys FROM idem_keys" -c "REINDEX TABLE idem_keys"; then
		echo "$db: idem_keys counted and reindexed"
	else
		failed=1
	fi
done
if grep -q '^  XX000 \|XX000  ' "$dir/fuzz.out" "$dir/hostile.out"; then
	echo "internal errors (XX000) were seen: see INTERNAL ERRORS above; where the server raised them:"
	# the server logs each error's source location (log_error_verbosity)
	grep -A1 'ERROR:  XX000:' "$dir/server.log" | sed -nE 's/.*LOCATION:  //p' | sort | uniq -c |
		sort -rn | head -n 20 | sed 's/^/    /' || true
	# and the callers of the usual ones (backtrace_functions): the frames of
	# the extension, or none when PostgreSQL raised it on its own
	echo "  callers in the extension of relation_open and func_parallel errors:"
	grep -A30 'BACKTRACE' "$dir/server.log" | grep -oE 'idempotency\.so\([a-z_]+' | sort | uniq -c |
		sed 's/^/    /' || true
fi

echo
if [ "$failed" -eq 0 ]; then
	echo "fuzz: passed (seed $seed, $minutes minutes)"
else
	echo "fuzz: FAILED (seed $seed; replay: scripts/fuzz.sh --minutes $minutes --seed $seed --major $major)"
	keep=1
fi
[ "$failed" -eq 0 ]
