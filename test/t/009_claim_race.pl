# Many clients racing for the same new keys: each key's effect happens once.
#
# A claim of a new key reads it, takes its lock and reads it again only if a
# holder of the key's lock committed in between (or, with prepared
# transactions enabled, always).  Here eight clients take keys from one
# sequence, six transactions to a key, so that most claims race with a claim
# of the same key: some wait for the winner's commit, some come just after it.  A claim
# that trusted its first read after another client committed the key would
# answer "claimed" a second time, and the effect would happen twice.  The
# load runs without prepared transactions (the claim may read once), then
# with them (it always reads twice), and a prepared claim survives a restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('race');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1h'
max_prepared_transactions = 0
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION idempotency;
	CREATE TABLE effects (key text NOT NULL, prepared_xacts int NOT NULL);
	CREATE SEQUENCE race;
});

# One transaction: claim a key and make the effect if claimed.  Six
# transactions in a row, from whichever clients, share a key; the key is
# computed once (MATERIALIZED).
my $script = q{
BEGIN;
WITH s AS MATERIALIZED (SELECT 'race-' || nextval('race') / 6 AS key)
INSERT INTO effects (key, prepared_xacts)
SELECT s.key, current_setting('max_prepared_transactions')::int
  FROM s, LATERAL idem_claim(key => s.key) AS c
 WHERE c.outcome = 'claimed';
END;
};

# Run the load; check that every key's effect happened exactly once
sub race
{
	my ($name) = @_;
	my ($claims0, $replays0) = split /\|/,
	  $node->safe_psql('postgres', 'SELECT claims, replays FROM idem_stats');

	$node->pgbench('--no-vacuum --client=8 --jobs=2 --transactions=1500',
		0, [qr{processed: 12000/12000}], [qr{^$}], "racing claims, $name",
		{ "009_race_$name" => $script });

	my ($claims1, $replays1) = split /\|/,
	  $node->safe_psql('postgres', 'SELECT claims, replays FROM idem_stats');
	my $prepared = $name eq 'two-phase' ? 10 : 0;
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM (SELECT key FROM effects
			 WHERE prepared_xacts = $prepared GROUP BY key HAVING count(*) > 1) d}),
		'0', "$name: no key's effect happened twice");
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM effects e
			 WHERE prepared_xacts = $prepared
			   AND NOT EXISTS (SELECT FROM idem_keys k
							    WHERE k.key = e.key AND k.status = 'completed')}),
		'0', "$name: every effect has its completed key");
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM effects WHERE prepared_xacts = $prepared}),
		$claims1 - $claims0, "$name: one effect per claimed answer");
	is($claims1 - $claims0 + $replays1 - $replays0, 12000,
		"$name: every other claim was a replay");
	# the race must have been run: most claims met a key already claimed
	cmp_ok($replays1 - $replays0, '>', 6000, "$name: the clients raced");
	note "$name: " . ($claims1 - $claims0) . ' claimed, '
	  . ($replays1 - $replays0) . ' replays';
}

race('one-phase');

# With prepared transactions enabled, a prepared claim is committed by COMMIT
# PREPARED, which may come from any session, even after a restart
$node->append_conf('postgresql.conf', 'max_prepared_transactions = 10');
$node->restart;
race('two-phase');

$node->safe_psql('postgres', q{
	BEGIN;
	SELECT outcome FROM idem_claim('prepared-1');
	PREPARE TRANSACTION 'claim-1';
});
$node->restart;
is( $node->safe_psql('postgres',
		q{SELECT outcome FROM idem_claim('prepared-1', wait => false)}),
	'in_progress', 'a prepared claim still holds its key after a restart');
my $waiter = $node->background_psql('postgres');
$waiter->query_until(qr/claiming/, qq{\\echo claiming\nSELECT outcome FROM idem_claim('prepared-1');\n});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE wait_event_type = 'Lock' AND query LIKE '%prepared-1%'}),
	'a claim waits for the prepared transaction');
$node->safe_psql('postgres', q{COMMIT PREPARED 'claim-1'});
is($waiter->query_safe('SELECT 1'), "replay\n1",
	'after COMMIT PREPARED, the waiting claim replays');
$waiter->quit;
is( $node->safe_psql('postgres',
		q{SELECT outcome FROM idem_claim('prepared-1')}),
	'replay', 'a later claim replays too');

$node->stop('fast');

done_testing();
