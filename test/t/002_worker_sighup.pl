# The launcher reloads its settings on SIGHUP: a new sweep_interval applies
# without a restart, and the launcher stays the same process, also when
# reloads come while it waits for a sweeper.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

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

# Reloads while the launcher waits for sweepers: slow sweepers (a low rate
# limit) in two databases, and a reload every 50 ms.  The launcher once kept
# its list of databases in memory freed at the end of a transaction; a reload
# could reuse that memory and crash it.
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION idempotency');
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET idempotency.sweep_rate_limit = 2000;
	ALTER SYSTEM SET idempotency.sweep_batch_size = 100;
	SELECT pg_reload_conf();
});
for my $round (1 .. 3)
{
	for my $db ('postgres', 'other')
	{
		$node->safe_psql($db, qq{
			SELECT count(*) FROM generate_series(1, 600) AS i,
			       LATERAL idem_claim('r$round-' || i, ttl => '1 millisecond');
		});
	}
	for (1 .. 40)
	{
		$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
		usleep(50_000);
	}
}
for my $db ('postgres', 'other')
{
	ok( $node->poll_query_until($db, 'SELECT count(*) = 0 FROM idem_keys'),
		"every key of database $db is swept in spite of the reloads");
}
is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	$launcher, 'the launcher survived reloads during sweeper runs');

$node->stop('fast');
ok(!$node->log_contains('ERROR'), 'no error in the log');
ok(!$node->log_contains('terminated by signal'), 'no process crashed');

done_testing();
