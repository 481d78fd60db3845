#!/usr/bin/env bash
#
# Run the code samples that the README quotes (examples/) against a throwaway
# PostgreSQL with the extension preloaded, and check that every README
# snippet marked <!-- sample: FILE --> is a verbatim excerpt of FILE.
#
#   PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config scripts/samples.sh
#
# The extension must already be installed into that PostgreSQL (scripts/test.sh
# does it before the suites; by hand: make install).  Installs what the samples
# need if it is missing (Debian 12: python3-psycopg, nodejs, npm; pg from npm),
# runs the servers and the samples as an unprivileged user, and stops the
# server at the end.  Prints "ok NAME" or "FAILED NAME" for each sample test,
# then "samples: N passed, M failed", and exits non-zero if anything failed.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

: "${PG_CONFIG:?set PG_CONFIG to the pg_config of the PostgreSQL to run the samples on}"
export PG_CONFIG
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/idempotency.control" ]; then
	echo "the extension is not installed into $("$PG_CONFIG" --bindir)/..: run make install first" >&2
	exit 2
fi

passed=0
failed=0

# Record one sample test's result; show its output when it failed
report() {
	local rc=$1 name=$2 log=${3:-}
	if [ "$rc" -eq 0 ]; then
		echo "ok $name"
		passed=$((passed + 1))
	else
		echo "FAILED $name"
		failed=$((failed + 1))
		[ -n "$log" ] && [ -s "$log" ] && sed 's/^/    /' "$log" | tail -n 60
	fi
	return 0
}

# What the samples need
ensure_test_user
ensure_packages python3-psycopg
command -v node >/dev/null || ensure_packages nodejs
command -v npm >/dev/null || ensure_packages npm

# 1. Every README snippet marked <!-- sample: FILE --> must be a run of
# consecutive lines of FILE, exactly as written there.
excerpts=$(/usr/bin/python3 - <<'PY'
import os
import re

marker = re.compile(r"^\s*<!--\s*sample:\s*(\S+)\s*-->\s*$")
fence = re.compile(r"^(\s*)(```+|~~~+)")
lines = open("README.md", encoding="utf-8").read().split("\n")
for i, line in enumerate(lines):
    m = marker.match(line)
    if not m:
        continue
    path = m.group(1)
    name = "README.md:%d is an excerpt of %s" % (i + 1, path)
    j = i + 1
    while j < len(lines) and lines[j].strip() == "":
        j += 1
    f = fence.match(lines[j]) if j < len(lines) else None
    if not f:
        print("FAILED %s (no code block after the marker)" % name)
        continue
    indent, close = f.group(1), f.group(2)
    block = []
    k = j + 1
    while k < len(lines) and not lines[k].strip().startswith(close):
        block.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k])
        k += 1
    if not os.path.isfile(path):
        print("FAILED %s (no such file)" % name)
        continue
    src = open(path, encoding="utf-8").read().split("\n")
    n = len(block)
    if n > 0 and any(src[s:s + n] == block for s in range(len(src) - n + 1)):
        print("ok %s" % name)
        continue
    missing = [b for b in block if b not in src]
    why = ("this line is not in the file: %r" % missing[0]) if missing else \
        "the lines are not consecutive there" if n else "the code block is empty"
    print("FAILED %s (%s)" % (name, why))
PY
)
if [ -z "$excerpts" ]; then
	report 1 "README.md quotes the samples (no <!-- sample: FILE --> marker found)"
else
	while read -r status name; do
		if [ "$status" = ok ]; then report 0 "$name"; else report 1 "$name"; fi
	done <<<"$excerpts"
fi

# 2. The samples, run against a real server
dir=$(mktemp -d /tmp/idempotency-samples.XXXXXX)
port=$((20000 + RANDOM % 20000))
cleanup() {
	if [ -f "$dir/data/postmaster.pid" ]; then
		(cd "$dir" && as_test_user pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1) || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

# a copy the test user may read and write (the checkout may be under /root)
cp -a examples "$dir/examples"
rm -rf "$dir/examples/node/node_modules"
npm_log="$dir/npm.log"
set +e
(cd "$dir/examples/node" && npm ci --no-audit --no-fund --loglevel=error) >"$npm_log" 2>&1
npm_rc=$?
set -e
[ "$(id -u)" -eq 0 ] && chown -R postgres "$dir"
cd "$dir"

# a throwaway cluster with the extension preloaded, on a unix socket only
start_cluster "$dir" "$port"

# Run one sample test in a database of its own, where examples/schema.sql was loaded
run_sample() {
	local name=$1 db=$2 subdir=$3
	shift 3
	local log="$dir/$db.log" rc
	set +e
	{
		as_test_user createdb -h "$dir" -p "$port" -U postgres "$db" &&
			as_test_user psql -X -q -h "$dir" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 \
				-f "$dir/examples/schema.sql" &&
			(cd "$dir/examples/$subdir" &&
				as_test_user env PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE="$db" \
					timeout 120 "$@")
	} >"$log" 2>&1
	rc=$?
	set -e
	report "$rc" "$name" "$log"
}

run_sample examples/python/test_handler.py sample_python python /usr/bin/python3 test_handler.py
if [ "$npm_rc" -eq 0 ]; then
	run_sample examples/node/handler.test.js sample_node node node --test handler.test.js
else
	report 1 "examples/node/handler.test.js (npm ci failed)" "$npm_log"
fi
run_sample examples/sql/test.sh sample_sql sql bash test.sh

cd /
echo "samples: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
