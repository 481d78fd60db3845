# The background worker removes expired keys in every database where the
# extension is created, with no configuration: two databases at once, a
# database created while the server runs, and a database without the
# extension, which is left alone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('expiry');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
idempotency.sweep_batch_size = 7
});
$node->start;

# The launcher runs, connected to no database
is( $node->safe_psql('postgres', q{
	SELECT count(*), count(datname) FROM pg_stat_activity
	 WHERE backend_type = 'idempotency launcher'}),
	'1|0', 'one launcher, connected to no database');

# Claim keys that expire at once, and keys that stay
sub add_keys
{
	my ($db, $prefix, $expiring, $staying) = @_;
	$node->safe_psql($db, qq{
		SELECT count(*) FROM generate_series(1, $expiring) AS i,
		       LATERAL idem_claim('$prefix-exp-' || i, ttl => '1 millisecond');
		SELECT count(*) FROM generate_series(1, $staying) AS i,
		       LATERAL idem_claim('$prefix-live-' || i);
		SELECT idem_complete('$prefix-resp', '{"kept": true}')
		  FROM idem_claim('$prefix-resp', lease => '1 minute');
	});
}

# Two databases, swept at the same time (more keys than one batch)
for my $db ('one', 'two')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION idempotency');
}
add_keys('one', 'a', 40, 5);
add_keys('two', 'b', 25, 3);

for my $db ('one', 'two')
{
	ok( $node->poll_query_until($db,
			q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE '%-exp-%'}),
		"expired keys of database $db are swept");
}
is($node->safe_psql('one', q{SELECT count(*) FROM idem_keys WHERE key LIKE 'a-live-%'}),
	'5', 'live keys of database one stay');
is($node->safe_psql('two', q{SELECT count(*) FROM idem_keys WHERE key LIKE 'b-live-%'}),
	'3', 'live keys of database two stay');
is($node->safe_psql('one', q{SELECT response FROM idem_keys WHERE key = 'a-resp'}),
	'{"kept": true}', 'a stored response stays');

# Each database shows its own sweeper's runs
is( $node->safe_psql('one', q{
	SELECT sweeper_runs > 0, sweeper_keys >= 40, last_sweep_at IS NOT NULL,
	       last_sweep_error IS NULL, keys_expired, keys_completed
	  FROM idem_stats}),
	't|t|t|t|0|6', 'idem_stats shows the sweeper of database one');
is( $node->safe_psql('two', q{
	SELECT sweeper_runs > 0, sweeper_keys >= 25, keys_completed FROM idem_stats}),
	't|t|4', 'idem_stats shows the sweeper of database two');
is($node->safe_psql('one', 'SELECT keys_swept >= 65 FROM idem_stats'),
	't', 'keys_swept counts the keys of both databases');

# A database created later, and an extension created later, are found
$node->safe_psql('postgres', 'CREATE DATABASE three');
$node->safe_psql('three', 'CREATE TABLE t (i int)');
$node->safe_psql('three', 'CREATE EXTENSION idempotency');
add_keys('three', 'c', 30, 2);
ok( $node->poll_query_until('three',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE '%-exp-%'}),
	'a database created while the server runs is swept');
is($node->safe_psql('three', q{SELECT count(*) FROM idem_keys}),
	'3', 'its live keys stay');

# A database without the extension is left alone, even with a table of the
# same name and shape full of expired rows
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql('plain', q{
	CREATE TABLE idem_keys (scope text, key text, status text,
	                        expires_at timestamptz, locked_until timestamptz);
	CREATE INDEX ON idem_keys (expires_at);
	INSERT INTO idem_keys SELECT '', 'k' || i, 'completed', now() - interval '1 day', NULL
	  FROM generate_series(1, 20) AS i;
});
# wait for two more runs in database one: a whole round has visited plain
my $runs = $node->safe_psql('one', 'SELECT sweeper_runs FROM idem_stats');
ok( $node->poll_query_until('one',
		"SELECT sweeper_runs >= $runs + 2 FROM idem_stats"),
	'the worker keeps running rounds');
is($node->safe_psql('plain', 'SELECT count(*) FROM idem_keys'),
	'20', 'a database without the extension keeps its rows');
is( $node->safe_psql('plain',
		q{SELECT count(*) FROM pg_extension WHERE extname = 'idempotency'}),
	'0', 'and gets no extension');

# Templates are never visited: CREATE DATABASE from template1 keeps working
for my $i (1 .. 3)
{
	$node->safe_psql('postgres', "CREATE DATABASE copy$i TEMPLATE template1");
}
pass('CREATE DATABASE from template1 works while the worker runs');

# The sweeper shows in pg_stat_activity with its own backend_type while it
# works: give it a backlog of tens of thousands of batches, which keeps it
# busy for whole rounds (a round is cut after one interval), so that the
# poll below, every 0.1 s, cannot miss it
$node->safe_psql('one', q{
	INSERT INTO idem_keys (scope, key, status, attempt, created_at, completed_at, expires_at)
	SELECT '', 'bulk-' || i, 'completed', 1, now(), now(), now() - interval '1 hour'
	  FROM generate_series(1, 200000) AS i;
});
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity
	 WHERE backend_type = 'idempotency sweeper' AND datname = 'one'}),
	'a sweeper shows in pg_stat_activity');
ok( $node->poll_query_until('one',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'bulk-%'}),
	'a backlog of many batches is swept');

# The server stops promptly with the worker running
$node->stop('fast');
ok(!$node->log_contains('could not start a sweeper'), 'no sweeper failed to start');
ok(!$node->log_contains('ERROR'), 'no error in the log');

done_testing();
