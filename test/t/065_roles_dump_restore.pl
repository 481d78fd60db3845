# Keys belong to roles, live and after pg_dump and pg_restore into another
# cluster, where every role has another OID: a role reaches (claims, replays,
# completes, checkpoints, releases, looks up, forgets) only its own keys and
# those of roles whose privileges it has, and a restore grants no role any
# access to the keys table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $old = PostgreSQL::Test::Cluster->new('source');
$old->init;
$old->append_conf('postgresql.conf', "shared_preload_libraries = 'idempotency'");
$old->start;

my $roles = q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE payments NOLOGIN;
	GRANT payments TO bob;
};
$old->safe_psql('postgres', $roles);
$old->safe_psql('postgres', q{
	CREATE DATABASE shop;
});
$old->safe_psql('shop', q{
	CREATE EXTENSION idempotency;
	GRANT EXECUTE ON FUNCTION idem_forget(text, text, name) TO alice, bob;
});

# bob: a completed key with a response, a leased key with a recovery point,
# and a key of the group role he belongs to; alice: her own key of the same
# string as bob's
sub as_role
{
	my ($node, $role, $sql) = @_;
	return $node->safe_psql('shop', "SET ROLE $role; $sql");
}
as_role($old, 'bob', q{
	BEGIN;
	SELECT outcome FROM idem_claim('pay-1', scope => 'tenantB');
	SELECT idem_complete('pay-1', '{"card": "4242"}', scope => 'tenantB');
	COMMIT;
	SELECT outcome FROM idem_claim('charge-9', lease => '1 hour');
	SELECT idem_checkpoint('charge-9', 'charged', attempt => 1);
	BEGIN;
	SELECT outcome FROM idem_claim('order-5', owner => 'payments');
	SELECT idem_complete('order-5', '{"order": 5}', owner => 'payments');
	COMMIT;
});
as_role($old, 'alice', q{
	BEGIN;
	SELECT outcome FROM idem_claim('pay-1', scope => 'tenantB');
	SELECT idem_complete('pay-1', '{"alice": true}', scope => 'tenantB');
	COMMIT;
});

# What each role reaches; the same checks run live and after the restore
sub check_roles
{
	my ($node, $when) = @_;

	is( as_role($node, 'alice',
			q{SELECT outcome || ' ' || response::text FROM idem_claim('pay-1', scope => 'tenantB')}),
		'replay {"alice": true}', "$when: alice replays her own key, not bob's");
	is( as_role($node, 'bob',
			q{SELECT outcome || ' ' || response::text FROM idem_claim('pay-1', scope => 'tenantB')}),
		'replay {"card": "4242"}', "$when: bob replays his");
	is(as_role($node, 'alice', q{SELECT count(*) FROM idem_lookup('charge-9')}),
		'0', "$when: alice does not see bob's leased key");
	is( as_role($node, 'alice',
			q{SELECT outcome FROM idem_claim('charge-9', lease => '1 minute', wait => false)}),
		'claimed', "$when: the same key string is a key of her own, claimed at once");
	as_role($node, 'alice', q{SELECT idem_forget('charge-9')});

	my ($ret, $out, $err);
	foreach my $call (
		q{SELECT idem_complete('charge-9', '{"stolen": 1}', attempt => 1)},
		q{SELECT idem_checkpoint('charge-9', 'skipped', attempt => 1)})
	{
		($ret, $out, $err) = $node->psql('shop', "SET ROLE alice; $call");
		like($err, qr/idempotency key "charge-9" is not claimed/,
			"$when: alice cannot act on bob's leased key: $call");
		unlike($err, qr/attempt|bob/, "$when: and the error names neither his attempt nor him");
	}
	is(as_role($node, 'alice', q{SELECT idem_release('charge-9', attempt => 1)}),
		'f', "$when: alice has no key of that name to release");
	is(as_role($node, 'alice', q{SELECT idem_forget('pay-9')}),
		'f', "$when: nor to forget");

	foreach my $call (
		q{SELECT * FROM idem_claim('pay-1', scope => 'tenantB', owner => 'bob')},
		q{SELECT * FROM idem_lookup('charge-9', owner => 'bob')},
		q{SELECT idem_complete('charge-9', '{}', attempt => 1, owner => 'bob')},
		q{SELECT idem_checkpoint('charge-9', 'x', attempt => 1, owner => 'bob')},
		q{SELECT idem_release('charge-9', attempt => 1, owner => 'bob')},
		q{SELECT idem_forget('charge-9', owner => 'bob')},
		q{SELECT * FROM idem_claim('order-5', owner => 'payments')})
	{
		($ret, $out, $err) = $node->psql('shop', "SET ROLE alice; $call");
		like($err, qr/permission denied to use the idempotency keys of role/,
			"$when: alice cannot name another role as owner: $call");
	}

	is( as_role($node, 'bob',
			q{SELECT recovery_point || ' ' || attempt FROM idem_lookup('charge-9')}),
		'charged 1', "$when: bob's leased key kept its recovery point and attempt");
	is( as_role($node, 'bob',
			q{SELECT outcome || ' ' || response::text FROM idem_claim('order-5', owner => 'payments')}),
		'replay {"order": 5}', "$when: bob reaches the keys of the group role he is in");
	is( $node->safe_psql('shop',
			q{SELECT outcome || ' ' || response::text FROM idem_claim('pay-1', scope => 'tenantB', owner => 'bob')}),
		'replay {"card": "4242"}', "$when: a superuser reaches bob's key by naming him");
	is( $node->safe_psql('shop',
			q{SELECT string_agg(has_table_privilege(r, 'idem_keys', 'SELECT')::text, ',')
			    FROM unnest(ARRAY['alice', 'bob', 'payments']) r}),
		'false,false,false', "$when: no role may read the keys table");
	is( $node->safe_psql('shop',
			q{SELECT string_agg(key || '/' || owner::text, ',' ORDER BY key, owner::text) FROM idem_keys}),
		'charge-9/bob,order-5/payments,pay-1/alice,pay-1/bob',
		"$when: every key records its role by name");
}

check_roles($old, 'live');

# Another cluster, where every role gets another OID: roles first, then the
# database, as pg_dumpall --globals-only and pg_dump would move them
my $new = PostgreSQL::Test::Cluster->new('target');
$new->init;
$new->append_conf('postgresql.conf', "shared_preload_libraries = 'idempotency'");
$new->start;
$new->safe_psql('postgres',
	'CREATE ROLE filler1; CREATE ROLE filler2; CREATE ROLE filler3;' . $roles);
isnt( $new->safe_psql('postgres', q{SELECT 'bob'::regrole::oid}),
	$old->safe_psql('postgres', q{SELECT 'bob'::regrole::oid}),
	'the roles have other OIDs in the new cluster');

my $dump = $old->basedir . '/shop.dump';
$old->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $old->connstr('shop') ],
	'pg_dump of the database with keys');
$new->safe_psql('postgres', 'CREATE DATABASE shop');
$new->command_ok([ 'pg_restore', '-d', $new->connstr('shop'), $dump ],
	'pg_restore into the new cluster');

check_roles($new, 'restored');

$old->stop;
$new->stop;
done_testing();
