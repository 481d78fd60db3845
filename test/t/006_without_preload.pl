# Without shared_preload_libraries the extension works fully: idem_sweep()
# expires keys, idem_stats shows NULL counters beside the live key counts,
# and idem_start_worker() starts the background worker without a restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->append_conf('postgresql.conf', q{
idempotency.sweep_interval = '1s'
restart_after_crash = on
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'idempotency%'}),
	'0', 'no worker runs without preloading');

# Claims work, and are not counted
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 3) AS i, LATERAL idem_claim('live-' || i);
	SELECT count(*) FROM generate_series(1, 4) AS i,
	       LATERAL idem_claim('exp-' || i, ttl => '1 millisecond');
	SELECT outcome FROM idem_claim('busy', lease => '1 hour');
	SELECT pg_sleep(0.01);
});
is( $node->safe_psql('postgres', q{
	SELECT claims IS NULL AND replays IS NULL AND in_progress_answers IS NULL
	   AND mismatches IS NULL AND takeovers IS NULL AND completions IS NULL
	   AND releases IS NULL AND keys_swept IS NULL AND counters_since IS NULL,
	       sweeper_runs IS NULL AND sweeper_keys IS NULL AND last_sweep_at IS NULL
	   AND last_sweep_keys IS NULL AND last_sweep_error IS NULL
	   AND last_sweep_error_at IS NULL,
	       keys_in_progress, keys_completed, keys_expired
	  FROM idem_stats}),
	't|t|1|3|4', 'idem_stats: NULL counters, live key counts');

# idem_sweep() does the expiry
is($node->safe_psql('postgres', 'SELECT idem_sweep()'), '4', 'idem_sweep() deletes the expired keys');
is($node->safe_psql('postgres', 'SELECT keys_expired FROM idem_stats'), '0', 'none is left');

# Starting the worker without a restart
is($node->safe_psql('postgres', 'SELECT idem_start_worker()'), 't', 'idem_start_worker() starts it');
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	'the launcher runs');
is($node->safe_psql('postgres', 'SELECT idem_start_worker()'), 'f',
	'a second call does not start a second launcher');
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 5) AS i,
	       LATERAL idem_claim('late-' || i, ttl => '1 millisecond')});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'late-%'}),
	'the started worker sweeps');
is( $node->safe_psql('postgres', 'SELECT sweeper_runs IS NULL, keys_in_progress, keys_completed FROM idem_stats'),
	't|1|3', 'its runs are not recorded without preloading, and live keys stay');

# The started launcher comes back after a crash of a backend too
my $launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'});
my $victim = $node->background_psql('postgres');
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $victim_pid;
$victim->quit;
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'idempotency launcher' AND pid <> $launcher"),
	'the started launcher is back after the crash-restart cycle');

# Stopped by pg_terminate_backend(), started again by idem_start_worker()
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	 WHERE backend_type = 'idempotency launcher'});
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	'pg_terminate_backend() stops the launcher');
ok( $node->poll_query_until('postgres', 'SELECT idem_start_worker()'),
	'idem_start_worker() starts it again');
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'idempotency launcher'}),
	'one launcher runs');

# Only privileged roles may start it
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT idem_start_worker()',
	extra_params => ['-U', 'app']);
like($err, qr/permission denied for function idem_start_worker/,
	'PUBLIC may not start the worker');

$node->stop('fast');

done_testing();
