# ALTER EXTENSION idempotency UPDATE from 0.1 keeps every key and gives the
# same catalog as a fresh CREATE EXTENSION of the default version.
#
# Keys claimed under 0.1 (a completed key with a response, a leased key in
# progress with a recovery point, a key claimed with a fingerprint) answer
# after the update as they did before, for every role, as in 0.1.  Then the
# extension's objects in the updated database are compared with those of a
# database where the default version was created afresh: members, columns,
# indexes, constraints, functions, types, privileges, owners, comments and
# configuration tables.  Each difference is a failed test naming the object
# and what differs.  The test fails, rather than skips, while the default
# version is 0.1 or no update path leads from 0.1 to it.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('update');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'idempotency'");
$node->start;

my $response = '{"status": 201, "body": {"id": 7}}';
my $stored = '{"body": {"id": 7}, "status": 201}';

# Run SQL; returns (exit code, stdout, stderr)
sub run_sql
{
	my ($db, $sql) = @_;
	my ($stdout, $stderr);
	my $ret = $node->psql(
		$db, $sql,
		stdout => \$stdout,
		stderr => \$stderr,
		on_error_stop => 1);
	return ($ret, $stdout, $stderr);
}

# Run SQL that must succeed, as a test
sub sql_ok
{
	my ($db, $sql, $name) = @_;
	my ($ret, $stdout, $stderr) = run_sql($db, $sql);
	is($ret, 0, $name) or diag($stderr);
	return $ret == 0;
}

# Run SQL and compare what it prints, or its error, with what is expected
sub query_is
{
	my ($db, $sql, $expected, $name) = @_;
	my ($ret, $stdout, $stderr) = run_sql($db, $sql);
	return is($ret == 0 ? $stdout : $stderr, $expected, $name);
}

# Stop here, a test having failed: nothing more can be checked
sub give_up
{
	$node->stop;
	done_testing();
	exit;
}

#
# The versions
#
my $default = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'idempotency'"
);
isnt($default, '0.1', "the default version ($default) is newer than 0.1");
is( $node->safe_psql(
		'postgres', qq{
		SELECT path IS NOT NULL FROM pg_extension_update_paths('idempotency')
		 WHERE source = '0.1' AND target = '$default'}),
	't',
	"an update path leads from 0.1 to the default version ($default)");

#
# Keys claimed under 0.1
#
$node->safe_psql('postgres', 'CREATE DATABASE updated');
$node->safe_psql('postgres', 'CREATE ROLE app');
sql_ok('updated', "CREATE EXTENSION idempotency VERSION '0.1'",
	'version 0.1 is created')
  or give_up();

sql_ok(
	'updated', qq{
	BEGIN;
	SELECT outcome FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop');
	SELECT idem_complete('paid', '$response', scope => 'shop');
	COMMIT;
	SELECT outcome FROM idem_claim('job', lease => '1 hour');
	SELECT idem_checkpoint('job', 'step-1', attempt => 1);
	SELECT outcome FROM idem_claim('card', fingerprint => idem_fingerprint('{"amount": 10}'));
},
	'keys are claimed under 0.1');

# What callers see, as superuser and as another role
my %answers = (
	'the completed key replays its response' => [
		"SELECT outcome, response FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop')",
		"replay|$stored"
	],
	'the leased key is in progress, attempt 1' => [
		"SELECT outcome, attempt FROM idem_claim('job', lease => '1 hour')",
		'in_progress|1'
	],
	'the leased key keeps its recovery point' => [
		"SELECT status, attempt, recovery_point FROM idem_lookup('job')",
		'in_progress|1|step-1'
	],
	'the same request replays' => [
		q{SELECT outcome FROM idem_claim('card', fingerprint => idem_fingerprint('{"amount": 10.0}'))},
		'replay'
	],
	'another request is a mismatch' => [
		q{SELECT outcome FROM idem_claim('card', fingerprint => idem_fingerprint('{"amount": 20}'))},
		'mismatch'
	],);

sub check_answers
{
	my ($when) = @_;
	for my $name (sort keys %answers)
	{
		my ($sql, $expected) = @{ $answers{$name} };
		query_is('updated', $sql, $expected, "$when: $name");
		query_is('updated', "SET ROLE app; $sql",
			$expected, "$when, for another role: $name");
	}
	return;
}
check_answers('under 0.1');

# Every column that 0.1 has, for every key
my $columns_01 = $node->safe_psql(
	'updated', q{
	SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
	  FROM pg_attribute
	 WHERE attrelid = 'idem_keys'::regclass AND attnum > 0 AND NOT attisdropped});
my $keys_sql = "SET TimeZone = 'UTC';
	SELECT $columns_01 FROM idem_keys ORDER BY scope, key";
my $keys_before = $node->safe_psql('updated', $keys_sql);

#
# The update
#
sql_ok('updated', 'ALTER EXTENSION idempotency UPDATE',
	'ALTER EXTENSION idempotency UPDATE')
  or give_up();
is( $node->safe_psql('updated',
		"SELECT extversion FROM pg_extension WHERE extname = 'idempotency'"),
	$default,
	"the extension is at the default version ($default)");

is($node->safe_psql('updated', $keys_sql),
	$keys_before, 'every key keeps every column it had under 0.1');
query_is('updated',
	"SELECT string_agg(owner::text, ',' ORDER BY scope, key) FROM idem_keys",
	'-,-,-', 'keys claimed under 0.1 have no owner (0, shown as -)');

check_answers('after the update');

# The leased key is finished by its attempt, and new keys work
query_is('updated',
	"SELECT idem_checkpoint('job', 'step-2', attempt => 1) IS NOT NULL",
	't', 'the leased key checkpoints with attempt 1');
sql_ok('updated',
	q{SELECT idem_complete('job', '{"done": true}', attempt => 1)},
	'the leased key completes with attempt 1');
query_is('updated', "SELECT outcome, response, attempt FROM idem_claim('job')",
	'replay|{"done": true}|1', 'the completed leased key replays');
query_is('updated',
	"SET ROLE app; SELECT outcome, attempt FROM idem_claim('new', lease => '1 hour')",
	'claimed|1', 'a new key is claimed after the update');
query_is('updated', 'SELECT count(*) FROM idem_keys',
	'4', 'four keys, none lost and none twice');

#
# The catalog: updated from 0.1, and created afresh
#
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
sql_ok('fresh', 'CREATE EXTENSION idempotency',
	'the default version is created afresh')
  or give_up();

# The extension's objects, each query giving a JSON object of
# {object: {attribute: value}}.  Sets shared by the queries: the members,
# the relations among them (and those of composite types), their indexes and
# constraints.
my $sets = q{
WITH ext AS (
	SELECT oid, extnamespace FROM pg_extension WHERE extname = 'idempotency'),
members AS (
	SELECT d.classid, d.objid, d.objsubid
	  FROM pg_depend d, ext
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
	   AND d.deptype = 'e'),
rels AS (
	SELECT objid AS relid FROM members WHERE classid = 'pg_class'::regclass
	UNION
	SELECT t.typrelid FROM members m JOIN pg_type t ON t.oid = m.objid
	 WHERE m.classid = 'pg_type'::regclass AND t.typrelid <> 0),
idx AS (
	SELECT i.* FROM pg_index i JOIN rels ON i.indrelid = rels.relid),
cons AS (
	SELECT c.* FROM pg_constraint c
	 WHERE c.conrelid IN (SELECT relid FROM rels)
		OR c.contypid IN (SELECT objid FROM members WHERE classid = 'pg_type'::regclass)),
-- every object of the extension, and the parts that belong to them
objects AS (
	SELECT classid, objid, objsubid FROM members
	UNION
	SELECT 'pg_class'::regclass::oid, relid, 0 FROM rels
	UNION
	SELECT 'pg_class'::regclass::oid, a.attrelid, a.attnum
	  FROM pg_attribute a JOIN rels ON a.attrelid = rels.relid
	 WHERE a.attnum > 0 AND NOT a.attisdropped
	UNION
	SELECT 'pg_class'::regclass::oid, indexrelid, 0 FROM idx
	UNION
	SELECT 'pg_constraint'::regclass::oid, oid, 0 FROM cons)
};

# Remove the extension's schema from a definition: the same text whatever
# the schema
my $unqualified = q{replace(%s, ' ON ' || quote_ident(n.nspname) || '.', ' ON ')};

my @categories = (
	[
		'members', 1, q{
		SELECT jsonb_object_agg(pg_describe_object(classid, objid, objsubid),
			jsonb_build_object('catalog', classid::regclass::text))
		  FROM members}
	],
	[
		'extension', 1, q{
		SELECT jsonb_object_agg('extension ' || e.extname, jsonb_build_object(
			'version', e.extversion, 'relocatable', e.extrelocatable,
			'schema', n.nspname))
		  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'idempotency'}
	],
	[
		'relations', 1, q{
		SELECT jsonb_object_agg(pg_describe_object('pg_class'::regclass, c.oid, 0),
			jsonb_build_object(
			'kind', c.relkind, 'persistence', c.relpersistence,
			'options', c.reloptions, 'access method', am.amname,
			'tablespace', ts.spcname, 'row security', c.relrowsecurity,
			'forced row security', c.relforcerowsecurity,
			'replica identity', c.relreplident, 'partition', c.relispartition,
			'view definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END))
		  FROM rels JOIN pg_class c ON c.oid = rels.relid
		  LEFT JOIN pg_am am ON am.oid = c.relam
		  LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace}
	],
	[
		# attoptions without pg_attver, a server's stamp of its own release
		# on every column (PostgreSQL 15.20), not a property of the column.
		# The position of a table's column is left out: an updated idem_keys
		# has the owner last, by design, and the order is checked on its own
		# below.  A composite type's order is its interface, so it is kept.
		'columns', 1, q{
		SELECT jsonb_object_agg(pg_describe_object('pg_class'::regclass, attrelid, attnum), v)
		  FROM (
			SELECT a.attrelid, a.attnum, jsonb_build_object(
				'position', CASE WHEN (SELECT relkind FROM pg_class WHERE oid = a.attrelid) <> 'r'
							THEN row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) END,
				'type', format_type(a.atttypid, a.atttypmod), 'typmod', a.atttypmod,
				'not null', a.attnotnull,
				'collation', CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END,
				'default', pg_get_expr(ad.adbin, ad.adrelid),
				'identity', a.attidentity, 'generated', a.attgenerated,
				'storage', a.attstorage, 'compression', a.attcompression,
				'options', ARRAY(SELECT o FROM unnest(a.attoptions) AS o
								  WHERE o NOT LIKE 'pg\_attver=%')) AS v
			  FROM pg_attribute a JOIN rels ON a.attrelid = rels.relid
			  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
			 WHERE a.attnum > 0 AND NOT a.attisdropped) AS cols}
	],
	[
		'indexes', 1, sprintf(q{
		SELECT jsonb_object_agg(pg_describe_object('pg_class'::regclass, i.indexrelid, 0),
			jsonb_build_object(
			'definition', %s,
			'primary', i.indisprimary, 'unique', i.indisunique,
			'immediate', i.indimmediate, 'clustered', i.indisclustered,
			'valid', i.indisvalid, 'replica identity', i.indisreplident,
			'options', c.reloptions, 'tablespace', ts.spcname))
		  FROM idx i JOIN pg_class c ON c.oid = i.indexrelid
		  JOIN pg_namespace n ON n.oid = c.relnamespace
		  LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace},
			sprintf($unqualified, 'pg_get_indexdef(i.indexrelid)'))
	],
	[
		'constraints', 1, q{
		SELECT jsonb_object_agg(pg_describe_object('pg_constraint'::regclass, c.oid, 0),
			jsonb_build_object(
			'type', c.contype, 'definition', pg_get_constraintdef(c.oid),
			'deferrable', c.condeferrable, 'deferred', c.condeferred,
			'validated', c.convalidated, 'no inherit', c.connoinherit,
			'index', CASE WHEN c.conindid <> 0 THEN c.conindid::regclass::text END))
		  FROM cons c}
	],
	[
		'triggers, rules and policies', 0, q{
		SELECT jsonb_object_agg(d, v) FROM (
			SELECT pg_describe_object('pg_trigger'::regclass, t.oid, 0) AS d,
				   jsonb_build_object('definition', pg_get_triggerdef(t.oid),
									  'enabled', t.tgenabled) AS v
			  FROM pg_trigger t JOIN rels ON t.tgrelid = rels.relid
			 WHERE NOT t.tgisinternal
			UNION ALL
			SELECT pg_describe_object('pg_rewrite'::regclass, r.oid, 0),
				   jsonb_build_object('definition', pg_get_ruledef(r.oid),
									  'enabled', r.ev_enabled)
			  FROM pg_rewrite r JOIN rels ON r.ev_class = rels.relid
			 WHERE r.rulename <> '_RETURN'
			UNION ALL
			SELECT pg_describe_object('pg_policy'::regclass, p.oid, 0),
				   jsonb_build_object('command', p.polcmd,
									  'permissive', p.polpermissive,
									  'roles', (SELECT array_agg(CASE WHEN r = 0 THEN 'public'
																	  ELSE pg_get_userbyid(r)::text END
																 ORDER BY 1)
												  FROM unnest(p.polroles) AS r),
									  'using', pg_get_expr(p.polqual, p.polrelid),
									  'with check', pg_get_expr(p.polwithcheck, p.polrelid))
			  FROM pg_policy p JOIN rels ON p.polrelid = rels.relid) AS s}
	],
	[
		'functions', 1, q{
		SELECT jsonb_object_agg(pg_describe_object('pg_proc'::regclass, p.oid, 0),
			jsonb_build_object(
			'arguments', pg_get_function_arguments(p.oid),
			'identity arguments', pg_get_function_identity_arguments(p.oid),
			'result', pg_get_function_result(p.oid),
			'return type', p.prorettype::regtype::text, 'returns set', p.proretset,
			'kind', p.prokind, 'volatility', p.provolatile,
			'parallel', p.proparallel, 'strict', p.proisstrict,
			'security definer', p.prosecdef, 'leakproof', p.proleakproof,
			'cost', p.procost, 'rows', p.prorows, 'config', p.proconfig,
			'support', p.prosupport::regproc::text, 'language', l.lanname,
			'source', p.prosrc, 'library', p.probin))
		  FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
		  JOIN pg_language l ON l.oid = p.prolang}
	],
	[
		'types', 1, q{
		SELECT jsonb_object_agg(pg_describe_object('pg_type'::regclass, t.oid, 0),
			jsonb_build_object(
			'type', t.typtype, 'category', t.typcategory, 'length', t.typlen,
			'by value', t.typbyval, 'alignment', t.typalign,
			'storage', t.typstorage, 'not null', t.typnotnull,
			'base type', CASE WHEN t.typbasetype <> 0 THEN t.typbasetype::regtype::text END,
			'typmod', t.typtypmod, 'dimensions', t.typndims,
			'collation', CASE WHEN t.typcollation <> 0 THEN t.typcollation::regcollation::text END,
			'default', t.typdefault,
			'array type', CASE WHEN t.typarray <> 0 THEN t.typarray::regtype::text END,
			'input', t.typinput::text, 'output', t.typoutput::text,
			'receive', t.typreceive::text, 'send', t.typsend::text,
			'labels', (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
						 FROM pg_enum e WHERE e.enumtypid = t.oid)))
		  FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid}
	],
	[
		'privileges', 1, q{
		SELECT jsonb_object_agg(pg_describe_object(classid, objid, objsubid), acl)
		  FROM (
			SELECT 'pg_class'::regclass::oid AS classid, c.oid AS objid, 0 AS objsubid,
				   c.relacl::text AS acl
			  FROM rels JOIN pg_class c ON c.oid = rels.relid
			UNION ALL
			SELECT 'pg_class'::regclass::oid, a.attrelid, a.attnum, a.attacl::text
			  FROM pg_attribute a JOIN rels ON a.attrelid = rels.relid
			 WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
			UNION ALL
			SELECT m.classid, p.oid, 0, p.proacl::text
			  FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
			UNION ALL
			SELECT m.classid, t.oid, 0, t.typacl::text
			  FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
			UNION ALL
			SELECT m.classid, s.oid, 0, s.nspacl::text
			  FROM members m JOIN pg_namespace s ON m.classid = 'pg_namespace'::regclass AND s.oid = m.objid
			UNION ALL
			SELECT m.classid, f.oid, 0, f.fdwacl::text
			  FROM members m JOIN pg_foreign_data_wrapper f
				ON m.classid = 'pg_foreign_data_wrapper'::regclass AND f.oid = m.objid
			UNION ALL
			SELECT m.classid, f.oid, 0, f.srvacl::text
			  FROM members m JOIN pg_foreign_server f
				ON m.classid = 'pg_foreign_server'::regclass AND f.oid = m.objid
		  ) AS acls}
	],
	[
		# what pg_dump takes for the privileges the extension set itself
		'initial privileges', 1, q{
		SELECT jsonb_object_agg(pg_describe_object(ip.classoid, ip.objoid, ip.objsubid),
			jsonb_build_object('set by', ip.privtype, 'privileges', ip.initprivs::text))
		  FROM pg_init_privs ip JOIN objects o
			ON o.classid = ip.classoid AND o.objid = ip.objoid AND o.objsubid = ip.objsubid}
	],
	[
		'owners', 1, q{
		SELECT jsonb_object_agg(pg_describe_object(m.classid, m.objid, m.objsubid),
			coalesce(pg_get_userbyid(o.owner)::text, '(no owner)'))
		  FROM members m LEFT JOIN (
			SELECT 'pg_class'::regclass::oid AS classid, oid AS objid, relowner AS owner FROM pg_class
			UNION ALL SELECT 'pg_proc'::regclass, oid, proowner FROM pg_proc
			UNION ALL SELECT 'pg_type'::regclass, oid, typowner FROM pg_type
			UNION ALL SELECT 'pg_operator'::regclass, oid, oprowner FROM pg_operator
			UNION ALL SELECT 'pg_opclass'::regclass, oid, opcowner FROM pg_opclass
			UNION ALL SELECT 'pg_opfamily'::regclass, oid, opfowner FROM pg_opfamily
			UNION ALL SELECT 'pg_collation'::regclass, oid, collowner FROM pg_collation
			UNION ALL SELECT 'pg_conversion'::regclass, oid, conowner FROM pg_conversion
			UNION ALL SELECT 'pg_namespace'::regclass, oid, nspowner FROM pg_namespace
			UNION ALL SELECT 'pg_ts_dict'::regclass, oid, dictowner FROM pg_ts_dict
			UNION ALL SELECT 'pg_ts_config'::regclass, oid, cfgowner FROM pg_ts_config
			UNION ALL SELECT 'pg_statistic_ext'::regclass, oid, stxowner FROM pg_statistic_ext
			UNION ALL SELECT 'pg_event_trigger'::regclass, oid, evtowner FROM pg_event_trigger
			UNION ALL SELECT 'pg_foreign_data_wrapper'::regclass, oid, fdwowner FROM pg_foreign_data_wrapper
			UNION ALL SELECT 'pg_foreign_server'::regclass, oid, srvowner FROM pg_foreign_server
		  ) AS o ON o.classid = m.classid AND o.objid = m.objid}
	],
	[
		'comments', 1, q{
		SELECT jsonb_object_agg(pg_describe_object(d.classoid, d.objoid, d.objsubid),
			d.description)
		  FROM pg_description d JOIN objects o
			ON o.classid = d.classoid AND o.objid = d.objoid AND o.objsubid = d.objsubid}
	],
	[
		'configuration tables', 1, q{
		SELECT jsonb_object_agg(pg_describe_object('pg_class'::regclass, u.cfg, 0),
			jsonb_build_object('condition', u.cond))
		  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(cfg, cond)
		 WHERE e.extname = 'idempotency'}
	],);

my $json = JSON::PP->new->canonical->allow_nonref;

# Render attributes, one a line
sub render
{
	my ($value, @attributes) = @_;
	return $json->encode($value) unless ref $value eq 'HASH';
	@attributes = sort keys %$value unless @attributes;
	return join("\n",
		map { "$_: " . $json->encode($value->{$_}) } @attributes);
}

for my $category (@categories)
{
	my ($name, $nonempty, $sql) = @$category;
	my %got;
	for my $db ('updated', 'fresh')
	{
		my $out = $node->safe_psql($db, $sets . $sql);
		$got{$db} = $out eq '' ? {} : $json->decode($out);
	}
	my ($updated, $fresh) = @got{ 'updated', 'fresh' };

	my %all = (%$updated, %$fresh);
	my $differences = 0;
	for my $object (sort keys %all)
	{
		my ($u, $f) = ($updated->{$object}, $fresh->{$object});
		next
		  if exists $updated->{$object}
		  && exists $fresh->{$object}
		  && $json->encode($u) eq $json->encode($f);

		# name only what differs
		my @attributes;
		if (ref $u eq 'HASH' && ref $f eq 'HASH')
		{
			my %keys = (%$u, %$f);
			@attributes = grep {
				$json->encode($u->{$_}) ne $json->encode($f->{$_})
			} sort keys %keys;
		}
		$differences++;
		is( exists $updated->{$object} ? render($u, @attributes) : '(absent)',
			exists $fresh->{$object} ? render($f, @attributes) : '(absent)',
			"$name: $object is the same after the update (got) as afresh (expected)"
		);
	}
	my $count = keys %all;
	ok($count > 0, "$name: at least one is found") if $nonempty;
	is($differences, 0,
		"$name: the same after the update as afresh ($count compared)")
	  if $differences == 0;
}

# The keys table's column order: the owner is appended by the update, and a
# fresh table puts the fixed-width columns first (the row has no padding)
my $order = q{
	SELECT string_agg(attname, ' ' ORDER BY attnum) FROM pg_attribute
	 WHERE attrelid = 'idem_keys'::regclass AND attnum > 0 AND NOT attisdropped};
query_is('updated', $order,
	'scope key status fingerprint response attempt recovery_point created_at '
	  . 'completed_at expires_at locked_until lease owner body released_attempt',
	'an updated idem_keys keeps the columns of 0.1, with those of 0.2 last');
query_is('fresh', $order,
	'created_at completed_at expires_at locked_until lease status attempt owner '
	  . 'released_attempt scope key fingerprint response recovery_point body',
	'a fresh idem_keys has its 8-byte columns first and its variable ones last');

$node->stop;
done_testing();
