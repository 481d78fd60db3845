# A sweep running while claims on expiring keys are in flight loses nothing
# and blocks nothing beyond one batch.  First step by step, with the sweep
# that the worker runs (idem_sweep() in a transaction is one batch), then
# the worker itself under a load of claims.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('beside');
$node->init;
# the worker stays out of the way until the second part
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1h'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');

# a regression that made a sweep or a claim wait would fail here, not hang
my %opts = (extra_params => ['-v', 'VERBOSITY=terse']);
my $s1 = $node->background_psql('postgres', %opts);
my $s2 = $node->background_psql('postgres', %opts);
my $s3 = $node->background_psql('postgres', %opts);
$_->query_safe(q{SET lock_timeout = '60s'}) for ($s1, $s2, $s3);
my $s1_pid = $s1->query_safe('SELECT pg_backend_pid()');
my $s2_pid = $s2->query_safe('SELECT pg_backend_pid()');
my $s3_pid = $s3->query_safe('SELECT pg_backend_pid()');

sub row_of
{
	my ($key) = @_;
	return $node->safe_psql('postgres',
		"SELECT status, attempt FROM idem_keys WHERE key = '$key'");
}

# 1. A claim in flight whose key has already expired by the clock: the sweep
# does not see it and does not wait for it
$s1->query_safe('BEGIN');
is($s1->query_safe(q{SELECT outcome FROM idem_claim('a', ttl => '1 millisecond')}),
	'claimed', 'a key claimed in an open transaction');
$s1->query_safe('SELECT pg_sleep(0.01)');
is($s2->query_safe('SELECT idem_sweep()'), '0',
	'the sweep passes over a claim in flight without waiting');
$s1->query_safe('COMMIT');
is(row_of('a'), 'completed|1', 'the claim commits and its key is there');
is($s2->query_safe('SELECT idem_sweep()'), '1',
	'committed, and expired, the key goes with the next sweep');

# 2. A claim that replaces an expired row, in flight: the sweep skips the row
# it is changing, without waiting
$node->safe_psql('postgres', q{
	SELECT outcome FROM idem_claim('b', ttl => '1 millisecond');
	SELECT pg_sleep(0.01);
});
$s1->query_safe('BEGIN');
is($s1->query_safe(q{SELECT outcome FROM idem_claim('b')}),
	'claimed', 'an expired key claimed afresh in an open transaction');
is($s2->query_safe('SELECT idem_sweep()'), '0',
	'the sweep skips the row being replaced, without waiting');
$s1->query_safe('COMMIT');
is($node->safe_psql('postgres', q{SELECT status, attempt, expires_at > now() FROM idem_lookup('b')}),
	'completed|1|t', 'the new claim is live after the sweep');

# 3. A batch in flight: a claim of a key in the batch waits for that batch
# only; a claim of any other key does not wait at all
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 4) AS i, LATERAL idem_claim('c' || i);
	UPDATE idem_keys SET expires_at = now() - interval '1 hour' * (5 - substr(key, 2)::int)
	 WHERE key LIKE 'c_';
});
$s2->query_safe('BEGIN');
is($s2->query_safe('SELECT idem_sweep(2)'), '2', 'a batch of two keys, not committed');
is($s3->query_safe(q{SELECT outcome FROM idem_claim('c3')}), 'claimed',
	'a key outside the batch is claimed without waiting');
$s1->query_until(qr/claiming/, qq{\\echo claiming\nSELECT outcome FROM idem_claim('c1');\n});
ok( $node->poll_query_until('postgres',
		"SELECT pg_blocking_pids($s1_pid) = ARRAY[$s2_pid]"),
	'a key inside the batch waits for the batch');
$s2->query_safe('COMMIT');
is($s1->query_safe('SELECT 1'), "claimed\n1", 'the batch committed: the key is claimed afresh');
is(row_of('c1'), 'completed|1', 'the key swept and claimed again is there');
is(row_of('c2'), '', 'the other key of the batch is gone');
is(row_of('c3'), 'completed|1', 'the key claimed beside the batch is there');
is( $node->safe_psql('postgres', q{SELECT expires_at < now() FROM idem_keys WHERE key = 'c4'}),
	't', 'an expired key beyond the batch waits for the next one');

# 4. A sweep that meets a claim which waits for the same key: nothing lost
$s1->query_safe('BEGIN');
is($s1->query_safe(q{SELECT outcome FROM idem_claim('c4')}), 'claimed',
	'the last expired key claimed in an open transaction');
$s3->query_until(qr/claiming/, qq{\\echo claiming\nSELECT outcome FROM idem_claim('c4');\n});
ok( $node->poll_query_until('postgres',
		"SELECT pg_blocking_pids($s3_pid) = ARRAY[$s1_pid]"),
	'a second claim of the key waits for the first');
is($s2->query_safe('SELECT idem_sweep()'), '0',
	'the sweep neither waits nor removes the key');
$s1->query_safe('COMMIT');
is($s3->query_safe('SELECT 1'), "replay\n1", 'the waiting claim replays the first one');

$_->quit for ($s1, $s2, $s3);

# 5. The worker itself, under a load of claims on keys that expire within
# milliseconds: every claim is answered claimed or replay, a claimed key is
# still its transaction's (expired or not) until the transaction ends, which
# completes it, and the worker sweeps meanwhile.  (A claim of a key that has
# no row writes it at commit; one that replaces an expired row writes at
# once, and the sweep must leave that row alone.)
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET idempotency.sweep_interval = '1s';
	ALTER SYSTEM SET idempotency.sweep_batch_size = 5;
	SELECT pg_reload_conf();
});
my $before = $node->safe_psql('postgres',
	'SELECT claims + replays, keys_swept, sweeper_runs FROM idem_stats');
my ($answers0, $swept0, $runs0) = split /\|/, $before;

$node->pgbench(
	'--no-vacuum --client=4 --transactions=1000',
	0,
	[qr{processed: 4000/4000}],
	[qr{^$}],
	'claims beside the worker',
	{
		'005_claims' => q{
\set k random(1, 40)
BEGIN;
SELECT (outcome = 'claimed')::int AS mine
  FROM idem_claim('load-' || :k, ttl => '5 milliseconds') \gset
\if :mine
SELECT pg_sleep(0.002);
SELECT 1 / count(*) AS still_there FROM idem_lookup('load-' || :k)
 WHERE status = 'in_progress';
\endif
END;
}
	});

my ($answers1, $swept1, $runs1) = split /\|/, $node->safe_psql('postgres',
	'SELECT claims + replays, keys_swept, sweeper_runs FROM idem_stats');
is($answers1 - $answers0, 4000, 'every claim was answered claimed or replay');
cmp_ok($runs1, '>', $runs0, 'the worker swept during the load');
note 'keys swept during the load: ' . ($swept1 - $swept0);
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM idem_keys WHERE key LIKE 'load-%' AND status <> 'completed'}),
	'0', 'every claimed key was completed');
is($node->safe_psql('postgres', 'SELECT last_sweep_error FROM idem_stats'),
	'', 'the worker met no error');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'load-%'}),
	'the worker sweeps every key once the load is over');

$node->stop('fast');

done_testing();
