# An error in a sweeper is logged and shown in idem_stats; the worker does
# not crash or loop, and sweeps again once the cause is gone.  SIGTERM stops
# the launcher cleanly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('errors');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	SELECT count(*) FROM generate_series(1, 3) AS i, LATERAL idem_claim('live-' || i);
});
my $launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'});

# Without its index on expires_at the sweep refuses to scan the table
$node->safe_psql('postgres', q{
	DROP INDEX idem_keys_expires_at_idx;
	SELECT count(*) FROM generate_series(1, 5) AS i,
	       LATERAL idem_claim('exp-' || i, ttl => '1 millisecond');
});
ok( $node->poll_query_until('postgres',
		q{SELECT last_sweep_error LIKE '%has no btree index on expires_at%' FROM idem_stats}),
	'the error is shown in idem_stats');
my $runs = $node->safe_psql('postgres', 'SELECT sweeper_runs FROM idem_stats');
ok( $node->poll_query_until('postgres', "SELECT sweeper_runs > $runs FROM idem_stats"),
	'the worker keeps running rounds');
is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	$launcher, 'the launcher did not restart');
is($node->safe_psql('postgres', q{SELECT count(*) FROM idem_keys WHERE key LIKE 'exp-%'}),
	'5', 'nothing was swept');
ok($node->log_contains('ERROR:  table "idem_keys" has no btree index on expires_at'),
	'the error is in the server log');

# The cause gone, the worker sweeps; the last error stays, older than the run
$node->safe_psql('postgres',
	'CREATE INDEX idem_keys_expires_at_idx ON idem_keys (expires_at)');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'exp-%'}),
	'the worker sweeps again');
ok( $node->poll_query_until('postgres',
		q{SELECT last_sweep_at > last_sweep_error_at AND last_sweep_error IS NOT NULL
		    FROM idem_stats}),
	'the last error stays, older than the last run');
is($node->safe_psql('postgres', q{SELECT count(*) FROM idem_keys}), '3', 'live keys stay');

# SIGTERM stops the launcher for good (until the next start or
# idem_start_worker()), without a crash of the server
$node->safe_psql('postgres', qq{SELECT pg_terminate_backend($launcher)});
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	'SIGTERM stops the launcher');
ok(!$node->log_contains('terminating any other active server processes'),
	'no crash-restart cycle');
is($node->safe_psql('postgres', 'SELECT idem_start_worker()'), 't',
	'idem_start_worker() starts it again');
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	'the launcher runs again');

$node->stop('fast');

done_testing();
