# The worker never makes DROP DATABASE, DROP EXTENSION or ALTER EXTENSION
# wait or fail, even while a sweeper is working in that database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A sweeper may run for one interval before it lets the next database have
# its turn; DROP DATABASE waits only 5 seconds for other sessions to leave.
# With an interval longer than that, only giving way lets DROP DATABASE
# through.  Batches of one key make a backlog last.
my $node = PostgreSQL::Test::Cluster->new('drop');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '6s'
idempotency.sweep_batch_size = 1
});
$node->start;

# A database with a backlog of expired keys that takes many batches
sub backlog_db
{
	my ($db) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, q{
		CREATE EXTENSION idempotency;
		INSERT INTO idem_keys (scope, key, status, attempt, created_at, completed_at, expires_at)
		SELECT '', 'bulk-' || i, 'completed', 1, now(), now(), now() - interval '1 hour'
		  FROM generate_series(1, 200000) AS i;
		SELECT count(*) FROM generate_series(1, 5) AS i, LATERAL idem_claim('live-' || i);
	});
}

# Wait until a sweeper works in a database
sub sweeper_in
{
	my ($db) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT count(*) > 0 FROM pg_stat_activity
		 WHERE backend_type = 'idempotency sweeper' AND datname = '$db'});
}

backlog_db('alpha');
backlog_db('beta');
backlog_db('gamma');

# The launcher visits databases in pg_database's order, one after the other.
# CREATE DATABASE from a template waits for the template's sessions to leave
# as DROP DATABASE does, and leaves the database there to look at: the
# sweeper gave way in the middle of its backlog.
ok(sweeper_in('alpha'), 'a sweeper works in database alpha');
my ($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE alpha_copy TEMPLATE alpha');
is($ret, 0, 'CREATE DATABASE from a database a sweeper works in succeeds');
is($node->safe_psql('alpha', 'SELECT keys_expired > 0 FROM idem_stats'),
	't', 'the sweeper gave way before the end of its backlog');
$node->safe_psql('postgres', 'DROP DATABASE alpha_copy');

ok(sweeper_in('beta'), 'a sweeper works in database beta');
# what an update script does: change the table, and the extension's members
($ret, $out, $err) = $node->psql('beta', q{
	BEGIN;
	ALTER EXTENSION idempotency UPDATE;
	ALTER TABLE idem_keys ADD COLUMN note text;
	ALTER EXTENSION idempotency DROP VIEW idem_stats;
	ALTER EXTENSION idempotency ADD VIEW idem_stats;
	COMMIT;
});
is($ret, 0, 'ALTER EXTENSION and ALTER TABLE succeed while a sweeper works there');
unlike($err, qr/ERROR/, 'ALTER EXTENSION reports no error');

ok(sweeper_in('gamma'), 'a sweeper works in database gamma');
($ret, $out, $err) = $node->psql('gamma', 'DROP EXTENSION idempotency');
is($ret, 0, 'DROP EXTENSION succeeds while a sweeper works there');
is($err, '', 'DROP EXTENSION reports nothing');

# Next round: the sweeper is back in alpha, which is dropped under it
ok(sweeper_in('alpha'), 'a sweeper works in database alpha again');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE alpha');
is($ret, 0, 'DROP DATABASE succeeds while a sweeper works there');
is($err, '', 'DROP DATABASE reports nothing');

# The worker carries on: the altered extension is swept, and a re-created
# extension is swept too
$node->safe_psql('gamma', q{
	CREATE EXTENSION idempotency;
	SELECT count(*) FROM generate_series(1, 10) AS i,
	       LATERAL idem_claim('again-' || i, ttl => '1 millisecond');
});
ok( $node->poll_query_until('gamma',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'again-%'}),
	'a re-created extension is swept');
ok( $node->poll_query_until('beta',
		q{SELECT count(*) = 0 FROM idem_keys WHERE key LIKE 'bulk-%'}),
	'an altered extension is swept');
is($node->safe_psql('beta', 'SELECT count(*) FROM idem_keys'),
	'5', 'and keeps its live keys');

# Dropping a database repeatedly, whatever the worker is doing
my $failures = 0;
for my $i (1 .. 2)
{
	backlog_db("cycle$i");
	sweeper_in("cycle$i");
	($ret, $out, $err) = $node->psql('postgres', "DROP DATABASE cycle$i");
	$failures++ if $ret != 0;
}
is($failures, 0, 'DROP DATABASE never fails');
ok(!$node->log_contains('is being accessed by other users'),
	'no DROP DATABASE found other sessions in the database');

$node->stop('fast');

done_testing();
