#!/usr/bin/env bash
#
# Run every test of the extension on every PostgreSQL major tested here (15
# from Debian's packages, 18 built from source with assertions): pg_regress
# (API, outcomes, errors), isolationtester (concurrency promises), TAP
# (background worker, restarts, crashes, upgrades, fuzzing), the README's
# samples and a Citus cluster; on the first major also the HTTP middleware
# (clients/) and the broker consumer (examples/consumer/).  Each runs against
# throwaway servers that the suites start themselves.  Installs what is missing
# (Debian 12), builds with warnings as errors, and runs the servers and tests
# as an unprivileged user.  Ends with the line "N passed, M failed" and exits
# non-zero if anything failed.
#
#   scripts/test.sh                 every major
#   scripts/test.sh --major 15      one major (or PG_MAJORS="15")
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

majors=${PG_MAJORS:-$ALL_MAJORS}
while [ $# -gt 0 ]; do
	case "$1" in
	--major) majors=$2; shift 2 ;;
	--major=*) majors=${1#--major=}; shift ;;
	*) echo "usage: $0 [--major N]" >&2; exit 2 ;;
	esac
done

ensure_test_user
# the fuzzing test (100_fuzz) runs sqlsmith and a fuzzer on psycopg
ensure_packages sqlsmith python3-psycopg
log=$(mktemp)
chmod 644 "$log"
passed=0
failed=0
ran=""

# Count pg_regress / isolation results: "test name ... ok" or "... FAILED"
# (up to 15), "ok N - name" or "not ok N - name" (16 and later)
count_regress() {
	local ok bad
	ok=$(grep -cE '\.\.\. ok( |$)|^ok [0-9]+ ' "$log" || true)
	bad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+ ' "$log" || true)
	passed=$((passed + ok))
	failed=$((failed + bad))
}

# Count TAP assertions from prove's summary
count_tap() {
	local tests bad dead
	tests=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+).*/\1/p' "$log" | tail -n 1)
	bad=$(sed -nE 's/.*Failed ([0-9]+)\/[0-9]+ subtests.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
	# a script that died without failing an assertion still failed
	dead=$(grep -cE 'Non-zero (exit|wait) status|No plan found|Bad plan' "$log" || true)
	passed=$((passed + ${tests:-0} - bad))
	if [ "$bad" -eq 0 ]; then bad=$dead; fi
	failed=$((failed + bad))
}

# Run one suite through PGXS installcheck; the other suites are switched off
run_suite() {
	local name=$1 tree=$2
	shift 2
	echo "== PostgreSQL $major: $name"
	set +e
	(cd "$tree" && as_test_user make -s PG_CONFIG="$PG_CONFIG" installcheck "$@") 2>&1 | tee "$log"
	local rc=${PIPESTATUS[0]}
	set -e
	if [ "$name" = tap ]; then count_tap; else count_regress; fi
	if [ "$rc" -ne 0 ]; then
		# a suite that failed without reporting a failed test still failed
		grep -qE 'FAILED|Failed [0-9]+/|^not ok [0-9]+ ' "$log" || failed=$((failed + 1))
		for f in "$tree/regression.diffs" "$tree/output_iso/regression.diffs"; do
			[ -s "$f" ] && { echo "---- $f"; head -n 200 "$f"; }
		done
		# (no tmp_check for pg_regress and isolation: that must not end the run)
		find "$tree/tmp_check" -name '*.log' -newer "$log" 2>/dev/null | head -n 5 |
			while read -r f; do echo "---- $f"; tail -n 40 "$f"; done || true
	fi
	return 0
}

# The README's samples, run as written (scripts/samples.sh)
run_samples() {
	local ok bad
	echo "== PostgreSQL $major: samples"
	set +e
	bash scripts/samples.sh 2>&1 | tee "$log"
	local rc=${PIPESTATUS[0]}
	set -e
	ok=$(sed -nE 's/^samples: ([0-9]+) passed, ([0-9]+) failed$/\1/p' "$log")
	bad=$(sed -nE 's/^samples: ([0-9]+) passed, ([0-9]+) failed$/\2/p' "$log")
	passed=$((passed + ${ok:-0}))
	failed=$((failed + ${bad:-0}))
	# a run that failed without counting its failure still failed
	if [ "$rc" -ne 0 ] && [ "${bad:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
	return 0
}

# A suite that starts the servers it needs (a Citus cluster, a broker, web
# servers) and ends with the line "NAME: N passed, M failed"
run_script_suite() {
	local name=$1 ok bad
	shift
	echo "== PostgreSQL $major: $name"
	set +e
	"$@" 2>&1 | tee "$log"
	local rc=${PIPESTATUS[0]}
	set -e
	ok=$(sed -nE "s/^$name: ([0-9]+) passed, ([0-9]+) failed\$/\1/p" "$log" | tail -n 1)
	bad=$(sed -nE "s/^$name: ([0-9]+) passed, ([0-9]+) failed\$/\2/p" "$log" | tail -n 1)
	passed=$((passed + ${ok:-0}))
	failed=$((failed + ${bad:-0}))
	# a run that failed without counting its failure still failed
	if [ "$rc" -ne 0 ] && [ "${bad:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
	return 0
}

first_major=${majors%% *}
for major in $majors; do
	PG_CONFIG=$(pg_config_for "$major")
	export PG_CONFIG
	build_install "$PG_CONFIG"
	tree=$(writable_tree)
	run_suite regress "$tree" ISOLATION= TAP_TESTS=
	run_suite isolation "$tree" REGRESS= TAP_TESTS=
	run_suite tap "$tree" REGRESS= ISOLATION=
	run_samples
	# idem_keys distributed by Citus, on a coordinator and two workers
	run_script_suite citus bash test/citus/test.sh
	# the HTTP middleware and the broker consumer test the layers above the
	# SQL API, which is the same on every major: they run on the first one
	if [ "$major" = "$first_major" ]; then
		run_script_suite clients bash clients/test.sh
		run_script_suite consumer bash examples/consumer/test.sh
	fi
	ran="$ran $major"
done

rm -f "$log"
echo
echo "ran on PostgreSQL:$ran"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
