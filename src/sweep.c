/*
 * sweep.c
 *		idem_sweep(): delete expired keys, oldest first, through the index on
 *		expires_at.
 *
 * A sweep never waits for a row: a row that another transaction is changing
 * (a claim replacing an expired key, say) is left for the next sweep.  It
 * deletes only rows that were committed when it started, and never a key
 * under an unexpired lease.  A claim that replaces an expired row the sweep
 * has just deleted waits for the sweep's transaction, so sweeps should be
 * short: the background worker commits every idempotency.sweep_batch_size
 * rows, and idem_sweep(max_rows) bounds a sweep run by hand.
 *
 * The index entries of deleted rows stay until VACUUM.  So that a run of
 * batches (the worker's, or idem_sweep(n) called in a loop) does not walk
 * again, in every batch, the entries that the batches before it deleted, a
 * batch that deletes as many rows as it was asked for leaves a mark where it
 * stopped, and the next batch of this backend starts there.
 *
 * Under Citus, idem_keys is an empty shell on every node and the keys are
 * in its shards: a node sweeps the shards it holds (citus.c lists them), each
 * through its own index on expires_at, and the mark names the shard.
 *
 * A sweep is maintenance, and must not make claims wait for the CPU: the
 * background worker sleeps on its latch between batches to keep under
 * idempotency.sweep_rate_limit (worker.c).  Within a batch the sweep only
 * checks for interrupts every INTERRUPT_KEYS keys, so that a long
 * idem_sweep() can be cancelled.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "idempotency.h"
#include "citus.h"

PG_FUNCTION_INFO_V1(idem_sweep);

/* Keys a sweep deletes between two checks for interrupts */
#define INTERRUPT_KEYS	32

/*
 * Where this backend's last full batch stopped: the expires_at of the last
 * row it deleted, in the (sub)transaction xid.  Rows before it are deleted,
 * or were skipped (leased, or busy in another transaction) and are left for
 * the next run.  The mark is followed only once xid has committed, and a
 * batch that finds fewer rows than it was asked for ends the run and clears
 * it.  A wrong mark can only delay expiry, never delete a live key.
 */
static struct
{
	Oid			relid;
	TransactionId xid;
	TimestampTz expires_at;
} resume;

/* May this batch start at the mark that the previous batch left? */
static bool
resume_valid(Oid relid)
{
	bool		committed;

	if (resume.relid != relid || !TransactionIdIsValid(resume.xid))
		return false;
	if (TransactionIdIsCurrentTransactionId(resume.xid))
		return true;

	/*
	 * The commit log may no longer know a transaction that old; the lock
	 * keeps it from being truncated while we look (as pg_xact_status() does)
	 */
	LWLockAcquire(XactTruncationLock, LW_SHARED);
	committed = !TransactionIdPrecedes(resume.xid,
									   IdemTransamVariables->oldestClogXid) &&
		TransactionIdDidCommit(resume.xid);
	LWLockRelease(XactTruncationLock);
	return committed;
}

/* Is the slot's row under a lease that has not run out? */
static bool
leased(TupleTableSlot *slot, const IdemCatalog *cat, TimestampTz now)
{
	bool		isnull;
	Datum		value;

	value = slot_getattr(slot, cat->attnum[IDEM_COL_STATUS], &isnull);
	if (DatumGetObjectId(value) != cat->status_in_progress)
		return false;
	value = slot_getattr(slot, cat->attnum[IDEM_COL_LOCKED_UNTIL], &isnull);
	return !isnull && DatumGetTimestampTz(value) > now;
}

/*
 * Delete up to max_rows expired keys (all of them if max_rows is 0) from one
 * relation, idem_keys or a shard of it, through its index on expires_at, in
 * the current transaction; returns how many.  A batch that deletes max_rows
 * keys leaves the mark where it stopped.
 */
static int64
sweep_relation(Relation rel, Oid indexid, int64 max_rows, TimestampTz now)
{
	const IdemCatalog *cat = idem_catalog();
	Relation	index;
	IndexScanDesc scan;
	ScanKeyData skey[2];
	int			nkeys = 1;
	TupleTableSlot *slot;
	TimestampTz last_expires = 0;
	Snapshot	snapshot;
	CommandId	cid;
	int64		deleted = 0;

	index = index_open(indexid, AccessShareLock);
	cid = GetCurrentCommandId(true);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&skey[0], 1, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
				TimestampTzGetDatum(now));
	if (resume_valid(RelationGetRelid(rel)))
		ScanKeyInit(&skey[nkeys++], 1, BTGreaterEqualStrategyNumber,
					F_TIMESTAMPTZ_GE, TimestampTzGetDatum(resume.expires_at));
	slot = table_slot_create(rel, NULL);
	scan = idem_index_beginscan(rel, index, snapshot, nkeys, 0);
	index_rescan(scan, skey, nkeys, NULL, 0);

	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		TM_FailureData tmfd;

		if (leased(slot, cat, now))
			continue;
		if (table_tuple_delete(rel, &slot->tts_tid, cid, snapshot,
							   InvalidSnapshot, false, &tmfd, false) != TM_Ok)
			continue;
		if (++deleted % INTERRUPT_KEYS == 0)
			CHECK_FOR_INTERRUPTS();
		if (deleted == max_rows)
		{
			bool		isnull;

			last_expires = DatumGetTimestampTz(slot_getattr(slot,
															cat->attnum[IDEM_COL_EXPIRES_AT],
															&isnull));
			break;
		}
	}

	if (max_rows > 0 && deleted == max_rows)
	{
		resume.relid = RelationGetRelid(rel);
		resume.xid = GetCurrentTransactionIdIfAny();
		resume.expires_at = last_expires;
	}

	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	/* the index stays locked until the transaction ends */
	index_close(index, NoLock);
	return deleted;
}

/*
 * Delete expired keys from the shards of idem_keys that this node holds,
 * under Citus, up to max_rows in all.  A run of batches goes round the
 * shards: a batch starts in the shard where the previous full batch
 * stopped, at its mark, and goes on through the following ones.  With
 * nowait a locked shard is left for the next run.
 */
static int64
sweep_shards(List *shards, int64 max_rows, bool nowait, TimestampTz now)
{
	int			n = list_length(shards);
	int			start = 0;
	int			i;
	int64		deleted = 0;

	for (i = 0; i < n; i++)
	{
		if (list_nth_oid(shards, i) == resume.relid &&
			resume_valid(resume.relid))
		{
			start = i;
			break;
		}
	}
	for (i = 0; i < n; i++)
	{
		Oid			relid = list_nth_oid(shards, (start + i) % n);
		Oid			indexid;
		Relation	rel;

		/* the mark is for its own shard only */
		if (relid != resume.relid)
			resume.relid = InvalidOid;
		rel = idem_citus_open_shard(relid, RowExclusiveLock, nowait, &indexid);
		if (rel == NULL)
			continue;
		deleted += sweep_relation(rel, indexid,
								  max_rows > 0 ? max_rows - deleted : 0, now);
		/* it stays locked until the transaction ends */
		table_close(rel, NoLock);
		if (max_rows > 0 && deleted == max_rows)
			break;
	}
	return deleted;
}

/*
 * Delete up to max_rows expired keys (all of them if max_rows is 0) in the
 * current transaction; returns how many.  With nowait, give up at once if
 * the table is locked (DROP EXTENSION, say) rather than queue behind it.
 * When Citus distributes idem_keys, the keys are in its shards, and the
 * sweep deletes from those this node holds, never from the empty shell.
 */
int64
idem_sweep_keys(int64 max_rows, bool nowait)
{
	const IdemCatalog *cat;
	TimestampTz now = GetCurrentTimestamp();
	Oid			relid;
	List	   *shards;
	bool		distributed;
	int64		deleted;

	/* with nowait, a table that is locked or gone is left for the next run */
	relid = idem_catalog_lock_keys(RowExclusiveLock, nowait);
	if (!OidIsValid(relid))
		return 0;
	cat = idem_catalog();
	if (!OidIsValid(cat->expires_indexid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"idem_keys\" has no btree index on expires_at"),
				 errdetail("The sweep deletes expired keys in the order of that index."),
				 errhint("Create one with CREATE INDEX ON idem_keys (expires_at).")));

	shards = idem_citus_local_shards(&distributed);
	if (distributed)
		deleted = sweep_shards(shards, max_rows, nowait, now);
	else
	{
		Relation	rel = table_open(relid, NoLock);

		deleted = sweep_relation(rel, cat->expires_indexid, max_rows, now);
		/* it stays locked until the transaction ends */
		table_close(rel, NoLock);
	}
	list_free(shards);

	/* a batch that found fewer keys than it was asked for ends the run */
	if (max_rows == 0 || deleted < max_rows)
		resume.relid = InvalidOid;

	if (deleted > 0)
		CommandCounterIncrement();
	idem_count(IDEM_COUNT_SWEPT, deleted);
	return deleted;
}

/*
 * idem_sweep(max_rows): delete expired keys now, in this transaction
 */
Datum
idem_sweep(PG_FUNCTION_ARGS)
{
	int64		max_rows = 0;

	if (!PG_ARGISNULL(0))
	{
		max_rows = PG_GETARG_INT32(0);
		if (max_rows <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_rows must be positive"),
					 errhint("Pass NULL to delete every expired key.")));
	}
	idem_prevent_write("idem_sweep()");
	PG_RETURN_INT64(idem_sweep_keys(max_rows, false));
}
