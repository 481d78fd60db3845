# Nothing a role can call may crash the server or fail an assertion; bad
# input gets an ERROR, never a crash.
#
# A short run of the fuzzer (test/fuzz/idem_fuzz.py): several sessions, as a
# superuser, a role without privileges, a member of a group role and an
# operator role, call every function with random and hostile arguments, in
# autocommit mode and in transactions with savepoints rolled back at random,
# while another session runs DDL on the keys table and the extension.  Then
# its check of hostile changes to the extension's objects (column and row
# types, enum labels, indexes): each must be met with an ERROR.  Then sqlsmith
# (random SQL over the catalog, the extension's functions included), as a
# limited role and as a superuser.  The oracle: no session loses its
# connection, the server log has no "TRAP:" (failed assertion), no PANIC and
# no process terminated by a signal, and at the end idem_keys can be counted
# and reindexed (no duplicate key).  SQLSTATEs and internal errors (XX000)
# are reported.  scripts/fuzz.sh runs the same for longer.
#
# Needs python3 with psycopg 3 and sqlsmith: a missing one fails the test.
# IDEM_FUZZ_SEED replays a run (the seed is printed).
use strict;
use warnings;
use FindBin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $fuzzer = "$FindBin::RealBin/../fuzz/idem_fuzz.py";
my $seed = $ENV{IDEM_FUZZ_SEED} // (time() % 1000000);
my $fuzz_seconds = $ENV{IDEM_FUZZ_SECONDS} // 25;
my $smith_seconds = $ENV{IDEM_SMITH_SECONDS} // 15;
diag("fuzz seed $seed (IDEM_FUZZ_SEED=$seed replays it)");

# The tools: missing ones fail the test, they do not skip it
my $python;
for my $py ('python3', '/usr/bin/python3')
{
	if (IPC::Run::run([ $py, '-c', 'import psycopg' ], '>', \my $o, '2>', \my $e))
	{
		$python = $py;
		last;
	}
}
ok(defined $python, 'python3 with psycopg 3 is installed (Debian: python3-psycopg)')
  or BAIL_OUT('no python3 with psycopg');
my $sqlsmith;
for my $dir (split /:/, "$ENV{PATH}:/usr/bin")
{
	if (-x "$dir/sqlsmith")
	{
		$sqlsmith = "$dir/sqlsmith";
		last;
	}
}
ok(defined $sqlsmith, 'sqlsmith is installed (Debian: sqlsmith)');

my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'idempotency'
idempotency.sweep_interval = '1s'
max_prepared_transactions = 5
restart_after_crash = on
log_min_messages = warning
});
$node->start;
my $host = $node->host;
my $port = $node->port;
my $log = $node->logfile;
# the superuser of the cluster is the OS user that ran initdb
my $super = $node->safe_psql('postgres', 'SELECT current_user');

# Run the fuzzer; its output goes to the test's log, its summary to diag
sub fuzz
{
	my ($name, @args) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ($python, $fuzzer, '--host', $host, '--port', $port,
		'--superuser', $super,
		'--server-log', $log, '--seed', $seed, @args);
	note(join(' ', @cmd));
	my $ok = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err,
		IPC::Run::timeout(600));
	note($out);
	note($err) if $err ne '';
	# the SQLSTATE summary and any finding, in the suite's output
	my @lines = split /\n/, $out;
	my @summary = grep { /^\s+\d+\s+\S{5}\s|^idem_fuzz:|^hostile:.*(CRASH|XX000)|^hostile: \d+ changes|^INTERNAL|^FAILURES|^examples|^\s+(XX000|23505|SQL|params|while|after|at|log|server|session|hang|final|\(no)/ } @lines;
	diag("$name:\n" . join("\n", @summary[0 .. ($#summary < 60 ? $#summary : 60)]));
	diag($err) if !$ok && $err ne '';
	ok($ok, "$name: no crash, no failed assertion, no hang");
	return $ok;
}

# 1. Random calls and concurrent DDL
fuzz('fuzzer', '--dbname', 'postgres', '--setup', '--seconds', $fuzz_seconds);

# 2. Hostile changes to the extension's objects, each met by every function
fuzz('hostile changes', '--dbname', 'postgres', '--hostile-check');

# 3. sqlsmith, in a database of its own with keys in every state; a
# statement_timeout ends its queries, as a limited role and as a superuser
$node->safe_psql('postgres', q{
	CREATE DATABASE smith;
	ALTER DATABASE smith SET statement_timeout = '1s';
	ALTER DATABASE smith SET lock_timeout = '500ms';
	ALTER DATABASE smith SET idle_in_transaction_session_timeout = '5s';
});
my ($sout, $serr) = ('', '');
IPC::Run::run([ $python, $fuzzer, '--host', $host, '--port', $port, '--dbname', 'smith',
	'--superuser', $super, '--setup-only' ], '>', \$sout, '2>', \$serr);
like($sout, qr/setup: roles/, 'sqlsmith database set up');
# both roles at once; the budget starts once both have loaded the catalog,
# which takes a while on a build with assertions
my (%h, %out, %err);
if (defined $sqlsmith)
{
	for my $role ('fuzz_app', $super)
	{
		($out{$role}, $err{$role}) = ('', '');
		$h{$role} = IPC::Run::start(
			[ $sqlsmith, "--target=host=$host port=$port dbname=smith user=$role",
			  "--seed=$seed", '--max-queries=100000000', '--verbose' ],
			'>', \$out{$role}, '2>', \$err{$role}, IPC::Run::timeout($smith_seconds + 400));
	}
	my $loaded = time() + 300;
	while (time() < $loaded
		&& grep { $h{$_}->pumpable && $err{$_} !~ /Generating indexes\.\.\.done/ } keys %h)
	{
		$_->pump_nb for values %h;
		sleep 1;
	}
	my $until = time() + $smith_seconds;
	while (time() < $until && grep { $_->pumpable } values %h)
	{
		$_->pump_nb for values %h;
		sleep 1;
	}
}
for my $role ('fuzz_app', $super)
{
  SKIP:
	{
		skip 'no sqlsmith', 1 unless defined $sqlsmith;
		my $h = $h{$role};
		$h->signal('INT') if $h->pumpable;
		eval { $h->finish };
		$h->kill_kill if $@;
		my $e = $err{$role};
		note($e);
		my ($queries) = $e =~ /^queries: (\d+)/m;
		my ($rate) = $e =~ /^error rate: (\S+)/m;
		like($e, qr/Generating indexes\.\.\.done/, "sqlsmith as $role: loaded the schema and ran");
		diag("sqlsmith as $role, seed $seed: " . ($queries // '?') . ' queries, error rate '
			  . ($rate // '?'));
	}
}

# The oracle, over the whole run
my $logtext = slurp_file($log);
my @bad = grep { /TRAP:|PANIC:|terminated by signal|terminating any other active server processes/ }
  split /\n/, $logtext;
is(join("\n", @bad), '', 'the server log has no failed assertion, PANIC or crash');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is up');
for my $db ('postgres', 'smith')
{
	my ($ret, $stdout, $stderr) = $node->psql($db, q{
		SELECT count(*) >= 0 FROM idem_keys;
		REINDEX TABLE idem_keys;
	});
	is($ret, 0, "$db: idem_keys can be counted and reindexed") or diag($stderr);
}

$node->stop('fast');
done_testing();
