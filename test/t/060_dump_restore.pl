# pg_dump keeps the live keys: a restore must not forget what was already done.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'idempotency'");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE source');
$node->safe_psql('source', q{
	CREATE EXTENSION idempotency;
	BEGIN;
	SELECT outcome FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop');
	SELECT idem_complete('paid', '{"status": 201, "id": 7}', scope => 'shop');
	COMMIT;
	SELECT outcome FROM idem_claim('done-without-response');
	SELECT outcome FROM idem_claim('leased', lease => '1 hour');
	SELECT idem_checkpoint('leased', 'step-2', attempt => 1);
});

my $columns = q{scope, key, status, fingerprint, response, attempt, recovery_point,
	created_at, completed_at, expires_at, locked_until, lease};
my $before = $node->safe_psql('source',
	"SELECT $columns FROM idem_keys ORDER BY scope, key");

# custom-format dump, restored into a new database
my $dump = $node->basedir . '/source.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('source') ],
	'pg_dump of a database with keys');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');

my $after = $node->safe_psql('restored',
	"SELECT $columns FROM idem_keys ORDER BY scope, key");
is($after, $before, 'every live key and its state survive dump and restore');
is($node->safe_psql('restored', 'SELECT count(*) FROM idem_keys'), '3',
	'three keys restored, none twice');

# the restored keys behave as before
is( $node->safe_psql('restored',
		q{SELECT outcome || ' ' || response::text FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop')}),
	'replay {"id": 7, "status": 201}',
	'a retry after the restore replays the stored response');
is( $node->safe_psql('restored',
		q{SELECT outcome FROM idem_claim('paid', fingerprint => 'fp-2', scope => 'shop')}),
	'mismatch', 'the fingerprint survives the restore');
is( $node->safe_psql('restored', q{SELECT outcome FROM idem_claim('leased')}),
	'in_progress', 'a leased key is still in progress after the restore');

# a plain-format dump replayed with psql
my $plain = $node->basedir . '/source.sql';
$node->command_ok([ 'pg_dump', '-f', $plain, '-d', $node->connstr('source') ],
	'plain pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored_plain');
$node->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $plain, '-d', $node->connstr('restored_plain') ],
	'plain dump restored with psql');
is( $node->safe_psql('restored_plain',
		"SELECT $columns FROM idem_keys ORDER BY scope, key"),
	$before, 'the plain dump keeps every key too');

$node->stop;
done_testing();
