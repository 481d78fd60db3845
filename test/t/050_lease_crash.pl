# A worker dies holding a leased claim; the server crashes and restarts; the
# claim survives with its last committed checkpoint; once the lease is over a
# second worker takes the key over (attempt 2, from that checkpoint), finishes
# and completes it.  Exactly one completion is recorded, and the dead
# worker's attempt can neither complete the key nor overwrite the result.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('lease_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'idempotency'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');

# Run SQL and return (exit code, stdout, stderr), errors shown with SQLSTATE
sub psql_verbose
{
	my ($sql) = @_;
	my ($stdout, $stderr);
	my $ret = $node->psql(
		'postgres', $sql,
		stdout => \$stdout,
		stderr => \$stderr,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($ret, $stdout, $stderr);
}

# Worker 1 claims two keys with leases: job-1 with a short one, which will run
# out, and job-2 with a long one, which will still hold after the crash.
my $worker1 = $node->background_psql('postgres', on_error_stop => 0);
my $worker1_pid = $worker1->query_safe('SELECT pg_backend_pid()');

is( $worker1->query_safe(
		"SELECT outcome, attempt FROM idem_claim('job-1', lease => '2 seconds')"),
	'claimed|1',
	'worker 1 claims job-1 with a lease');
is( $worker1->query_safe(
		"SELECT outcome, attempt FROM idem_claim('job-2', lease => '1 hour')"),
	'claimed|1',
	'worker 1 claims job-2 with a long lease');

# It does the first step of the job and records it
is( $worker1->query_safe(
		"SELECT idem_checkpoint('job-1', 'charged', attempt => 1) IS NOT NULL"),
	't',
	'worker 1 records a checkpoint');

# It starts recording the next step, but dies before committing it
$worker1->query_safe('BEGIN');
is( $worker1->query_safe(
		"SELECT idem_checkpoint('job-1', 'emailed', attempt => 1) IS NOT NULL"),
	't',
	'worker 1 checkpoints again, uncommitted');

# SIGKILL of a backend: the postmaster resets shared memory and restarts,
# recovering from WAL
my $log_offset = -s $node->logfile;
kill 'KILL', $worker1_pid
  or BAIL_OUT("could not send SIGKILL to backend $worker1_pid");
$node->wait_for_log(qr/all server processes terminated; reinitializing/,
	$log_offset);
$node->poll_query_until('postgres', 'SELECT true')
  or die 'timed out waiting for the server to restart after the crash';
# (the postmaster calls it "server process" up to 16, "client backend" after)
ok( $node->log_contains(
		qr/\(PID $worker1_pid\) was terminated by signal 9/,
		$log_offset),
	'the backend of worker 1 was killed and the server restarted');
# worker 1's psql lost its connection: make sure it is gone
$worker1->{run}->kill_kill;

# The committed claim and checkpoint survived; the uncommitted one did not
is( $node->safe_psql(
		'postgres',
		"SELECT status, attempt, recovery_point, lease, completed_at IS NULL
		   FROM idem_lookup('job-1')"),
	'in_progress|1|charged|00:00:02|t',
	'the claim survived the crash with its last committed checkpoint');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_locks
		  WHERE locktype = 'advisory' AND objsubid = 18756"),
	'0',
	'no key lock survived the crash');

# A lease is not ended by the crash: job-2, whose lease still runs, is in
# progress for every caller
is( $node->safe_psql(
		'postgres',
		"SELECT outcome, attempt FROM idem_claim('job-2', lease => '1 hour')"),
	'in_progress|1',
	'a key whose lease still runs is in progress after the crash');

# Wait for the lease of job-1 to run out (no claim is made meanwhile)
$node->poll_query_until('postgres',
	"SELECT locked_until <= now() FROM idem_lookup('job-1')")
  or die 'timed out waiting for the lease of job-1 to run out';

# Worker 2 takes over from the recovery point, finishes and completes
my $worker2 = $node->background_psql('postgres');
is( $worker2->query_safe(
		"SELECT outcome, attempt, recovery_point
		   FROM idem_claim('job-1', lease => '1 hour')"),
	'claimed|2|charged',
	'worker 2 takes job-1 over: attempt 2, from the last checkpoint');
is( $node->safe_psql(
		'postgres',
		"SELECT outcome, attempt FROM idem_claim('job-1', lease => '1 hour')"),
	'in_progress|2',
	'a third caller sees worker 2 owning the key');

# The dead worker's attempt is stale now
my ($ret, $stdout, $stderr) = psql_verbose(
	"SELECT idem_complete('job-1', '{\"by\": \"worker 1\"}', attempt => 1)");
isnt($ret, 0, 'worker 1 cannot complete after the takeover');
like(
	$stderr,
	qr/ERROR:  55000: attempt 1 of idempotency key "job-1" is stale/,
	'worker 1 gets a stale-attempt error, SQLSTATE 55000');
($ret, $stdout, $stderr) = psql_verbose(
	"SELECT idem_checkpoint('job-1', 'emailed', attempt => 1)");
like(
	$stderr,
	qr/ERROR:  55000: attempt 1 of idempotency key "job-1" is stale/,
	'worker 1 cannot checkpoint after the takeover');

is( $worker2->query_safe(
		"SELECT idem_checkpoint('job-1', 'emailed', attempt => 2) IS NOT NULL"),
	't',
	'worker 2 records its progress');
$worker2->query_safe(
	"SELECT idem_complete('job-1', '{\"by\": \"worker 2\"}', attempt => 2)");
$worker2->quit;

# The late worker 1 still cannot change the result
($ret, $stdout, $stderr) = psql_verbose(
	"SELECT idem_complete('job-1', '{\"by\": \"worker 1\"}', attempt => 1)");
like(
	$stderr,
	qr/ERROR:  55000: idempotency key "job-1" is already completed/,
	'worker 1 cannot complete the completed key');
($ret, $stdout, $stderr) = psql_verbose(
	"SELECT idem_release('job-1', attempt => 1)");
like(
	$stderr,
	qr/ERROR:  55000: idempotency key "job-1" is already completed/,
	'worker 1 cannot release the completed key');

# Exactly one completion: worker 2's
is( $node->safe_psql(
		'postgres',
		"SELECT count(*), min(status::text), min(response::text), min(attempt),
				min(recovery_point), count(completed_at), count(locked_until)
		   FROM idem_keys WHERE key = 'job-1'"),
	'1|completed|{"by": "worker 2"}|2|emailed|1|0',
	'one row, completed once, by attempt 2');
is( $node->safe_psql(
		'postgres', "SELECT outcome, response, attempt FROM idem_claim('job-1')"),
	'replay|{"by": "worker 2"}|2',
	'a retry replays worker 2\'s response');

# And it survives a restart
$node->restart;
is( $node->safe_psql(
		'postgres', "SELECT outcome, response, attempt FROM idem_claim('job-1')"),
	'replay|{"by": "worker 2"}|2',
	'the completion survives a restart');

$node->stop;

done_testing();
