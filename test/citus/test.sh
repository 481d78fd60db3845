#!/usr/bin/env bash
#
# The extension with idem_keys distributed by Citus: a coordinator and two
# workers on loopback, idem_keys distributed by scope, a business table
# co-located with it, and the functions delegated to the node that holds the
# key's shard.  Checks that a claim made through the coordinator lands in the
# key's shard (and never in the shell), is claimed once and then replayed,
# and commits or rolls back together with the business write.
#
#   PG_CONFIG=... test/citus/test.sh
#
# Expects the extension installed into PG_CONFIG's PostgreSQL; builds Citus
# (or takes it from the cache) and installs it there (scripts/build-citus.sh).
# Ends with the line "citus: N passed, M failed" and exits non-zero if
# anything failed.
#
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

PG_CONFIG=${PG_CONFIG:-pg_config}
PG_CONFIG=$(command -v "$PG_CONFIG")
export PG_CONFIG
port=${CITUS_TEST_PORT:-56400}
w1=$((port + 1))
w2=$((port + 2))

ensure_test_user
scripts/build-citus.sh "$PG_CONFIG" >/dev/null
base=$(mktemp -d /tmp/idem-citus-test.XXXXXX)
chown "$(test_user)" "$base" 2>/dev/null || true
trap 'scripts/citus-cluster.sh stop "$base" || true; rm -rf "$base"' EXIT
scripts/citus-cluster.sh start "$base" "$port" >/dev/null

passed=0
failed=0

# psql on a node: unaligned, tuples only, stop at the first error
sql() {
	local p=$1
	shift
	as_test_user psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" -d postgres "$@" 2>&1
}

# check NAME EXPECTED PORT SQL...: the output of the SQL must be EXPECTED
check() {
	local name=$1 want=$2 p=$3 got
	shift 3
	got=$(sql "$p" "$@") || true
	if [ "$got" = "$want" ]; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
		echo "  expected: $(echo "$want" | tr '\n' '|')"
		echo "  got:      $(echo "$got" | tr '\n' '|')"
	fi
}

# check_match NAME REGEX PORT SQL...: the output must match REGEX
check_match() {
	local name=$1 want=$2 p=$3 got
	shift 3
	got=$(sql "$p" "$@") || true
	if echo "$got" | grep -qE "$want"; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
		echo "  expected to match: $want"
		echo "  got: $(echo "$got" | tr '\n' '|')"
	fi
}

delegate() {
	sql "$port" -c "SELECT create_distributed_function('$1', distribution_arg_name => 'scope', colocate_with => 'idem_keys', force_delegation => true)" >/dev/null
}

# --- set-up: distribute idem_keys and the functions, a co-located table
check "idem_keys distributed by scope" $'\nh' "$port" \
	-c "SELECT create_distributed_table('idem_keys', 'scope')" \
	-c "SELECT partmethod FROM pg_dist_partition WHERE logicalrelid = 'idem_keys'::regclass"
for f in 'idem_claim(text,text,interval,text,boolean,interval,name)' \
	'idem_complete(text,jsonb,text,integer,name)' \
	'idem_release(text,text,integer,name)' \
	'idem_checkpoint(text,text,text,integer,name)' \
	'idem_lookup(text,text,name)' \
	'idem_forget(text,text,name)'; do
	delegate "$f"
done
check_match "a co-located table needs the collation \"C\" of scope" \
	"Distribution column collations don't match for (payments_default and idem_keys|idem_keys and payments_default)" "$port" \
	-c "CREATE TABLE payments_default (scope text NOT NULL, id bigserial, amount int)" \
	-c "SELECT create_distributed_table('payments_default', 'scope', colocate_with => 'idem_keys')"
check "business table co-located with idem_keys" $'\nt' "$port" \
	-c "CREATE TABLE payments (scope text COLLATE \"C\" NOT NULL, id bigserial, amount int, PRIMARY KEY (scope, id))" \
	-c "SELECT create_distributed_table('payments', 'scope', colocate_with => 'idem_keys')" \
	-c "SELECT colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'idem_keys'::regclass)
		FROM pg_dist_partition WHERE logicalrelid = 'payments'::regclass"

# --- claimed once, then replay
check "first claim through the coordinator is claimed" "claimed|1" "$port" \
	-c "SELECT outcome, attempt FROM idem_claim(key => 'k1', scope => 'tenant-a')"
check "the key is in its shard (count via Citus)" "1" "$port" \
	-c "SELECT count(*) FROM idem_keys WHERE scope = 'tenant-a' AND key = 'k1'"
check "the key is in the shard Citus computes for its scope" "1" "$port" \
	-c "SELECT result FROM run_command_on_shards('idem_keys', \$\$SELECT count(*) FROM %s WHERE key = 'k1'\$\$)
		WHERE shardid = get_shard_id_for_distribution_column('idem_keys', 'tenant-a')"
check "second claim is a replay" "replay" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'k1', scope => 'tenant-a')"
check "idem_lookup through the coordinator" "k1|completed" "$port" \
	-c "SELECT key, status FROM idem_lookup(key => 'k1', scope => 'tenant-a')"

# --- many scopes: keys spread over shards on both workers
for i in $(seq 1 40); do
	sql "$port" -c "SELECT outcome FROM idem_claim(key => 'spread', scope => 's$i')" >>"$base/spread.out"
done
check "40 claims of 40 scopes answered claimed" "40" "$port" \
	-c "SELECT $(grep -c '^claimed$' "$base/spread.out")"
check "40 keys in idem_keys, on both workers" "40|2" "$port" \
	-c "SELECT count(*), count(DISTINCT nodeport) FROM idem_keys k
		JOIN pg_dist_shard_placement p ON p.shardid = get_shard_id_for_distribution_column('idem_keys', k.scope)
		WHERE key = 'spread'"
check "the shells on the workers were never written" "0|0" "$port" \
	-c "SELECT (SELECT result FROM run_command_on_workers('SELECT pg_relation_size(''idem_keys'')') WHERE nodeport = $w1),
		(SELECT result FROM run_command_on_workers('SELECT pg_relation_size(''idem_keys'')') WHERE nodeport = $w2)"

# --- the business write and the key commit or roll back together
check "claim, write, complete, commit" "claimed

t" "$port" \
	-c "BEGIN" \
	-c "SELECT outcome FROM idem_claim(key => 'pay-1', scope => 'tenant-a')" \
	-c "INSERT INTO payments (scope, amount) VALUES ('tenant-a', 100)" \
	-c "SELECT idem_complete(key => 'pay-1', scope => 'tenant-a', response => '{\"status\": 201}')" \
	-c "COMMIT" \
	-c "SELECT true"
check "after commit: the payment and the key" "1|1" "$port" \
	-c "SELECT (SELECT count(*) FROM payments WHERE scope = 'tenant-a' AND amount = 100),
		(SELECT count(*) FROM idem_keys WHERE scope = 'tenant-a' AND key = 'pay-1')"
check "the retry replays the stored response" 'replay|{"status": 201}' "$port" \
	-c "SELECT outcome, response FROM idem_claim(key => 'pay-1', scope => 'tenant-a')"
check "claim, write, roll back" "claimed" "$port" \
	-c "BEGIN" \
	-c "SELECT outcome FROM idem_claim(key => 'pay-2', scope => 'tenant-a')" \
	-c "INSERT INTO payments (scope, amount) VALUES ('tenant-a', 200)" \
	-c "ROLLBACK"
check "after rollback: neither the payment nor the key" "0|0" "$port" \
	-c "SELECT (SELECT count(*) FROM payments WHERE amount = 200),
		(SELECT count(*) FROM idem_keys WHERE key = 'pay-2')"
check "the retry after the rollback is claimed afresh" "claimed" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'pay-2', scope => 'tenant-a')"
check_match "a failed business write fails the transaction" "duplicate key value" "$port" \
	-c "BEGIN" \
	-c "SELECT outcome FROM idem_claim(key => 'pay-3', scope => 'tenant-a')" \
	-c "INSERT INTO payments (scope, id, amount) VALUES ('tenant-a', -1, 1), ('tenant-a', -1, 1)" \
	-c "COMMIT"
check "the claim of the failed transaction is gone" "0" "$port" \
	-c "SELECT count(*) FROM idem_keys WHERE key = 'pay-3'"

# --- one transaction, keys on both workers (two-phase commit)
other=$(sql "$port" -c "SELECT k.scope FROM idem_keys k
	JOIN pg_dist_shard_placement p ON p.shardid = get_shard_id_for_distribution_column('idem_keys', k.scope)
	WHERE key = 'spread' AND nodeport <> (SELECT nodeport FROM pg_dist_shard_placement
		WHERE shardid = get_shard_id_for_distribution_column('idem_keys', 's1'))
	ORDER BY 1 LIMIT 1")
check "keys of scopes on both workers commit together" "claimed
claimed
2" "$port" \
	-c "BEGIN" \
	-c "SELECT outcome FROM idem_claim(key => 'two', scope => 's1')" \
	-c "SELECT outcome FROM idem_claim(key => 'two', scope => '$other')" \
	-c "COMMIT" \
	-c "SELECT count(*) FROM idem_keys WHERE key = 'two'"
check "and replay together" "replay
replay" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'two', scope => 's1')" \
	-c "SELECT outcome FROM idem_claim(key => 'two', scope => '$other')"

# --- release and forget through the coordinator
check "idem_forget removes the key from its shard" $'t\n0' "$port" \
	-c "SELECT idem_forget(key => 'k1', scope => 'tenant-a')" \
	-c "SELECT count(*) FROM idem_keys WHERE scope = 'tenant-a' AND key = 'k1'"

# --- a call that Citus does not delegate runs on the coordinator: an error
check_match "an undelegated call names the missing shard" \
	'55000.*the shard of table "idem_keys" for scope "tenant-a" is not on this node' "$port" \
	-c "\\set VERBOSITY verbose" \
	-c "DO \$\$ BEGIN PERFORM idem_claim(key => 'plpgsql', scope => 'tenant-a'); END \$\$"

echo "citus: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
