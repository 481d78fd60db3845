# On a hot standby: look-ups and replays work, claims that must write are refused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'idempotency'");
$primary->start;
$primary->backup('base');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;

$primary->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	BEGIN;
	SELECT outcome FROM idem_claim('k-1');
	SELECT idem_complete('k-1', '{"answer": 42}');
	COMMIT;
	SELECT outcome FROM idem_claim('k-2', lease => '1 hour');
});
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', q{SELECT status || ' ' || response::text FROM idem_lookup('k-1')}),
	'completed {"answer": 42}', 'idem_lookup works on the standby');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM idem_lookup('absent')}),
	'0', 'an absent key is no row on the standby');
is($standby->safe_psql('postgres', q{SELECT outcome || ' ' || response::text FROM idem_claim('k-1')}),
	'replay {"answer": 42}', 'a replay is answered by the standby');
is($standby->safe_psql('postgres', q{SELECT outcome FROM idem_claim('k-2')}),
	'in_progress', 'a key under a lease is in progress on the standby');

my ($rc, $out, $err) = $standby->psql('postgres',
	q{SELECT outcome FROM idem_claim('k-3')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($rc, 0, 'a claim that must write fails on the standby');
like($err, qr/25006: cannot execute idem_claim\(\) in a read-only transaction/,
	'with read_only_sql_transaction');

$standby->stop;
$primary->stop;
done_testing();
