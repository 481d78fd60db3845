# pg_upgrade keeps every key: a completed key replays its exact response, a
# leased key taken over once is still in progress under its lease with its
# attempt and recovery point, and only its current attempt may checkpoint and
# complete it; an expired key crosses the upgrade and the background worker of
# the new cluster sweeps it; new claims work.
#
# First within the major under test (old and new binaries the same): this
# takes the binary-upgrade path of the extension's member table and its data,
# which every major upgrade takes.  Then from PostgreSQL 15 to the major under
# test, when that is newer and PostgreSQL 15 is installed with the extension
# (IDEM_OLD_PG15_BINDIR, by default Debian's /usr/lib/postgresql/15/bin).
use strict;
use warnings;

use Cwd qw(getcwd);
use File::Basename qw(dirname);
use File::Find qw(find);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $old15_bindir = $ENV{IDEM_OLD_PG15_BINDIR} // '/usr/lib/postgresql/15/bin';

# The database that holds the keys, beside the default ones
my $db = 'app';

# Every column of every key, in a fixed time zone
my $all_keys = q{SET TimeZone = 'UTC';
	SELECT * FROM idem_keys ORDER BY scope, key};
my $job_state = q{SET TimeZone = 'UTC';
	SELECT status, attempt, recovery_point, locked_until, lease, expires_at
	  FROM idem_lookup('job')};
my $response = '{"status": 201, "note": "a \"quoted\" value", "body": {"items": [1, 2.50, null], "id": 7}}';
# ... as jsonb shows it
my $stored = '{"body": {"id": 7, "items": [1, 2.50, null]}, "note": "a \"quoted\" value", "status": 201}';

# Settings of both clusters: the worker is loaded, and it does not sweep
# before the test asks it to (its first round is one interval after it starts)
my $conf = q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1h'
};

# Run SQL and return (exit code, stdout, stderr), errors with their SQLSTATE
sub psql_verbose
{
	my ($node, $sql) = @_;
	my ($stdout, $stderr);
	my $ret = $node->psql(
		$db, $sql,
		stdout => \$stdout,
		stderr => \$stderr,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($ret, $stdout, $stderr);
}

# Show what pg_upgrade left in the new cluster's output directory
sub show_upgrade_logs
{
	my ($new) = @_;
	my $dir = $new->data_dir . '/pg_upgrade_output.d';
	return unless -d $dir;
	find(
		{
			wanted => sub {
				return unless -f $_ && /\.(log|txt)$/;
				my @lines = split /\n/, slurp_file($File::Find::name);
				splice(@lines, 0, -40);
				diag(join("\n", "=== $File::Find::name (end) ===", @lines));
			},
			no_chdir => 1
		},
		$dir);
}

# Claim the keys of the test in the old cluster, which runs.  Returns what
# the new cluster must show.
sub claim_keys
{
	my ($old) = @_;
	my %before;

	$old->safe_psql('postgres', "CREATE DATABASE $db");
	$old->safe_psql($db, 'CREATE EXTENSION idempotency');

	# A completed key with a response, claimed with a fingerprint
	$old->safe_psql(
		$db, qq{
		BEGIN;
		SELECT outcome FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop');
		SELECT idem_complete('paid', '$response', scope => 'shop');
		COMMIT;
	});
	$before{replay} = $old->safe_psql($db,
		"SELECT outcome, response FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop')"
	);
	is($before{replay}, "replay|$stored",
		'old cluster: the completed key replays its response');

	# A leased key: its lease runs out after a checkpoint, and a second
	# worker takes it over (attempt 2) and records its own progress
	is( $old->safe_psql(
			$db, "SELECT outcome, attempt FROM idem_claim('job', lease => '1 second')"),
		'claimed|1',
		'old cluster: the first worker claims a leased key');
	$old->safe_psql($db,
		"SELECT idem_checkpoint('job', 'step-1', attempt => 1)");
	$old->poll_query_until($db,
		"SELECT locked_until <= now() FROM idem_lookup('job')")
	  or die 'timed out waiting for the lease of job to run out';
	is( $old->safe_psql(
			$db,
			"SELECT outcome, attempt, recovery_point FROM idem_claim('job', lease => '1 hour')"
		),
		'claimed|2|step-1',
		'old cluster: a second worker takes the key over, attempt 2');
	$old->safe_psql($db,
		"SELECT idem_checkpoint('job', 'step-2', attempt => 2)");
	$before{job} = $old->safe_psql($db, $job_state);

	# A completed key that expires before the upgrade
	$old->safe_psql(
		$db, q{
		BEGIN;
		SELECT outcome FROM idem_claim('old', ttl => '1 second');
		SELECT idem_complete('old', '{"old": true}');
		COMMIT;
	});
	$old->poll_query_until($db,
		"SELECT expires_at <= now() FROM idem_keys WHERE key = 'old'")
	  or die 'timed out waiting for key old to expire';
	is( $old->safe_psql(
			$db,
			'SELECT keys_in_progress, keys_completed, keys_expired FROM idem_stats'),
		'1|1|1',
		'old cluster: one key in progress, one completed, one expired');

	$before{keys} = $old->safe_psql($db, $all_keys);
	$before{extversion} = $old->safe_psql($db,
		"SELECT extversion FROM pg_extension WHERE extname = 'idempotency'");
	return \%before;
}

# Run pg_upgrade from the old cluster to the new one, both stopped
sub run_pg_upgrade
{
	my ($old, $new) = @_;

	# pg_upgrade writes its scripts into the current directory
	my $cwd = getcwd();
	chdir(PostgreSQL::Test::Utils::tempdir) or die "chdir: $!";
	my $newbindir = $new->config_data('--bindir');
	my $ok = run_log(
		[
			"$newbindir/pg_upgrade", '--no-sync',
			'--old-datadir', $old->data_dir,
			'--new-datadir', $new->data_dir,
			'--old-bindir', $old->config_data('--bindir'),
			'--new-bindir', $newbindir,
			'--socketdir', $new->host,
			'--old-port', $old->port,
			'--new-port', $new->port,
		]);
	chdir($cwd) or die "chdir: $!";
	ok($ok, 'pg_upgrade of a cluster with the extension and its keys');
	show_upgrade_logs($new) unless $ok;
	return $ok;
}

# Run SQL and compare what it prints, or its error, with what is expected
sub query_is
{
	my ($node, $sql, $expected, $name) = @_;
	my ($ret, $stdout, $stderr) = psql_verbose($node, $sql);
	return is($ret == 0 ? $stdout : $stderr, $expected, $name);
}

# The keys in the new cluster, which runs
sub check_keys
{
	my ($new, $before) = @_;

	query_is($new,
		"SELECT extversion FROM pg_extension WHERE extname = 'idempotency'",
		$before->{extversion}, 'the extension keeps its version');
	query_is($new, $all_keys, $before->{keys},
		'every key keeps every column, the expired one too');

	# The completed key
	query_is($new,
		"SELECT outcome, response FROM idem_claim('paid', fingerprint => 'fp-1', scope => 'shop')",
		$before->{replay},
		'the completed key replays its exact response');
	query_is($new,
		"SELECT outcome FROM idem_claim('paid', fingerprint => 'fp-2', scope => 'shop')",
		'mismatch', 'the completed key keeps its fingerprint');

	# The leased key
	query_is($new,
		"SELECT outcome, attempt FROM idem_claim('job', lease => '1 hour')",
		'in_progress|2', 'the leased key is in progress while its lease runs');
	query_is($new, $job_state, $before->{job},
		'the leased key keeps its attempt, recovery point and lease');
	my ($ret, $stdout, $stderr) = psql_verbose($new,
		"SELECT idem_checkpoint('job', 'step-3', attempt => 1)");
	like(
		$stderr,
		qr/ERROR:  55000: attempt 1 of idempotency key "job" is stale/,
		'the attempt taken over before the upgrade is still stale');
	query_is($new,
		"SELECT idem_checkpoint('job', 'step-3', attempt => 2) IS NOT NULL",
		't', 'the current attempt checkpoints');
	($ret, $stdout, $stderr) = psql_verbose($new,
		q{SELECT idem_complete('job', '{"by": "attempt 2"}', attempt => 2)});
	is($ret, 0, 'the current attempt completes the key') or diag($stderr);
	query_is($new, "SELECT outcome, response, attempt FROM idem_claim('job')",
		'replay|{"by": "attempt 2"}|2', 'the completed key replays');

	# The expired key: gone for callers, and swept by the background worker
	query_is($new, "SELECT count(*) FROM idem_lookup('old')",
		'0', 'the expired key is not looked up');
	$new->append_conf('postgresql.conf', "idempotency.sweep_interval = '1s'");
	$new->reload;
	ok( $new->poll_query_until($db,
			"SELECT count(*) = 0 FROM idem_keys WHERE key = 'old'"),
		'the background worker sweeps the expired key');
	query_is(
		$new, q{
		SELECT keys_swept >= 1, sweeper_runs >= 1,
		       coalesce(last_sweep_error, 'no error'),
		       keys_in_progress, keys_completed, keys_expired
		  FROM idem_stats},
		't|t|no error|0|2|0',
		'idem_stats shows the sweep, and two completed keys');
	query_is($new, 'SELECT count(*) FROM idem_keys', '2', 'two keys remain');

	# New claims
	query_is($new,
		"SELECT outcome, attempt FROM idem_claim('new', lease => '1 hour')",
		'claimed|1', 'a new key is claimed');
	($ret, $stdout, $stderr) = psql_verbose($new,
		q{SELECT idem_complete('new', '{"new": true}', attempt => 1)});
	is($ret, 0, 'the new key is completed') or diag($stderr);
	query_is($new, "SELECT outcome, response FROM idem_claim('new')",
		'replay|{"new": true}', 'the new key replays');
	return;
}

# The whole round: claim keys in an old cluster, upgrade it, check the keys.
# $precheck, if given, sees both clusters running, before any key is
# claimed, and returns a reason to skip the rest, or undef.
sub upgrade_round
{
	my (%params) = @_;
	my $label = $params{label};

	my $old = PostgreSQL::Test::Cluster->new("old_$label",
		$params{old_install} ? (install_path => $params{old_install}) : ());
	# a template made by the newer initdb would not do for an older server
	$old->init(force_initdb => 1);
	$old->append_conf('postgresql.conf', $conf);
	$old->start;

	my $new = PostgreSQL::Test::Cluster->new("new_$label");
	$new->init(%{ $params{new_init} // {} });
	$new->append_conf('postgresql.conf', $conf);

	if ($params{precheck})
	{
		$new->start;
		my $reason = $params{precheck}->($old, $new);
		$new->stop;
		if ($reason)
		{
			$old->stop;
			plan skip_all => $reason;
		}
	}

	my $before = claim_keys($old);
	$old->stop;

	if (run_pg_upgrade($old, $new))
	{
		$new->start;
		check_keys($new, $before);
		$new->stop;
	}
	return;
}

subtest 'pg_upgrade within the major under test' => sub {
	upgrade_round(label => 'same');
};

# The major under test: that of the binaries in PATH
my $new_major = PostgreSQL::Test::Cluster->new('version')->pg_version->major;

# Why the upgrade from 15 cannot run here, or undef
sub old15_missing
{
	return 'runs on the newer major only' if $new_major <= 15;
	my $pg_config = "$old15_bindir/pg_config";
	return "PostgreSQL 15 is not installed ($old15_bindir has no postgres and pg_config)"
	  unless -x "$old15_bindir/postgres" && -x $pg_config;
	my $version = `"$pg_config" --version`;
	chomp $version;
	return "$old15_bindir is not PostgreSQL 15 but $version"
	  unless $version =~ /^PostgreSQL 15\./;
	my $sharedir = `"$pg_config" --sharedir`;
	my $pkglibdir = `"$pg_config" --pkglibdir`;
	chomp($sharedir, $pkglibdir);
	for my $file ("$sharedir/extension/idempotency.control",
		"$pkglibdir/idempotency.so")
	{
		return "the extension is not installed into PostgreSQL 15 (no $file)"
		  unless -f $file;
	}
	return undef;
}

# PostgreSQL 15.20 stamps every column with the attribute option pg_attver,
# which older releases of newer majors do not know; then the restore that
# pg_upgrade runs fails on every table, with or without the extension.
# Both halves are checked on the two clusters, and nothing is left behind.
sub attver_reason
{
	my ($old, $new) = @_;
	my $stamp = $old->safe_psql(
		'postgres', q{
		BEGIN;
		CREATE TABLE attver_probe (a int);
		SELECT option_name || '=' || option_value
		  FROM pg_attribute, pg_options_to_table(attoptions)
		 WHERE attrelid = 'attver_probe'::regclass AND attnum = 1
		   AND option_name = 'pg_attver';
		ROLLBACK;
	});
	return undef if $stamp eq '';
	my ($ret, $stdout, $stderr) = $new->psql(
		'postgres', qq{
		BEGIN;
		CREATE TABLE attver_probe (a int);
		ALTER TABLE attver_probe ALTER COLUMN a SET ($stamp);
		ROLLBACK;
	});
	return undef unless $stderr =~ /unrecognized parameter "pg_attver"/;
	my $old_version = $old->safe_psql('postgres', 'SHOW server_version');
	my $new_version = $new->safe_psql('postgres', 'SHOW server_version');
	return "PostgreSQL $old_version stamps every column with the "
	  . "attribute option pg_attver, which $new_version rejects "
	  . "(unrecognized parameter \"pg_attver\"): pg_upgrade's restore "
	  . "fails on every table, with or without the extension";
}

subtest 'pg_upgrade from PostgreSQL 15 to the major under test' => sub {
	my $missing = old15_missing();
	plan skip_all => $missing if $missing;
	upgrade_round(
		label => 'from15',
		old_install => dirname($old15_bindir),
		# 15 has no data checksums by default; 18 and later have
		new_init => $new_major >= 18 ? { no_data_checksums => 1 } : {},
		precheck => \&attver_reason);
};

done_testing();
