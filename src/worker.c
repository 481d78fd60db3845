/*
 * worker.c
 *		Expiry in the background: a launcher, and a short-lived sweeper per
 *		database.
 *
 * The launcher is registered when the library is preloaded, or started by
 * idem_start_worker().  It is connected to no database, so it never keeps
 * one from being dropped.  Every idempotency.sweep_interval it lists the
 * databases that accept connections and, one after the other, starts a
 * sweeper in each and waits for it.  Templates are left out: a session
 * connected to one would make CREATE DATABASE fail.
 *
 * A sweeper connects, exits at once if the extension is not created in its
 * database, and otherwise deletes expired keys in batches of
 * idempotency.sweep_batch_size, one transaction per batch, until a batch
 * finds fewer keys than that (or the run has lasted one interval, so that
 * the other databases get their turn).  It then records its run for
 * idem_stats and exits.  An error ends the run; it is logged and recorded,
 * and the next interval brings a new sweeper.
 *
 * A sweeper gives way.  Before each batch it checks that no command waits to
 * have the database to itself: DROP DATABASE waits only a few seconds for
 * other sessions to leave, then fails.  A batch skips the table while DROP
 * EXTENSION or ALTER EXTENSION holds it, and waits for no row.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_start_worker);

PGDLLEXPORT void idem_launcher_main(Datum main_arg);
PGDLLEXPORT void idem_sweeper_main(Datum main_arg);

/* Seconds before the postmaster restarts a launcher that failed */
#define LAUNCHER_RESTART_TIME	5

/* How long a sweeper waits for a lock before it gives up its run */
#define SWEEPER_LOCK_TIMEOUT_MS	1000

/* A database to visit */
typedef struct SweepTarget
{
	Oid			oid;
	NameData	name;
} SweepTarget;

/*
 * The launcher holds this session lock while it runs, so that there is only
 * one.  It is an advisory lock in no database, with a last field that
 * pg_advisory_lock() never sets (it sets 1 or 2) and that differs from the
 * key locks' (keylock.c): pg_locks shows it as database 0, objsubid 18757.
 */
static void
launcher_locktag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, InvalidOid, 0, 1, IDEM_LAUNCHER_LOCK_SPACE);
}

/* Describe the launcher to the postmaster */
static void
launcher_worker(BackgroundWorker *worker)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = LAUNCHER_RESTART_TIME;
	strlcpy(worker->bgw_library_name, "idempotency", BGW_MAXLEN);
	strlcpy(worker->bgw_function_name, "idem_launcher_main", BGW_MAXLEN);
	strlcpy(worker->bgw_name, "idempotency launcher", BGW_MAXLEN);
	strlcpy(worker->bgw_type, "idempotency launcher", BGW_MAXLEN);
}

/* Register the launcher when preloaded; nothing otherwise */
void
idem_worker_init(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;
	launcher_worker(&worker);
	RegisterBackgroundWorker(&worker);
}

/* The sweep interval in milliseconds */
static int64
interval_ms(void)
{
	return (int64) idem_sweep_interval * 1000;
}

/* Reload settings and exit on request; for the launcher's waits */
static void
launcher_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	/* reloads settings, and exits cleanly on SIGTERM */
	IdemProcessMainLoopInterrupts();
}

/* The databases to sweep, in a list of SweepTarget allocated in cxt */
static List *
database_list(MemoryContext cxt)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	MemoryContext oldcxt;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tuple = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);
		SweepTarget *target;

		if (db->datistemplate || !db->datallowconn)
			continue;
#ifdef DATCONNLIMIT_INVALID_DB
		/* left half-dropped by an interrupted DROP DATABASE */
		if (database_is_invalid_form(db))
			continue;
#endif
		/* the list too must outlive the transaction */
		oldcxt = MemoryContextSwitchTo(cxt);
		target = palloc(sizeof(SweepTarget));
		target->oid = db->oid;
		target->name = db->datname;
		result = lappend(result, target);
		MemoryContextSwitchTo(oldcxt);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return result;
}

/*
 * Start a sweeper in a database and wait until it has exited; false if it
 * could not be started.
 */
static bool
run_sweeper(const SweepTarget *target)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	static bool reported = false;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "idempotency", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "idem_sweeper_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "idempotency sweeper for database \"%s\"",
			 NameStr(target->name));
	strlcpy(worker.bgw_type, "idempotency sweeper", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(target->oid);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		/* say it once per launcher, not once per interval */
		if (!reported)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("idempotency launcher could not start a sweeper"),
					 errdetail("All background worker slots are in use; expired keys are not being removed."),
					 errhint("Increase \"max_worker_processes\".")));
		reported = true;
		return false;
	}
	reported = false;

	/* the postmaster sets our latch when the sweeper starts and stops */
	for (;;)
	{
		pid_t		pid;
		BgwHandleStatus status = GetBackgroundWorkerPid(handle, &pid);

		if (status == BGWH_STOPPED)
			break;
		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		launcher_interrupts();
	}
	pfree(handle);
	return true;
}

/* Visit every database once */
static void
sweep_round(MemoryContext cxt)
{
	List	   *targets = database_list(cxt);
	Oid		   *oids = palloc(sizeof(Oid) * (list_length(targets) + 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, targets)
		oids[n++] = ((SweepTarget *) lfirst(lc))->oid;
	idem_sweeper_prune(oids, n);

	foreach(lc, targets)
	{
		launcher_interrupts();
		if (!run_sweeper((SweepTarget *) lfirst(lc)))
			break;
	}
}

/*
 * The launcher: a round every sweep_interval, the first one an interval
 * after it starts.  SIGHUP reloads the settings (a new interval counts from
 * the start of the last round); SIGTERM stops it until the next server start
 * or idem_start_worker().
 */
void
idem_launcher_main(Datum main_arg)
{
	LOCKTAG		tag;
	MemoryContext round_cxt;
	TimestampTz last_round;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	/* it runs no statements to cancel */
	pqsignal(SIGINT, SIG_IGN);
	BackgroundWorkerUnblockSignals();

	/* no database: only the shared catalogs, such as pg_database */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	launcher_locktag(&tag);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		ereport(DEBUG1,
				(errmsg("idempotency launcher is already running")));
		proc_exit(0);
	}
	ereport(DEBUG1,
			(errmsg("idempotency launcher started")));

	round_cxt = AllocSetContextCreate(TopMemoryContext,
									  "idempotency launcher",
									  ALLOCSET_DEFAULT_SIZES);
	last_round = GetCurrentTimestamp();
	for (;;)
	{
		TimestampTz now;
		TimestampTz next_round;

		launcher_interrupts();

		now = GetCurrentTimestamp();
		next_round = TimestampTzPlusMilliseconds(last_round, interval_ms());
		if (now >= next_round)
		{
			last_round = now;
			MemoryContextSwitchTo(round_cxt);
			sweep_round(round_cxt);
			MemoryContextSwitchTo(TopMemoryContext);
			MemoryContextReset(round_cxt);
			continue;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 TimestampDifferenceMilliseconds(now, next_round),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Is the database free for one more batch?  False when a command waits to
 * have it to itself (DROP DATABASE, ALTER DATABASE RENAME, CREATE DATABASE
 * from it as a template): new sessions queue behind such a command, and so
 * does this check, without waiting.  The lock is the one a new session
 * takes; it is held until the end of the batch.
 */
static bool
database_free(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	return LockAcquire(&tag, RowExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* Start one step of a sweeper run in its own transaction */
static void
step_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "idempotency: sweeping expired keys");
}

/* Commit one step */
static void
step_end(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Keep a run under idempotency.sweep_rate_limit: after a batch that started
 * at batch_start and deleted n keys, wait until the next batch is due.  A run
 * that fell behind catches up by one batch at most.
 */
static void
pace_run(TimestampTz *due, TimestampTz batch_start, int64 n)
{
	TimestampTz now;
	int64		step;

	if (idem_sweep_rate_limit <= 0)
		return;
	step = n * USECS_PER_SEC / idem_sweep_rate_limit;
	if (*due < batch_start - step)
		*due = batch_start - step;
	*due += step;
	now = GetCurrentTimestamp();
	if (*due <= now)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 TimestampDifferenceMilliseconds(now, *due),
					 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* Sweep the current database, and record the run */
static void
sweep_database(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	TimestampTz started = GetCurrentTimestamp();
	volatile int64 total = 0;
	volatile bool installed = false;
	volatile bool gave_way = false;
	TimestampTz due = 0;
	char	   *error = NULL;

	PG_TRY();
	{
		step_begin();
		if (database_free())
			installed = (idem_catalog_if_installed() != NULL);
		else
			gave_way = true;
		step_end();

		while (installed && !gave_way)
		{
			int64		batch = idem_sweep_batch_size;
			int64		deleted = 0;
			TimestampTz batch_start = GetCurrentTimestamp();

			CHECK_FOR_INTERRUPTS();
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}

			step_begin();
			if (!database_free())
				gave_way = true;
			else if (idem_catalog_if_installed() == NULL)
				installed = false;	/* DROP EXTENSION committed meanwhile */
			else
				deleted = idem_sweep_keys(batch, true);
			step_end();

			total += deleted;
			if (deleted < batch)
				break;
			if (TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
										   (int) interval_ms()))
				break;
			pace_run(&due, batch_start, deleted);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		FlushErrorState();
		error = pstrdup(edata->message);
		FreeErrorData(edata);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();

	pgstat_report_activity(STATE_IDLE, NULL);
	if (error != NULL)
		idem_sweeper_report(total, error);
	else if (installed)
		idem_sweeper_report(total, NULL);
	else if (!gave_way)
		idem_sweeper_forget(MyDatabaseId);
}

/* A sweeper: one run in one database */
void
idem_sweeper_main(Datum main_arg)
{
	char		lock_timeout[16];

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg),
											  InvalidOid, 0);

	/* never queue for long behind DROP EXTENSION, ALTER TABLE, ... */
	snprintf(lock_timeout, sizeof(lock_timeout), "%d", SWEEPER_LOCK_TIMEOUT_MS);
	SetConfigOption("lock_timeout", lock_timeout, PGC_SUSET, PGC_S_OVERRIDE);

	sweep_database();
	proc_exit(0);
}

/*
 * idem_start_worker(): start the launcher now, for a server that does not
 * preload the library; false if a launcher is running already.  A launcher
 * started this way lasts until the server stops.
 */
Datum
idem_start_worker(PG_FUNCTION_ARGS)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	LOCKTAG		tag;

	launcher_locktag(&tag);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		PG_RETURN_BOOL(false);
	LockRelease(&tag, ExclusiveLock, true);

	launcher_worker(&worker);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the idempotency launcher"),
				 errdetail("All background worker slots are in use."),
				 errhint("Increase \"max_worker_processes\".")));
	PG_RETURN_BOOL(true);
}
