# Waiting without holding a connection.  A claim with notify => true that
# answers in_progress is told, on channel 'idempotency' with the key's token
# as payload, when the key's holder ends: it commits, rolls back, completes
# or releases a leased key.  The waiter's next claim then replays or claims.
# Claims that did not ask send nothing; a listener learns only tokens; a
# bounded wait replays as soon as the holder commits.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('notify');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'idempotency'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION idempotency');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN idempotency');
my $holder = $node->background_psql('postgres');
my $waiter = $node->background_psql('postgres');

# The payloads the listener has received since the last call, waiting up to
# 'seconds' for the first one (0: only what has come already)
sub notifications
{
	my ($seconds) = @_;
	my $deadline = time() + $seconds;
	my @got;
	while (1)
	{
		my $out = $listener->query_safe('SELECT 1');
		push @got, $out =~ /with payload "([^"]*)"/g;
		last if @got || time() >= $deadline;
		usleep(20_000);
	}
	return join(',', @got);
}

sub token
{
	my ($key) = @_;
	return $node->safe_psql('postgres', "SELECT idem_notify_token('$key')");
}

# A transactional holder commits: the waiter is told, then replays
$holder->query_safe('BEGIN');
$holder->query_safe("SELECT outcome FROM idem_claim('n-commit')");
is( $waiter->query_safe(
		"SELECT outcome FROM idem_claim('n-commit', wait => false, notify => true)"),
	'in_progress',
	'a claim with notify answers in_progress while the key is in flight');
is(notifications(0), '', 'nothing is announced before the holder ends');
$holder->query_safe('COMMIT');
is(notifications(10), token('n-commit'), "the holder's commit is announced, with the key's token");
is($waiter->query_safe("SELECT outcome FROM idem_claim('n-commit', wait => false)"),
	'replay', 'the told waiter replays');

# A rollback is announced too: the waiter then claims
$holder->query_safe('BEGIN');
$holder->query_safe("SELECT outcome FROM idem_claim('n-rollback')");
$waiter->query_safe(
	"SELECT outcome FROM idem_claim('n-rollback', wait => false, notify => true)");
$holder->query_safe('ROLLBACK');
is(notifications(10), token('n-rollback'), "the holder's rollback is announced");
is($waiter->query_safe("SELECT outcome FROM idem_claim('n-rollback', wait => false)"),
	'claimed', 'the told waiter claims the key the holder gave up');

# A leased key: its completion is announced, and so is its release
$holder->query_safe("SELECT outcome FROM idem_claim('n-lease', lease => '1 hour')");
is( $waiter->query_safe(
		"SELECT outcome FROM idem_claim('n-lease', notify => true)"),
	'in_progress',
	'a claim with notify answers in_progress under a live lease');
$holder->query_safe("SELECT idem_complete('n-lease', '{\"ok\": 1}', attempt => 1)");
is(notifications(10), token('n-lease'), 'the completion of a leased key is announced');

$holder->query_safe("SELECT outcome FROM idem_claim('n-release', lease => '1 hour')");
$waiter->query_safe("SELECT outcome FROM idem_claim('n-release', notify => true)");
$holder->query_safe("SELECT idem_release('n-release', attempt => 1)");
is(notifications(10), token('n-release'), 'the release of a leased key is announced');
is( $waiter->query_safe(
		"SELECT outcome, attempt FROM idem_claim('n-release', lease => '1 hour')"),
	'claimed|2', 'the told waiter takes the released key over');

# Several waiters of one key: one announcement serves them all
$holder->query_safe('BEGIN');
$holder->query_safe("SELECT outcome FROM idem_claim('n-many')");
$waiter->query_safe("SELECT outcome FROM idem_claim('n-many', wait => false, notify => true)");
$node->safe_psql('postgres',
	"SELECT outcome FROM idem_claim('n-many', wait => false, notify => true)");
$holder->query_safe('COMMIT');
is(notifications(10), token('n-many'), 'two waiters of one key: one announcement');

# Claims that did not ask are not announced
$holder->query_safe('BEGIN');
$holder->query_safe("SELECT outcome FROM idem_claim('n-quiet')");
$waiter->query_safe("SELECT outcome FROM idem_claim('n-quiet', wait => false)");
$holder->query_safe('COMMIT');
is(notifications(1), '', 'a key whose waiters did not ask is not announced');

# A key that is not in flight: the claim answers at once, nothing to announce
$waiter->query_safe("SELECT outcome FROM idem_claim('n-free', notify => true)");
is(notifications(1), '', 'a claim that is answered at once watches nothing');

# A listener of another role learns only tokens, not keys or scopes
$node->safe_psql('postgres', 'CREATE ROLE other LOGIN');
my $token = $node->safe_psql('postgres',
	"SET ROLE other; SELECT idem_notify_token('n-commit')");
isnt($token, token('n-commit'),
	"another role's token for the same key string differs: keys of two roles are two keys");
like(token('n-commit'), qr/^[0-9a-f]{16}$/, 'a token is 16 hexadecimal digits');

# A bounded wait replays as soon as the holder commits
$holder->query_safe('BEGIN');
$holder->query_safe("SELECT outcome FROM idem_claim('n-bounded')");
$holder->query_safe("SELECT idem_complete('n-bounded', '{\"done\": true}')");
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/waiting/, q{\echo waiting
SELECT outcome, response FROM idem_claim('n-bounded', wait_timeout => '60 s');
});
usleep(300_000);
$holder->query_safe('COMMIT');
my $answer = $bg->query_safe('SELECT 1');
like($answer, qr/replay\|\{"done": true\}/,
	'a bounded wait replays once the holder commits, well before its bound');
$bg->quit;

$listener->quit;
$holder->quit;
$waiter->quit;

# Without the library preloaded, notify is refused with a clear error
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT outcome FROM idem_claim('n-nopreload', wait => false, notify => true)");
like($stderr, qr/notify needs the idempotency library in shared_preload_libraries/,
	'notify without the preloaded library is an error');

$node->stop;
done_testing();
