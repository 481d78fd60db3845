/*
 * notify.c
 *		Opt-in notification of the end of a key in flight:
 *		idem_claim(..., notify => true) and idem_notify_token().
 *
 * A retry that meets a key in flight can answer 409 at once and give its
 * pooled connection back, instead of waiting; it then wants to be told when
 * the key's holder is done.  A claim that asks for it (notify) and answers
 * in_progress registers a watch on the key.  When a transaction that held
 * the key's lock ends, commits or rolls back (a claim, a completion, a
 * release), its watches are removed and a NOTIFY is sent on the channel
 * IDEM_NOTIFY_CHANNEL, with the key's token as payload: a hash of (owner,
 * scope, key) that idem_notify_token() also gives, so that a listener of
 * another role learns nothing of the key.  A lease that runs out without a
 * completion is not announced, nor is the end of a prepared transaction
 * (COMMIT PREPARED runs no callback of ours): a waiter keeps a timeout.
 *
 * A transaction that rolls back cannot send a NOTIFY, and one that commits
 * has sent its notifications before it knows its commit is visible.  So a
 * worker per database that has watches (the notifier, started on the first
 * watch, gone after a minute without any) sends them all: an ending
 * transaction only moves the tokens of its watched keys to a queue in shared
 * memory and sets the notifier's latch.
 *
 * No announcement is lost between a claim's answer and its watch.  An ending
 * transaction raises the commit counts of its keys' slots (keylock.c), then
 * looks for watches; a claim registers its watch, then compares the slot's
 * count with the one it read before it first read the key.  Each does its
 * write before its read, with a full barrier between, so at least one sees
 * the other: either the watch is found, or the claim sees the count moved,
 * drops its watch, and reads the key again (the holder's end is visible by
 * then).  A count moved by another key of the slot only costs that re-read.
 *
 * Claims that do not ask pay one atomic read when a transaction with key
 * locks ends.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_notify_token);

PGDLLEXPORT void idem_notifier_main(Datum main_arg);

/* Watches kept at once, in the whole cluster */
#define WATCH_ENTRIES		1024

/* Tokens waiting for their notifier */
#define QUEUE_ENTRIES		1024

/* Databases with a notifier at once */
#define MAX_NOTIFIERS		16

/* A notifier without watches in its database exits after this long */
#define NOTIFIER_IDLE_MS	60000

/* A watch: a claim's wish to be told of a key's end */
typedef struct Watch
{
	Oid			db;				/* InvalidOid: free */
	uint64		hash;			/* idem_key_hash() of the key */
	TimestampTz since;
} Watch;

/* A token to send */
typedef struct QueuedToken
{
	Oid			db;
	uint64		hash;
} QueuedToken;

/* A database's notifier */
typedef struct Notifier
{
	Oid			db;				/* InvalidOid: free */
	int			pid;			/* 0 while it starts */
	Latch	   *latch;			/* NULL while it starts */
	TimestampTz started;		/* when it was asked to start */
} Notifier;

/* A notifier that has not taken its slot after this long is started again */
#define NOTIFIER_START_MS	10000

typedef struct NotifyShared
{
	LWLock	   *lock;
	pg_atomic_uint32 nwatches;	/* watches in use */
	Watch		watches[WATCH_ENTRIES];
	int			nqueued;
	QueuedToken queue[QUEUE_ENTRIES];
	Notifier	notifiers[MAX_NOTIFIERS];
} NotifyShared;

static NotifyShared *notify_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* A key's token: its hash, 16 hexadecimal digits */
static void
token_of(uint64 hash, char *buf)
{
	snprintf(buf, 17, "%08x%08x", (uint32) (hash >> 32), (uint32) hash);
}

/* Ask for shared memory and its lock */
static void
notify_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(NotifyShared));
	RequestNamedLWLockTranche("idempotency notify", 1);
}

/* Create or attach to shared memory, at start-up and after a crash */
static void
notify_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	notify_shared = ShmemInitStruct("idempotency notify", sizeof(NotifyShared), &found);
	if (!found)
	{
		memset(notify_shared, 0, sizeof(NotifyShared));
		notify_shared->lock = &(GetNamedLWLockTranche("idempotency notify"))->lock;
		pg_atomic_init_u32(&notify_shared->nwatches, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Register the shared memory hooks when preloaded */
void
idem_notify_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notify_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notify_shmem_startup;
}

/* Start this database's notifier unless it runs; call holding the lock */
static void
start_notifier(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	Notifier   *free_slot = NULL;
	int			i;

	for (i = 0; i < MAX_NOTIFIERS; i++)
	{
		Notifier   *n = &notify_shared->notifiers[i];

		if (n->db == MyDatabaseId)
		{
			/* running, or starting: unless its start failed, nothing to do */
			if (n->pid != 0 ||
				!TimestampDifferenceExceeds(n->started, GetCurrentTimestamp(),
											NOTIFIER_START_MS))
				return;
			free_slot = n;
			break;
		}
		if (n->db == InvalidOid && free_slot == NULL)
			free_slot = n;
	}
	if (free_slot == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many databases wait for notifications of idempotency keys"),
				 errdetail("At most %d databases can have watches at once.", MAX_NOTIFIERS)));

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "idempotency", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "idem_notifier_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "idempotency notifier for database %u",
			 MyDatabaseId);
	strlcpy(worker.bgw_type, "idempotency notifier", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the idempotency notifier"),
				 errhint("Raise max_worker_processes.")));
	free_slot->db = MyDatabaseId;
	free_slot->pid = 0;
	free_slot->latch = NULL;
	free_slot->started = GetCurrentTimestamp();
}

/* Fail unless notifications can be given: the library must be preloaded */
void
idem_notify_check(void)
{
	if (notify_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("notify needs the idempotency library in shared_preload_libraries"),
				 errhint("Add idempotency to shared_preload_libraries and restart the server.")));
}

/*
 * Watch a key whose claim is about to answer in_progress, so that the end of
 * its holder is announced.  False if a holder of the key's slot ended since
 * the claim first read the key (idem_key_watch()): that end may have gone
 * unannounced, and the caller must read the key again.
 */
bool
idem_notify_watch(const IdemKeyLock *kl)
{
	Watch	   *slot = NULL;
	Watch	   *oldest = NULL;
	TimestampTz now = GetCurrentTimestamp();
	bool		ended;
	int			i;

	idem_notify_check();
	Assert(idem_key_ends_known(kl));

	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < WATCH_ENTRIES; i++)
	{
		Watch	   *w = &notify_shared->watches[i];

		if (w->db == MyDatabaseId && w->hash == kl->hash)
		{
			slot = w;			/* watched already: one token serves all */
			break;
		}
		if (w->db == InvalidOid && slot == NULL)
			slot = w;
		if (w->db != InvalidOid && (oldest == NULL || w->since < oldest->since))
			oldest = w;
	}
	/* full: the oldest watch gives way (its waiter has a timeout) */
	if (slot == NULL)
	{
		slot = oldest;
		slot->db = InvalidOid;
		pg_atomic_fetch_sub_u32(&notify_shared->nwatches, 1);
	}
	if (slot->db == InvalidOid)
	{
		start_notifier();
		slot->db = MyDatabaseId;
		slot->hash = kl->hash;
		pg_atomic_fetch_add_u32(&notify_shared->nwatches, 1);
	}
	slot->since = now;
	LWLockRelease(notify_shared->lock);

	/* the watch is visible before we look at the count (see above) */
	pg_memory_barrier();
	ended = idem_key_ended(kl);
	/* an ended key's watch stays: the caller may watch it again */
	return !ended;
}

/*
 * A transaction that held the locks of keys with these hashes ends (commit
 * or rollback), after raising their slots' counts: queue the tokens of the
 * watched ones for the notifier.  Called from the transaction callback.
 */
void
idem_notify_ended(const uint64 *hashes, int n)
{
	Latch	   *latch = NULL;
	bool		queued = false;
	int			i;
	int			j;

	if (notify_shared == NULL || n == 0)
		return;
	/* the counts were raised before we look at the watches (see above) */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&notify_shared->nwatches) == 0)
		return;

	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < WATCH_ENTRIES; i++)
	{
		Watch	   *w = &notify_shared->watches[i];

		if (w->db != MyDatabaseId)
			continue;
		for (j = 0; j < n; j++)
		{
			if (hashes[j] != w->hash)
				continue;
			if (notify_shared->nqueued < QUEUE_ENTRIES)
			{
				QueuedToken *q = &notify_shared->queue[notify_shared->nqueued++];

				q->db = w->db;
				q->hash = w->hash;
				queued = true;
			}
			w->db = InvalidOid;
			pg_atomic_fetch_sub_u32(&notify_shared->nwatches, 1);
			break;
		}
	}
	if (queued)
	{
		for (i = 0; i < MAX_NOTIFIERS; i++)
		{
			if (notify_shared->notifiers[i].db == MyDatabaseId)
				latch = notify_shared->notifiers[i].latch;
		}
	}
	LWLockRelease(notify_shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Take this database's queued tokens and send them, in one transaction.
 * False if there was nothing to send.
 */
static bool
send_queued(void)
{
	char		(*tokens)[17];
	int			ntokens = 0;
	int			i;

	tokens = palloc(sizeof(*tokens) * QUEUE_ENTRIES);
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < notify_shared->nqueued;)
	{
		QueuedToken *q = &notify_shared->queue[i];

		if (q->db != MyDatabaseId)
		{
			i++;
			continue;
		}
		token_of(q->hash, tokens[ntokens++]);
		notify_shared->queue[i] = notify_shared->queue[--notify_shared->nqueued];
	}
	LWLockRelease(notify_shared->lock);

	if (ntokens > 0)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		for (i = 0; i < ntokens; i++)
			Async_Notify(IDEM_NOTIFY_CHANNEL, tokens[i]);
		CommitTransactionCommand();
		pgstat_report_stat(false);
	}
	pfree(tokens);
	return ntokens > 0;
}

/*
 * Leave the notifier's slot if its database has no watch and no queued
 * token left; false if it must go on
 */
static bool
notifier_leave(Notifier *me)
{
	bool		busy = false;
	int			i;

	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < WATCH_ENTRIES && !busy; i++)
		busy = (notify_shared->watches[i].db == MyDatabaseId);
	for (i = 0; i < notify_shared->nqueued && !busy; i++)
		busy = (notify_shared->queue[i].db == MyDatabaseId);
	if (!busy)
	{
		me->db = InvalidOid;
		me->pid = 0;
		me->latch = NULL;
	}
	LWLockRelease(notify_shared->lock);
	return !busy;
}

/* Clear the notifier's slot when it exits on an error or a signal */
static void
notifier_exit(int code, Datum arg)
{
	Notifier   *me = (Notifier *) DatumGetPointer(arg);

	/* the slot may have been left, and taken by another notifier since */
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	if (me->pid == MyProcPid)
	{
		me->db = InvalidOid;
		me->pid = 0;
		me->latch = NULL;
	}
	LWLockRelease(notify_shared->lock);
}

/* A notifier: sends the queued tokens of its database */
void
idem_notifier_main(Datum main_arg)
{
	Oid			db = DatumGetObjectId(main_arg);
	Notifier   *me = NULL;
	TimestampTz last_busy;
	int			i;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, 0);

	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < MAX_NOTIFIERS && me == NULL; i++)
	{
		Notifier   *n = &notify_shared->notifiers[i];

		if (n->db == db && n->pid == 0)
		{
			me = n;
			me->pid = MyProcPid;
			me->latch = MyLatch;
		}
	}
	LWLockRelease(notify_shared->lock);
	if (me == NULL)
		proc_exit(0);			/* not wanted any more, or another took over */
	before_shmem_exit(notifier_exit, PointerGetDatum(me));

	last_busy = GetCurrentTimestamp();
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (send_queued())
			last_busy = GetCurrentTimestamp();
		else if (TimestampDifferenceExceeds(last_busy, GetCurrentTimestamp(),
											NOTIFIER_IDLE_MS) &&
				 notifier_leave(me))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	proc_exit(0);
}

/*
 * idem_notify_token(key, scope, owner): the payload of the notification
 * that announces the end of this key
 */
Datum
idem_notify_token(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	char		buf[17];

	name.key = idem_key_arg(fcinfo, 0);
	name.scope = idem_scope_arg(fcinfo, 1);
	name.owner = idem_owner_arg(fcinfo, 2);
	token_of(idem_key_hash(&name), buf);
	PG_RETURN_TEXT_P(cstring_to_text(buf));
}
