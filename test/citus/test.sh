#!/usr/bin/env bash
#
# The extension with idem_keys distributed by Citus: a coordinator and two
# workers on loopback, idem_keys distributed by scope with idem_distribute(),
# co-located with a business table, and the functions delegated to the node
# that holds the key's shard.  Checks that a claim made through the
# coordinator lands in the key's shard (and never in the shell), is claimed
# once and then replayed, and commits or rolls back together with the
# business write; that each node sweeps the shards it holds; that the
# concurrency promises hold per shard at every isolation level; and that
# keys survive a shard move, a stopped worker and a rebalance onto a third
# node.
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
port=${CITUS_TEST_PORT:-$(free_ports 56400)}
w1=$((port + 1))
w2=$((port + 2))

ensure_test_user
scripts/build-citus.sh "$PG_CONFIG" >/dev/null
base=$(mktemp -d /tmp/idem-citus-test.XXXXXX)
chown "$(test_user)" "$base" 2>/dev/null || true
claims=""
trap 'touch "$base/stop-claims"; [ -z "$claims" ] || kill "$claims" 2>/dev/null || true
	scripts/citus-cluster.sh stop "$base" || true; rm -rf "$base"' EXIT
# every node's background sweeper runs every second
CITUS_SETTINGS="idempotency.sweep_interval = '1s'
max_worker_processes = 16" scripts/citus-cluster.sh start "$base" "$port" >/dev/null

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
	# (not grep -q: with pipefail, echo killed by SIGPIPE would fail the match)
	if grep -E "$want" >/dev/null <<<"$got"; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
		echo "  expected to match: $want"
		echo "  got: $(echo "$got" | tr '\n' '|')"
	fi
}

# ok NAME CONDITION...: a shell condition
ok() {
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
	fi
}

# node_of SCOPE: the port of the node that holds the scope's shard
node_of() {
	sql "$port" -c "SELECT nodeport FROM pg_dist_shard_placement
		WHERE shardid = get_shard_id_for_distribution_column('idem_keys', '$1')"
}

# scope_on PORT [SKIP]: a scope whose shard is on the node at PORT
scope_on() {
	sql "$port" -c "SELECT s FROM (SELECT 'sc' || i AS s, i FROM generate_series(1, 500) AS i) AS x
		WHERE (SELECT nodeport FROM pg_dist_shard_placement
				WHERE shardid = get_shard_id_for_distribution_column('idem_keys', s)) = $1
		ORDER BY i OFFSET ${2:-0} LIMIT 1"
}

# --- set-up with idem_distribute()
check_match "idem_distribute() without Citus is a clear error" \
	'55000.*extension "citus" is not installed' "$port" \
	-c "CREATE DATABASE nocitus" \
	-c "\\c nocitus" \
	-c "CREATE EXTENSION idempotency" \
	-c "\\set VERBOSITY verbose" \
	-c "SELECT idem_distribute()"
check_match "idem_distribute() says what is wrong with a co-located table's column" \
	'42804.*distribution column "scope" of table (public\.)?payments_default is text COLLATE "default", not text COLLATE "C"' "$port" \
	-c "CREATE TABLE payments_default (scope text NOT NULL, id bigserial, amount int)" \
	-c "SELECT create_distributed_table('payments_default', 'scope')" \
	-c "\\set VERBOSITY verbose" \
	-c "SELECT idem_distribute('payments_default')"
check_match "idem_distribute() wants a distributed table to co-locate with" \
	'55000.*table (public\.)?plain is not a hash-distributed Citus table' "$port" \
	-c "CREATE TABLE plain (scope text COLLATE \"C\")" \
	-c "\\set VERBOSITY verbose" \
	-c "SELECT idem_distribute('plain')"
check "idem_distribute(): idem_keys and every function that takes a scope" \
	$'\npublic.idem_keys,idem_checkpoint,idem_claim,idem_claim_many,idem_complete,idem_complete_many,idem_forget,idem_lookup,idem_notify_token,idem_release,idem_renew' "$port" \
	-c "CREATE TABLE payments (scope text COLLATE \"C\" NOT NULL, id bigserial, amount int, PRIMARY KEY (scope, id))" \
	-c "SELECT create_distributed_table('payments', 'scope', colocate_with => 'none')" \
	-c "SELECT string_agg(regexp_replace(f, '^public\.(idem_[a-z_]+)\(.*', '\1'), ',') FROM idem_distribute('payments') AS f"
check "idem_keys distributed by scope, co-located with the business table" "h|scope|t" "$port" \
	-c "SELECT p.partmethod, column_to_column_name(p.logicalrelid, p.partkey),
		p.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'payments'::regclass)
		FROM pg_dist_partition AS p WHERE p.logicalrelid = 'idem_keys'::regclass"
check "the functions are delegated by scope, with force_delegation" "10" "$port" \
	-c "SELECT count(*) FROM pg_dist_object AS o
		WHERE o.classid = 'pg_proc'::regclass AND o.force_delegation
		  AND o.distribution_argument_index IS NOT NULL
		  AND o.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'idem_keys'::regclass)"
sql "$port" -c "DROP TABLE payments_default, plain" >/dev/null
check "idem_distribute() again delegates the functions again, and nothing else" "10" "$port" \
	-c "SELECT count(*) FROM idem_distribute()"
check_match "idem_distribute() is not for PUBLIC" "permission denied for function idem_distribute" "$port" \
	-c "CREATE ROLE idem_nobody" -c "SET ROLE idem_nobody" -c "SELECT idem_distribute()"

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

# --- expiry: each node sweeps the shards it holds
sa=$(scope_on "$w1")
sb=$(scope_on "$w2")
# first idem_sweep() by hand: the background sweepers pause
for w in "$w1" "$w2"; do
	sql "$w" -c "ALTER SYSTEM SET idempotency.sweep_interval = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
done
sleep 1.5
check "a key with a ttl of 1 s, through the coordinator" "claimed" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'ttl-1', scope => '$sa', ttl => '1 second')"
sleep 1.2
check "idem_sweep() on the coordinator, which holds no shard: nothing" "0" "$port" -c "SELECT idem_sweep()"
check "idem_sweep() on the worker that does not hold it: nothing" "0" "$w2" -c "SELECT idem_sweep()"
check "idem_sweep() on the worker that holds its shard sweeps it" "1" "$w1" -c "SELECT idem_sweep()"
check "the key is gone from its shard" "0" "$port" -c "SELECT count(*) FROM idem_keys WHERE key = 'ttl-1'"
check "a new claim of it is claimed afresh" "claimed|1" "$port" \
	-c "SELECT outcome, attempt FROM idem_claim(key => 'ttl-1', scope => '$sa')"
for i in 0 1 2 3 4 5; do
	echo "SELECT outcome FROM idem_claim(key => 'ttl-b', scope => '$(scope_on "$w1" "$i")', ttl => '1 second');"
done >"$base/ttl-b.sql"
chmod 644 "$base/ttl-b.sql"
check "6 keys with a ttl of 1 s in 6 scopes of the first worker" "6" "$port" \
	-c "SELECT $(sql "$port" -f "$base/ttl-b.sql" | grep -c '^claimed$')"
sleep 1.2
check "idem_sweep(4) in batches goes over the shards of the worker" "4
2
0
0" "$w1" \
	-c "SELECT idem_sweep(4)" -c "SELECT idem_sweep(4)" -c "SELECT idem_sweep(4)" \
	-c "SELECT count(*) FROM idem_keys WHERE key = 'ttl-b'"
# then the background sweepers, every second
for w in "$w1" "$w2"; do
	sql "$w" -c "ALTER SYSTEM RESET idempotency.sweep_interval" -c "SELECT pg_reload_conf()" >/dev/null
done
check "keys with a ttl of 1 s on both workers" "claimed
claimed
2" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'ttl-2', scope => '$sa', ttl => '1 second')" \
	-c "SELECT outcome FROM idem_claim(key => 'ttl-2', scope => '$sb', ttl => '1 second')" \
	-c "SELECT count(*) FROM idem_keys WHERE key = 'ttl-2'"
for i in $(seq 1 30); do
	[ "$(sql "$port" -c "SELECT count(*) FROM idem_keys WHERE key = 'ttl-2'")" = 0 ] && break
	sleep 0.5
done
check "the background sweeper of each worker swept its key" "0" "$port" \
	-c "SELECT count(*) FROM idem_keys WHERE key = 'ttl-2'"
check "idem_stats on a worker: its sweeper's runs and keys" "t|t" "$w2" \
	-c "SELECT sweeper_runs > 0, keys_swept >= 1 FROM idem_stats"
check "idem_stats on the coordinator: no claim counted there, it holds no key" "0|0" "$port" \
	-c "SELECT claims, keys_swept FROM idem_stats"
check "idem_stats: the key counts cover the whole cluster, on every node" "t" "$port" \
	-c "SELECT (SELECT keys_completed FROM idem_stats) = (SELECT count(*) FROM idem_keys WHERE status = 'completed' AND expires_at > now())
		AND (SELECT result::bigint FROM run_command_on_workers('SELECT keys_completed FROM idem_stats') WHERE nodeport = $w1)
			= (SELECT keys_completed FROM idem_stats)"

# --- the concurrency promises, per shard, through the coordinator
# a probe run in the worker's transaction: its isolation level and xid
sql "$port" -c "CREATE FUNCTION idem_probe(scope text) RETURNS text LANGUAGE plpgsql AS
		\$\$ BEGIN RETURN current_setting('transaction_isolation') || ' ' || coalesce(txid_current_if_assigned()::text, 'no-xid'); END \$\$" \
	-c "SELECT create_distributed_function('idem_probe(text)', 'scope', colocate_with => 'idem_keys', force_delegation => true)" >/dev/null
for lvl in "read committed" "repeatable read" "serializable"; do
	t=${lvl// /-}
	begin="BEGIN ISOLATION LEVEL $lvl"

	# two concurrent claims of one key: the second waits for the first
	sql "$port" -c "$begin" \
		-c "SELECT outcome FROM idem_claim(key => 'conc-$t', scope => '$sa')" \
		-c "SELECT pg_sleep(1.5)" \
		-c "SELECT idem_complete(key => 'conc-$t', scope => '$sa', response => '{\"n\": 1}')" \
		-c "COMMIT" >"$base/first.out" &
	first=$!
	sleep 0.5
	t0=$(date +%s%N)
	check "$lvl: a concurrent claim of the key waits, then replays" 'replay|{"n": 1}' "$port" \
		-c "$begin" -c "SELECT outcome, response FROM idem_claim(key => 'conc-$t', scope => '$sa')" -c "COMMIT"
	t1=$(date +%s%N)
	wait "$first" || true
	ok "$lvl: the first claim was claimed, the second waited for its commit" \
		[ "$(tr '\n' ' ' <"$base/first.out")" = "claimed   " -a $(((t1 - t0) / 1000000)) -ge 500 ]

	# (Citus delegates "SELECT f(...)" and "SELECT ... FROM f(...)", not a call inside an expression)
	check "$lvl: claiming twice in one transaction answers claimed, same attempt; replay once completed" "claimed|1
claimed|1

replay" "$port" \
		-c "$begin" \
		-c "SELECT outcome, attempt FROM idem_claim(key => 'twice-$t', scope => '$sb')" \
		-c "SELECT outcome, attempt FROM idem_claim(key => 'twice-$t', scope => '$sb')" \
		-c "SELECT idem_complete(key => 'twice-$t', scope => '$sb')" \
		-c "SELECT outcome FROM idem_claim(key => 'twice-$t', scope => '$sb')" \
		-c "COMMIT"

	check_match "$lvl: the probe runs in the worker's transaction of the claim and the business write, at the caller's isolation level" \
		"^$lvl [0-9]+\$" "$port" \
		-c "$begin" \
		-c "SELECT outcome FROM idem_claim(key => 'xid-$t', scope => '$sa')" \
		-c "INSERT INTO payments (scope, amount) VALUES ('$sa', 3)" \
		-c "SELECT idem_probe('$sa')" \
		-c "COMMIT"
	check "$lvl: a replay through the coordinator writes nothing on the worker (no xid)" "replay
$lvl no-xid" "$port" \
		-c "$begin" \
		-c "SELECT outcome FROM idem_claim(key => 'xid-$t', scope => '$sa')" \
		-c "SELECT idem_probe('$sa')" \
		-c "COMMIT"

	check "$lvl: a leased claim" "claimed|1" "$port" \
		-c "$begin" -c "SELECT outcome, attempt FROM idem_claim(key => 'lease-$t', scope => '$sb', lease => '1 second')" -c "COMMIT"
	sleep 1.1
	check "$lvl: its lease over, the next claim takes over" "claimed|2" "$port" \
		-c "$begin" -c "SELECT outcome, attempt FROM idem_claim(key => 'lease-$t', scope => '$sb', lease => '1 minute')" -c "COMMIT"
	check_match "$lvl: the stale attempt is refused" \
		"55000.*attempt 1 of idempotency key \"lease-$t\" is stale" "$port" \
		-c "\\set VERBOSITY verbose" -c "$begin" \
		-c "SELECT idem_complete(key => 'lease-$t', scope => '$sb', attempt => 1, response => '{\"by\": 1}')"
	check "$lvl: the current attempt completes, and its result replays" $'\nreplay|{"by": 2}' "$port" \
		-c "$begin" -c "SELECT idem_complete(key => 'lease-$t', scope => '$sb', attempt => 2, response => '{\"by\": 2}')" -c "COMMIT" \
		-c "SELECT outcome, response FROM idem_claim(key => 'lease-$t', scope => '$sb')"
	check "$lvl: another fingerprint is a mismatch" "claimed
mismatch|" "$port" \
		-c "$begin" -c "SELECT outcome FROM idem_claim(key => 'fp-$t', scope => '$sa', fingerprint => 'a')" -c "COMMIT" \
		-c "$begin" -c "SELECT outcome, response FROM idem_claim(key => 'fp-$t', scope => '$sa', fingerprint => 'b')" -c "COMMIT"

	check_match "$lvl: a failure after claims on both workers and business writes" "division by zero" "$port" \
		-c "$begin" \
		-c "SELECT outcome FROM idem_claim(key => 'fail-$t', scope => '$sa')" \
		-c "SELECT outcome FROM idem_claim(key => 'fail-$t', scope => '$sb')" \
		-c "INSERT INTO payments (scope, amount) VALUES ('$sa', 7), ('$sb', 7)" \
		-c "SELECT 1 / 0" -c "COMMIT"
	check "$lvl: rolls back both keys and both business writes" "0|0" "$port" \
		-c "SELECT (SELECT count(*) FROM idem_keys WHERE key = 'fail-$t'), (SELECT count(*) FROM payments WHERE amount = 7)"

	check "$lvl: idem_claim_many through the coordinator, on the scope's shard" "claimed,claimed,claimed
3
replay,replay,replay" "$port" \
		-c "$begin" \
		-c "SELECT string_agg(outcome::text, ',') FROM idem_claim_many(keys => ARRAY['m1-$t', 'm2-$t', 'm3-$t'], scope => '$sb')" \
		-c "SELECT idem_complete_many(keys => ARRAY['m1-$t', 'm2-$t', 'm3-$t'], scope => '$sb')" \
		-c "COMMIT" \
		-c "SELECT string_agg(outcome::text, ',') FROM idem_claim_many(keys => ARRAY['m1-$t', 'm2-$t', 'm3-$t'], scope => '$sb')"
done
check "the batches are in their scope's shard" "9" "$port" \
	-c "SELECT result FROM run_command_on_shards('idem_keys', \$\$SELECT count(*) FROM %s WHERE key LIKE 'm_-%%'\$\$)
		WHERE shardid = get_shard_id_for_distribution_column('idem_keys', '$sb')"

# --- a shard move while claims run
mv_scope=$(scope_on "$w1" 1)
mv_shard=$(sql "$port" -c "SELECT get_shard_id_for_distribution_column('idem_keys', '$mv_scope')")
rm -f "$base/stop-claims"
(
	i=0
	while [ -d "$base" ] && [ ! -f "$base/stop-claims" ]; do
		i=$((i + 1))
		if sql "$port" -c "\\set VERBOSITY verbose" -c "BEGIN" \
			-c "SELECT outcome FROM idem_claim(key => 'mv-$i', scope => '$mv_scope')" \
			-c "INSERT INTO payments (scope, amount) VALUES ('$mv_scope', 1000 + $i)" \
			-c "COMMIT" >"$base/mv.last" 2>&1; then
			echo "$i $(head -n 1 "$base/mv.last")"
		else
			echo "$i error $(tr '\n' ' ' <"$base/mv.last")"
		fi
	done
) >"$base/mv.out" &
claims=$!
sleep 2
# A transaction that claimed a key (holding the shard's metadata lock on the
# worker) and then writes the shard group through the coordinator, while the
# move waits for it there, is a distributed deadlock, which Citus resolves by
# cancelling the move: then the move is run again.
for try in 1 2 3; do
	out=$(sql "$port" -c "SELECT citus_move_shard_placement($mv_shard, '127.0.0.1', $w1, '127.0.0.1', $w2)") || true
	case "$out" in
	*"distributed deadlock"*) echo "# the move was cancelled as a distributed deadlock, try $try" ;;
	*) break ;;
	esac
done
[ -z "$out" ] || echo "$out" | sed 's/^/#   /'
ok "citus_move_shard_placement while claims run" [ -z "$out" ]
sleep 2
touch "$base/stop-claims"
wait "$claims" || true
n_ok=$(grep -c ' claimed$' "$base/mv.out" || true)
n_err=$(grep -c ' error ' "$base/mv.out" || true)
n_moved=$(grep -c ' error .*40001: the shard of table "idem_keys" for scope "[^"]*" has moved to another node' "$base/mv.out" || true)
echo "# shard move: $n_ok claims committed, $n_err failed during the move"
grep ' error ' "$base/mv.out" | head -n 3 | sed 's/^/#   /' || true
ok "claims ran before, during and after the move" [ "$n_ok" -ge 10 ]
ok "a claim that failed during the move was told to retry (40001), nothing else" [ "$n_err" = "$n_moved" ]
check "the shard is on the other worker now" "$w2" "$port" \
	-c "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $mv_shard"
grep ' claimed$' "$base/mv.out" | cut -d' ' -f1 | sed "s/.*/SELECT outcome FROM idem_claim(key => 'mv-&', scope => '$mv_scope');/" >"$base/mv-replay.sql"
chmod 644 "$base/mv-replay.sql"
got=$(sql "$port" -f "$base/mv-replay.sql" | grep -c '^replay$' || true)
ok "every committed key replays after the move ($got of $n_ok)" [ "$got" = "$n_ok" ]
sql "$port" -f "$base/mv-replay.sql" | grep -v '^replay$' | head -n 5 | sed 's/^/#   /' || true
check "no key lost, none twice; each with its business write" "t|t" "$port" \
	-c "SELECT count(*) = $n_ok AND count(*) = count(DISTINCT key),
		count(*) = (SELECT count(*) FROM payments WHERE scope = '$mv_scope' AND amount > 1000)
		FROM idem_keys WHERE scope = '$mv_scope' AND key LIKE 'mv-%'"
check "claims in the moved shard after the move" "claimed" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'after-move', scope => '$mv_scope')"

# --- a worker stops: its shards fail, the other worker's go on
s1=$(scope_on "$w1")
s2=$(scope_on "$w2")
scripts/citus-cluster.sh stop-node "$base" w2
check_match "a claim for a shard of the stopped worker fails with a clear error" \
	"127.0.0.1:$w2|connection" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'down', scope => '$s2')"
check "a claim for a shard of the other worker goes on" "claimed" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'down', scope => '$s1')"
scripts/citus-cluster.sh start-node "$base" w2
check "the worker back, its shards answer again" "claimed" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'down', scope => '$s2')"

# --- a third worker, and a rebalance onto it
w3=$((port + 3))
scripts/citus-cluster.sh add "$base" w3 "$w3" >/dev/null
before=$(sql "$port" -c "SELECT count(*) FROM idem_keys")
check "rebalance_table_shards() onto the third worker" "" "$port" \
	-c "SET client_min_messages = warning" -c "SELECT rebalance_table_shards()"
check_match "the third worker holds shards of idem_keys now" "^[1-9][0-9]*\$" "$port" \
	-c "SELECT count(*) FROM pg_dist_shard_placement p JOIN pg_dist_shard s USING (shardid)
		WHERE s.logicalrelid = 'idem_keys'::regclass AND p.nodeport = $w3"
check "no key lost in the rebalance" "$before" "$port" -c "SELECT count(*) FROM idem_keys"
for i in $(seq 1 40); do
	echo "SELECT outcome FROM idem_claim(key => 'spread', scope => 's$i');"
done >"$base/spread-replay.sql"
chmod 644 "$base/spread-replay.sql"
got=$(sql "$port" -f "$base/spread-replay.sql" | grep -c '^replay$' || true)
ok "the 40 keys spread over the shards still replay ($got)" [ "$got" = 40 ]
s3=$(scope_on "$w3")
check "a claim for a scope of the third worker lands there" "claimed
1" "$port" \
	-c "SELECT outcome FROM idem_claim(key => 'on-w3', scope => '$s3')" \
	-c "SELECT count(*) FROM idem_keys WHERE scope = '$s3' AND key = 'on-w3'"
check "idem_sweep() on the third worker sweeps its shards" "0" "$w3" -c "SELECT idem_sweep()"

echo "citus: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
