/*
 * stats.c
 *		What idem_stats shows: counters of outcomes kept in shared memory, and
 *		the sweeper's last run in each database.
 *
 * Counting is on the path of every claim, so backends do not share a counter
 * that they would all fight over: each backend adds to its own slot (its
 * backend id, or proc number from 17 on) without a lock, and a reader sums
 * the slots.  A slot outlives the backend that used it: the next backend
 * with that number keeps adding to it, so the sums only grow.  They start from zero when the
 * server starts and after a crash of a backend (the crash-restart cycle
 * reinitialises shared memory).
 *
 * The sweeper state is a small table of databases under one LWLock, written
 * once per sweeper run and read by idem_stats.
 *
 * All of it needs shared memory, which an extension gets only when it is in
 * shared_preload_libraries.  Otherwise counting does nothing and idem_stats
 * shows NULL.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_stats_shared);

/* Longest error message kept for a database, in bytes */
#define IDEM_ERROR_LEN	256

/*
 * Columns of idem_stats_shared(): the counters, counters_since, and the
 * sweeper's runs, keys, last run, last keys, last error and its time
 */
#define SWEEPER_COLUMNS	6
#define STATS_COLUMNS	(IDEM_NUM_COUNTERS + 1 + SWEEPER_COLUMNS)

/* One backend's counters, alone on its cache line(s) */
typedef union IdemCounterSlot
{
	pg_atomic_uint64 count[IDEM_NUM_COUNTERS];
	char		pad[TYPEALIGN(PG_CACHE_LINE_SIZE,
							  sizeof(pg_atomic_uint64) * IDEM_NUM_COUNTERS)];
} IdemCounterSlot;

/* The sweeper's record of one database */
typedef struct IdemSweeperState
{
	Oid			dboid;			/* InvalidOid: free entry */
	int64		runs;			/* runs since start-up */
	int64		keys;			/* keys deleted by those runs */
	int64		last_keys;		/* keys deleted by the last run */
	TimestampTz last_run;		/* when the last run ended */
	TimestampTz last_error_at;	/* when the last failed run ended, or 0 */
	char		last_error[IDEM_ERROR_LEN];
} IdemSweeperState;

/* The extension's shared memory */
typedef struct IdemShared
{
	LWLock	   *lock;			/* protects databases[] */
	TimestampTz since;			/* when the counters started from zero */
	int			nslots;			/* counter slots: one per backend number */
	int			ndatabases;		/* entries in databases[] */
	bool		full_reported;	/* databases[] ran out once already */
	/* counters of processes without a slot */
	pg_atomic_uint64 overflow[IDEM_NUM_COUNTERS];
	IdemSweeperState databases[FLEXIBLE_ARRAY_MEMBER];
} IdemShared;

static IdemShared *shared = NULL;
static IdemCounterSlot *slots = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Size of IdemShared */
static Size
shared_size(void)
{
	return add_size(offsetof(IdemShared, databases),
					mul_size(sizeof(IdemSweeperState), idem_max_databases));
}

/* Size of the counter slots */
static Size
slots_size(void)
{
	return mul_size(sizeof(IdemCounterSlot), MaxBackends);
}

/* Ask for shared memory and a lock; MaxBackends is known by now */
static void
idem_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(shared_size(), slots_size()));
	RequestNamedLWLockTranche("idempotency", 1);
}

/* Create or attach to shared memory, at start-up and after a crash */
static void
idem_shmem_startup(void)
{
	bool		found_shared;
	bool		found_slots;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("idempotency", shared_size(), &found_shared);
	slots = ShmemInitStruct("idempotency counters", slots_size(), &found_slots);
	if (!found_shared)
	{
		shared->lock = &(GetNamedLWLockTranche("idempotency"))->lock;
		shared->since = GetCurrentTimestamp();
		shared->nslots = MaxBackends;
		shared->ndatabases = idem_max_databases;
		shared->full_reported = false;
		for (i = 0; i < IDEM_NUM_COUNTERS; i++)
			pg_atomic_init_u64(&shared->overflow[i], 0);
		memset(shared->databases, 0,
			   sizeof(IdemSweeperState) * idem_max_databases);
	}
	if (!found_slots)
	{
		int			s;

		for (s = 0; s < MaxBackends; s++)
			for (i = 0; i < IDEM_NUM_COUNTERS; i++)
				pg_atomic_init_u64(&slots[s].count[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks when preloaded; nothing otherwise */
void
idem_stats_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = idem_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = idem_shmem_startup;
}

/*
 * Add n to a counter.  Only this backend writes its slot, so a plain read
 * and write suffice; the atomic type only keeps readers from seeing half of
 * a 64-bit value.
 */
void
idem_count(IdemCounter counter, int64 n)
{
	pg_atomic_uint64 *c;
	int			slot = IdemMyBackendSlot();

	if (slots == NULL || n <= 0)
		return;
	if (slot >= 0 && slot < shared->nslots)
	{
		c = &slots[slot].count[counter];
		pg_atomic_write_u64(c, pg_atomic_read_u64(c) + (uint64) n);
	}
	else
		pg_atomic_fetch_add_u64(&shared->overflow[counter], (uint64) n);
}

/* The sum of a counter over every slot */
static int64
counter_sum(IdemCounter counter)
{
	uint64		sum = pg_atomic_read_u64(&shared->overflow[counter]);
	int			s;

	for (s = 0; s < shared->nslots; s++)
		sum += pg_atomic_read_u64(&slots[s].count[counter]);
	return (int64) sum;
}

/* The entry of a database, or NULL; caller holds the lock */
static IdemSweeperState *
sweeper_entry(Oid dboid)
{
	int			i;

	for (i = 0; i < shared->ndatabases; i++)
		if (shared->databases[i].dboid == dboid)
			return &shared->databases[i];
	return NULL;
}

/*
 * Record a sweeper run in the current database: keys deleted, and the error
 * that ended it, if any.
 */
void
idem_sweeper_report(int64 keys, const char *error)
{
	IdemSweeperState *entry;
	bool		full = false;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = sweeper_entry(MyDatabaseId);
	if (entry == NULL && (entry = sweeper_entry(InvalidOid)) != NULL)
	{
		memset(entry, 0, sizeof(*entry));
		entry->dboid = MyDatabaseId;
	}
	if (entry != NULL)
	{
		entry->runs++;
		entry->keys += keys;
		entry->last_keys = keys;
		entry->last_run = GetCurrentTimestamp();
		if (error != NULL)
		{
			/* cut on a character boundary */
			int			len = pg_mbcliplen(error, strlen(error), IDEM_ERROR_LEN - 1);

			entry->last_error_at = entry->last_run;
			memcpy(entry->last_error, error, len);
			entry->last_error[len] = '\0';
		}
	}
	else if (!shared->full_reported)
		full = shared->full_reported = true;
	LWLockRelease(shared->lock);

	if (full)
		ereport(LOG,
				(errmsg("idem_stats cannot show the sweeper of more than %d databases",
						shared->ndatabases),
				 errhint("Increase \"idempotency.max_databases\".")));
}

/* Forget the sweeper state of a database (extension dropped) */
void
idem_sweeper_forget(Oid dboid)
{
	IdemSweeperState *entry;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = sweeper_entry(dboid);
	if (entry != NULL)
		memset(entry, 0, sizeof(*entry));
	LWLockRelease(shared->lock);
}

/* Forget the sweeper state of every database not in dboids (dropped ones) */
void
idem_sweeper_prune(const Oid *dboids, int n)
{
	int			i;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < shared->ndatabases; i++)
	{
		IdemSweeperState *entry = &shared->databases[i];
		bool		live = false;
		int			j;

		if (entry->dboid == InvalidOid)
			continue;
		for (j = 0; j < n && !live; j++)
			live = (dboids[j] == entry->dboid);
		if (!live)
			memset(entry, 0, sizeof(*entry));
	}
	LWLockRelease(shared->lock);
}

/*
 * idem_stats_shared(): the counters (cluster-wide) and the sweeper state of
 * the current database, as one row; all NULL when not preloaded.
 */
Datum
idem_stats_shared(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[STATS_COLUMNS];
	bool		isnull[STATS_COLUMNS];
	IdemSweeperState entry;
	IdemSweeperState *found;
	int			i;
	int			n = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (desc->natts != lengthof(values))
		elog(ERROR, "idem_stats_shared() must return %d columns",
			 (int) lengthof(values));

	if (shared == NULL)
	{
		memset(isnull, true, sizeof(isnull));
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, isnull)));
	}
	memset(isnull, false, sizeof(isnull));

	for (i = 0; i < IDEM_NUM_COUNTERS; i++)
		values[n++] = Int64GetDatum(counter_sum((IdemCounter) i));
	values[n++] = TimestampTzGetDatum(shared->since);

	LWLockAcquire(shared->lock, LW_SHARED);
	found = sweeper_entry(MyDatabaseId);
	if (found != NULL)
		entry = *found;
	else
		memset(&entry, 0, sizeof(entry));
	LWLockRelease(shared->lock);

	values[n++] = Int64GetDatum(entry.runs);
	values[n++] = Int64GetDatum(entry.keys);
	values[n] = TimestampTzGetDatum(entry.last_run);
	isnull[n++] = (entry.runs == 0);
	values[n] = Int64GetDatum(entry.last_keys);
	isnull[n++] = (entry.runs == 0);
	values[n] = CStringGetTextDatum(entry.last_error);
	isnull[n++] = (entry.last_error_at == 0);
	values[n] = TimestampTzGetDatum(entry.last_error_at);
	isnull[n++] = (entry.last_error_at == 0);
	Assert(n == lengthof(values));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, isnull)));
}
