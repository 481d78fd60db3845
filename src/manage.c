/*
 * manage.c
 *		What a claim's owner and an operator do with a key afterwards:
 *		idem_complete(), idem_checkpoint(), idem_release(), idem_forget()
 *		and idem_lookup().
 *
 * Every writer takes the key's lock and keeps it to the end of its
 * transaction, so that no claim can take over a row while it changes.
 * Every function reaches only the keys of the role it acts for (the
 * current role, or the owner argument), and keeps its lock on idem_keys
 * until the transaction ends.
 */
#include "postgres.h"

#include "access/table.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_complete);
PG_FUNCTION_INFO_V1(idem_checkpoint);
PG_FUNCTION_INFO_V1(idem_release);
PG_FUNCTION_INFO_V1(idem_forget);
PG_FUNCTION_INFO_V1(idem_lookup);

/*
 * Lock the key and read its row as the claim paths do.  A row that records
 * no owner (from version 0.1) is changed under its own lock too, taken
 * after ours, as a claim does.
 */
static bool
fetch_locked(Relation rel, IdemKeyLock *kl, const IdemKeyName *name,
			 IdemRow *row)
{
	bool		found;

	idem_key_prepare(kl, name);
	idem_key_lock(kl, true);
	found = idem_pending_fetch(rel, name, row) ||
		idem_keys_fetch(rel, name, SnapshotSelf, row);
	if (found && idem_row_owner(row) != name->owner)
	{
		IdemKeyName shared = *name;
		IdemKeyLock shared_lock;

		shared.owner = InvalidOid;
		idem_key_prepare(&shared_lock, &shared);
		idem_key_lock(&shared_lock, true);
		found = idem_keys_fetch(rel, name, SnapshotSelf, row);
	}
	return found;
}

/* The key a function names: key, scope and owner arguments */
static void
key_name_args(FunctionCallInfo fcinfo, IdemKeyName *name, int key_argno,
			  int scope_argno, int owner_argno)
{
	name->key = idem_key_arg(fcinfo, key_argno);
	name->scope = idem_scope_arg(fcinfo, scope_argno);
	name->owner = idem_owner_arg(fcinfo, owner_argno);
}

/* Fail unless the key has a live, in-progress row */
static void
check_in_progress(const IdemRow *row, bool found, text *key, TimestampTz now)
{
	if (!found || !idem_row_live(row, now))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" is not claimed", idem_key_cstring(key)),
				 errhint("Call idem_claim() first; an expired key must be claimed again.")));
	if (idem_row_completed(row))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" is already completed", idem_key_cstring(key)),
				 errhint("idem_forget() deletes a completed key.")));
}

/* Write the row back; fail if a sweep deleted it meanwhile */
static void
update_or_fail(Relation rel, IdemRow *row, text *key)
{
	if (idem_keys_update(rel, row) == TM_Deleted)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" expired and was deleted", idem_key_cstring(key)),
				 errhint("Call idem_claim() to claim it again.")));
}

/*
 * Fail unless the caller owns the in-progress row: it was written by this
 * transaction, or it is leased and 'attempt' is its current attempt.  The
 * attempt is the fencing token: once a lease ran out and another caller took
 * the key over, the old attempt can no longer change it.
 */
static void
check_owner(const IdemRow *row, text *key, FunctionCallInfo fcinfo, int argno)
{
	int32		current = DatumGetInt32(row->values[IDEM_COL_ATTEMPT]);

	if (!PG_ARGISNULL(argno))
	{
		int32		attempt = PG_GETARG_INT32(argno);

		if (attempt < current)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("attempt %d of idempotency key \"%s\" is stale",
							attempt, idem_key_cstring(key)),
					 errdetail("The lease of attempt %d ran out and the key was taken over; the current attempt is %d.",
							   attempt, current),
					 errhint("Stop working on this key: its current owner will finish it.")));
		if (attempt != current)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("attempt %d of idempotency key \"%s\" does not exist",
							attempt, idem_key_cstring(key)),
					 errdetail("The current attempt is %d.", current)));
	}
	if (row->own)
		return;
	if (row->isnull[IDEM_COL_LEASE])
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" is not claimed by this transaction",
						idem_key_cstring(key)),
				 errdetail("A key claimed without a lease belongs to the transaction that claimed it.")));
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempt must be given for a leased key claimed by another transaction"),
				 errhint("Pass the attempt that idem_claim() returned.")));
}

/*
 * idem_complete(key, response, scope, attempt, owner): store the result of a
 * claim
 */
Datum
idem_complete(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	IdemKeyLock keylock;
	Relation	rel;
	IdemRow		row;
	bool		found;

	key_name_args(fcinfo, &name, 0, 2, 4);
	if (!PG_ARGISNULL(1))
		idem_check_payload_size(PG_GETARG_DATUM(1), false, "response");
	idem_prevent_write("idem_complete()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);

	/* a claim that will be written at commit is completed in memory */
	if (idem_deferred_row(&name, &row))
	{
		check_in_progress(&row, true, name.key, now);
		check_owner(&row, name.key, fcinfo, 3);
		idem_deferred_complete(&name,
							   PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1), now);
		table_close(rel, NoLock);
		idem_count(IDEM_COUNT_COMPLETIONS, 1);
		PG_RETURN_VOID();
	}

	/* a key this transaction claimed is read where the claim wrote it */
	found = fetch_locked(rel, &keylock, &name, &row);
	check_in_progress(&row, found, name.key, now);
	check_owner(&row, name.key, fcinfo, 3);

	idem_row_set(&row, IDEM_COL_STATUS,
				 ObjectIdGetDatum(idem_catalog()->status_completed), false);
	idem_row_set(&row, IDEM_COL_RESPONSE,
				 PG_ARGISNULL(1) ? (Datum) 0 : PointerGetDatum(PG_GETARG_JSONB_P(1)),
				 PG_ARGISNULL(1));
	idem_row_set(&row, IDEM_COL_COMPLETED_AT, TimestampTzGetDatum(now), false);
	idem_row_set(&row, IDEM_COL_LOCKED_UNTIL, (Datum) 0, true);
	update_or_fail(rel, &row, name.key);
	table_close(rel, NoLock);

	/* the commit need not look at this key again */
	idem_pending_completed(&name, &row.tid);
	idem_count(IDEM_COUNT_COMPLETIONS, 1);
	PG_RETURN_VOID();
}

/*
 * idem_checkpoint(key, recovery_point, scope, attempt, owner): record
 * progress of a leased claim and extend its lease by its length.  A NULL
 * recovery point keeps the last one.  Returns the new end of the lease.
 */
Datum
idem_checkpoint(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	TimestampTz locked_until;
	IdemKeyLock keylock;
	Relation	rel;
	IdemRow		row;
	bool		found;

	key_name_args(fcinfo, &name, 0, 2, 4);
	if (!PG_ARGISNULL(1))
		idem_check_payload_size(PG_GETARG_DATUM(1), true, "recovery point");
	idem_prevent_write("idem_checkpoint()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);
	found = idem_deferred_row(&name, &row) ||
		fetch_locked(rel, &keylock, &name, &row);
	check_in_progress(&row, found, name.key, now);
	if (row.isnull[IDEM_COL_LEASE])
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" has no lease", idem_key_cstring(name.key)),
				 errhint("idem_checkpoint() records the progress of a claim made with a lease.")));
	check_owner(&row, name.key, fcinfo, 3);

	/* the lease was checked when it was claimed: the sum cannot overflow */
	locked_until = idem_timestamp_plus(now, DatumGetIntervalP(row.values[IDEM_COL_LEASE]),
									   "lease");
	if (!PG_ARGISNULL(1))
		idem_row_set(&row, IDEM_COL_RECOVERY_POINT, PG_GETARG_DATUM(1), false);
	idem_row_set(&row, IDEM_COL_LOCKED_UNTIL, TimestampTzGetDatum(locked_until), false);
	if (DatumGetTimestampTz(row.values[IDEM_COL_EXPIRES_AT]) < locked_until)
		idem_row_set(&row, IDEM_COL_EXPIRES_AT, TimestampTzGetDatum(locked_until), false);
	update_or_fail(rel, &row, name.key);
	table_close(rel, NoLock);

	PG_RETURN_TIMESTAMPTZ(locked_until);
}

/*
 * idem_release(key, scope, attempt, owner): give a claim up so that a retry
 * runs again.  Returns false if there was no live key to release.
 *
 * A first, transactional claim is deleted.  A key that was leased or taken
 * over keeps its row, with its lease ended at -infinity and no recovery
 * point: the next claim takes it over with the next attempt, so an attempt
 * number is never handed out twice and every earlier attempt stays fenced
 * off.
 */
Datum
idem_release(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	IdemKeyLock keylock;
	Relation	rel;
	IdemRow		row;
	bool		found;
	bool		released = false;

	key_name_args(fcinfo, &name, 0, 1, 3);
	idem_prevent_write("idem_release()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);

	/* a claim that would be written at commit is simply not written */
	if (idem_deferred_row(&name, &row))
	{
		check_in_progress(&row, true, name.key, now);
		check_owner(&row, name.key, fcinfo, 2);
		idem_deferred_drop(&name);
		table_close(rel, NoLock);
		idem_count(IDEM_COUNT_RELEASES, 1);
		PG_RETURN_BOOL(true);
	}

	found = fetch_locked(rel, &keylock, &name, &row);
	if (found && idem_row_live(&row, now))
	{
		check_in_progress(&row, found, name.key, now);
		check_owner(&row, name.key, fcinfo, 2);
		if (row.isnull[IDEM_COL_LEASE] &&
			DatumGetInt32(row.values[IDEM_COL_ATTEMPT]) == 1)
			released = (idem_keys_delete(rel, &row.tid, true) == TM_Ok);
		else
		{
			idem_row_set(&row, IDEM_COL_LOCKED_UNTIL,
						 TimestampTzGetDatum(DT_NOBEGIN), false);
			idem_row_set(&row, IDEM_COL_RECOVERY_POINT, (Datum) 0, true);
			update_or_fail(rel, &row, name.key);
			released = true;
		}
	}
	if (!released)
		idem_key_unlock(&keylock);
	table_close(rel, NoLock);

	if (released)
		idem_count(IDEM_COUNT_RELEASES, 1);
	PG_RETURN_BOOL(released);
}

/*
 * idem_forget(key, scope, owner): delete a key whatever its state.  Returns
 * whether there was a row to delete.
 */
Datum
idem_forget(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	IdemKeyLock keylock;
	Relation	rel;
	IdemRow		row;
	bool		deleted = false;

	key_name_args(fcinfo, &name, 0, 1, 2);
	idem_prevent_write("idem_forget()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);
	if (idem_deferred_row(&name, &row))
	{
		idem_deferred_drop(&name);
		table_close(rel, NoLock);
		PG_RETURN_BOOL(true);
	}

	if (fetch_locked(rel, &keylock, &name, &row))
		deleted = (idem_keys_delete(rel, &row.tid, true) == TM_Ok);
	if (!deleted)
		idem_key_unlock(&keylock);
	table_close(rel, NoLock);

	PG_RETURN_BOOL(deleted);
}

/*
 * idem_lookup(key, scope, owner): the live row of a key, or no row.  It reads
 * with the statement's snapshot and takes no row lock, so it works on a hot
 * standby.  A claim of this transaction that is written at commit is shown
 * as it stands.
 */
Datum
idem_lookup(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation	rel;
	IdemRow		row;

	key_name_args(fcinfo, &name, 0, 1, 2);
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	rel = idem_keys_open(AccessShareLock, name.scope);
	if (idem_deferred_row(&name, &row))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 row.all_values, row.all_isnull);
	else if (idem_keys_fetch(rel, &name, GetActiveSnapshot(), &row) &&
			 idem_row_live(&row, GetCurrentStatementStartTimestamp()))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 row.all_values, row.all_isnull);
	table_close(rel, NoLock);

	return (Datum) 0;
}
