# idempotency.sweep_rate_limit: the worker deletes no more expired keys per
# second than the limit, by waiting between batches, and still sweeps them
# all.  The time asserted is a lower bound, which a slow machine only makes
# easier to meet.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('rate');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1h'
idempotency.sweep_batch_size = 50
idempotency.sweep_rate_limit = 500
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');

is( $node->safe_psql('postgres', q{
	SELECT setting, boot_val, context FROM pg_settings
	 WHERE name = 'idempotency.sweep_rate_limit'}),
	'500|100000|sighup', 'the limit is set, its default is 100000 keys per second');

# 2000 expired keys; at 500 keys per second they take at least 3.9 seconds
# (the first batch of a run does not wait)
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 2000) AS i,
	       LATERAL idem_claim('exp-' || i, ttl => '1 millisecond');
	SELECT count(*) FROM generate_series(1, 5) AS i, LATERAL idem_claim('live-' || i);
});
my $start = time();
$node->append_conf('postgresql.conf', q{idempotency.sweep_interval = '1s'});
$node->reload;

# Between batches the sweeper waits, outside any transaction
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity
	 WHERE backend_type = 'idempotency sweeper'
	   AND wait_event_type = 'Extension' AND state = 'idle'
	   AND backend_xid IS NULL}),
	'the sweeper is seen waiting between batches');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'exp-%'}),
	'every expired key is swept');
my $elapsed = time() - $start;
cmp_ok($elapsed, '>=', 3, 'sweeping 2000 keys at 500 per second took at least 3 seconds');
is($node->safe_psql('postgres', q{SELECT count(*) FROM idem_keys WHERE key LIKE 'live-%'}),
	'5', 'live keys stay');

# 0 lifts the limit; a new backlog is swept, with no wait
$node->append_conf('postgresql.conf', q{idempotency.sweep_rate_limit = 0});
$node->reload;
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 2000) AS i,
	       LATERAL idem_claim('more-' || i, ttl => '1 millisecond');
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'more-%'}),
	'without a limit, the backlog is swept');

# a negative limit is refused
$node->append_conf('postgresql.conf', q{idempotency.sweep_rate_limit = -1});
$node->reload;
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_file_settings
	 WHERE name = 'idempotency.sweep_rate_limit' AND setting = '-1' AND error IS NOT NULL}),
	'a negative limit is refused');
is($node->safe_psql('postgres', 'SHOW idempotency.sweep_rate_limit'), '0',
	'the limit in force is unchanged');

$node->stop;
done_testing();
