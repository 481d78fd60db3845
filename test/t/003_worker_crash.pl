# The worker survives a crash of any backend (the crash-restart cycle brings
# it back, sweeping), and no restart or crash loses a completed key.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
restart_after_crash = on
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	-- completed keys with their responses, and keys under a lease
	SELECT count(idem_complete('done-' || i, jsonb_build_object('n', i)))
	  FROM generate_series(1, 100) AS i,
	       LATERAL idem_claim('done-' || i, lease => '1 minute');
	SELECT count(*) FROM generate_series(1, 5) AS i,
	       LATERAL idem_claim('leased-' || i, lease => '1 hour');
});

# The exact contents of every live key, to compare after each event
my $keys_query = q{
	SELECT string_agg(format('%s|%s|%s|%s|%s', key, status, attempt, response, expires_at),
	                  ',' ORDER BY key)
	  FROM idem_keys};
my $keys = $node->safe_psql('postgres', $keys_query);

sub launcher_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'});
}

# Wait for a sweep of fresh expired keys, with a new tag each time
sub expect_sweeping
{
	my ($tag, $what) = @_;
	$node->safe_psql('postgres', qq{
		SELECT count(*) FROM generate_series(1, 10) AS i,
		       LATERAL idem_claim('$tag-' || i, ttl => '1 millisecond')});
	ok( $node->poll_query_until('postgres',
			qq{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE '$tag-%'}),
		$what);
}

expect_sweeping('before', 'the worker sweeps');
my $launcher = launcher_pid();
my $since = $node->safe_psql('postgres', 'SELECT counters_since FROM idem_stats');

# kill -9 of an ordinary backend: the postmaster restarts every process
my $victim = $node->background_psql('postgres');
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
my $crash_offset = -s $node->logfile;
kill 'KILL', $victim_pid;
$victim->quit;
$node->wait_for_log(qr/database system is ready to accept connections/, $crash_offset);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'idempotency launcher' AND pid <> $launcher"),
	'a new launcher runs after the crash-restart cycle');
ok($node->log_contains('terminated by signal 9'), 'the backend did crash');
is( $node->safe_psql('postgres', "SELECT counters_since > '$since' FROM idem_stats"),
	't', 'counters start again after the crash');
expect_sweeping('after-crash', 'the worker sweeps again after the crash');
is($node->safe_psql('postgres', $keys_query), $keys,
	'every completed and leased key survives the crash');

# kill -9 of a sweeper itself: the same cycle, and the worker is back too
$node->safe_psql('postgres', q{
	INSERT INTO idem_keys (scope, key, status, attempt, created_at, completed_at, expires_at)
	SELECT '', 'bulk-' || i, 'completed', 1, now(), now(), now() - interval '1 hour'
	  FROM generate_series(1, 200000) AS i;
	ALTER SYSTEM SET idempotency.sweep_batch_size = 5;
	SELECT pg_reload_conf();
});
$launcher = launcher_pid();
my $log_offset = -s $node->logfile;
# a sweeper runs for at most one interval: catch one that is alive
my $killed = 0;
for (my $try = 0; !$killed && $try < 100; $try++)
{
	my $sweeper = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency sweeper' LIMIT 1});
	$killed = kill('KILL', $sweeper) if $sweeper =~ /^\d+$/;
}
ok($killed, 'a sweeper was killed');
# the postmaster resets every backend: wait until it accepts connections
# again, since a client that connects in the middle can lose its pipe
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'idempotency launcher' AND pid <> $launcher"),
	'a new launcher runs after a sweeper crashed');
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET idempotency.sweep_batch_size;
	SELECT pg_reload_conf();
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'bulk-%'}),
	'the backlog is swept after the crash');
is($node->safe_psql('postgres', $keys_query), $keys,
	'every completed and leased key survives a crashed sweeper');

# A clean restart, then an immediate stop (crash recovery): keys survive
$node->restart;
expect_sweeping('after-restart', 'the worker sweeps after a restart');
is($node->safe_psql('postgres', $keys_query), $keys,
	'every completed and leased key survives a restart and a sweep');

$node->stop('immediate');
$node->start;
expect_sweeping('after-recovery', 'the worker sweeps after crash recovery');
is($node->safe_psql('postgres', $keys_query), $keys,
	'every completed and leased key survives crash recovery and a sweep');

$node->stop('fast');

done_testing();
