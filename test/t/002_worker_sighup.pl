# The launcher reloads its settings on SIGHUP: a new sweep_interval applies
# without a restart, and the launcher stays the same process.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sighup');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1h'
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');
my $launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'});
like($launcher, qr/^\d+$/, 'the launcher runs');

$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 10) AS i,
	       LATERAL idem_claim('k' || i, ttl => '1 millisecond');
	SELECT pg_sleep(0.01);
});
is($node->safe_psql('postgres', 'SELECT keys_expired FROM idem_stats'),
	'10', 'ten keys have expired');

# With an interval of an hour, the first round is an hour away: nothing is
# swept however long we look (two seconds here)
sleep(2);
is( $node->safe_psql('postgres',
		'SELECT keys_expired, sweeper_runs FROM idem_stats'),
	'10|0', 'no sweep within the interval');

# A shorter interval, by reload: the round is due at once
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET idempotency.sweep_interval = '1s';
	SELECT pg_reload_conf();
});
ok( $node->poll_query_until('postgres',
		'SELECT keys_expired = 0 AND sweeper_runs > 0 FROM idem_stats'),
	'after SIGHUP the new interval applies');
is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	$launcher, 'the launcher reloaded, it was not restarted');

$node->stop('fast');
ok(!$node->log_contains('ERROR'), 'no error in the log');

done_testing();
