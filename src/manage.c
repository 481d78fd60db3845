/*
 * manage.c
 *		What a claim's owner and an operator do with a key afterwards:
 *		idem_complete(), idem_checkpoint(), idem_renew(), idem_release(),
 *		idem_forget() and idem_lookup().
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
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_complete);
PG_FUNCTION_INFO_V1(idem_complete_many);
PG_FUNCTION_INFO_V1(idem_checkpoint);
PG_FUNCTION_INFO_V1(idem_renew);
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

/* The attempt argument, or NULL when it is NULL */
static int32 *
attempt_arg(FunctionCallInfo fcinfo, int argno)
{
	int32	   *attempt;

	if (PG_ARGISNULL(argno))
		return NULL;
	attempt = palloc(sizeof(int32));
	*attempt = PG_GETARG_INT32(argno);
	return attempt;
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

/* Was the row's current attempt given up with idem_release()? */
static bool
row_released(const IdemRow *row)
{
	return !row->isnull[IDEM_COL_LOCKED_UNTIL] &&
		DatumGetTimestampTz(row->values[IDEM_COL_LOCKED_UNTIL]) == DT_NOBEGIN;
}

/* Fail: attempt 'attempt' of the key is not the current one */
static void
attempt_refused(const IdemRow *row, text *key, int32 attempt)
{
	int32		current = DatumGetInt32(row->values[IDEM_COL_ATTEMPT]);
	int32		released = row->isnull[IDEM_COL_RELEASED_ATTEMPT] ? 0 :
		DatumGetInt32(row->values[IDEM_COL_RELEASED_ATTEMPT]);

	if (attempt == released)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("attempt %d of idempotency key \"%s\" was released",
						attempt, idem_key_cstring(key)),
				 attempt == current ?
				 errdetail("It was given up with idem_release(); the next claim takes the key over.") :
				 errdetail("It was given up with idem_release(), and attempt %d took the key over.",
						   current),
				 errhint("Stop working on this key.")));
	/* older than the last release: it may have been released itself */
	if (attempt < current)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("attempt %d of idempotency key \"%s\" is stale",
						attempt, idem_key_cstring(key)),
				 attempt < released ?
				 errdetail("The key has been taken over since; the current attempt is %d.",
						   current) :
				 errdetail("The lease of attempt %d ran out and the key was taken over; the current attempt is %d.",
						   attempt, current),
				 errhint("Stop working on this key: its current owner will finish it.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("attempt %d of idempotency key \"%s\" does not exist",
					attempt, idem_key_cstring(key)),
			 errdetail("The current attempt is %d.", current)));
}

/*
 * Fail unless the caller owns the in-progress row: it was written by this
 * transaction, or it is leased and 'attempt' is its current attempt, not
 * released.  The attempt is the fencing token: once a lease ran out and
 * another caller took the key over, the old attempt can no longer change it.
 */
static void
check_owner(const IdemRow *row, text *key, const int32 *attempt)
{
	if (attempt != NULL &&
		(*attempt != DatumGetInt32(row->values[IDEM_COL_ATTEMPT]) ||
		 row_released(row)))
		attempt_refused(row, key, *attempt);
	if (row->own)
		return;
	if (row->isnull[IDEM_COL_LEASE])
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" is not claimed by this transaction",
						idem_key_cstring(key)),
				 errdetail("A key claimed without a lease belongs to the transaction that claimed it.")));
	if (attempt == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempt must be given for a leased key claimed by another transaction"),
				 errhint("Pass the attempt that idem_claim() returned.")));
	if (row_released(row))
		attempt_refused(row, key, DatumGetInt32(row->values[IDEM_COL_ATTEMPT]));
}

/*
 * Complete a claim with a response and a body (either may be NULL), after
 * the checks of idem_complete()
 */
static void
complete_key(Relation rel, const IdemKeyName *name, Jsonb *response,
			 bytea *body, const int32 *attempt, TimestampTz now)
{
	IdemKeyLock keylock;
	IdemRow		row;
	bool		found;

	/* a claim that will be written at commit is completed in memory */
	if (idem_deferred_row(name, &row))
	{
		check_in_progress(&row, true, name->key, now);
		check_owner(&row, name->key, attempt);
		idem_deferred_complete(name, response, body, now);
		idem_count(IDEM_COUNT_COMPLETIONS, 1);
		return;
	}

	/* a key this transaction claimed is read where the claim wrote it */
	found = fetch_locked(rel, &keylock, name, &row);
	check_in_progress(&row, found, name->key, now);
	check_owner(&row, name->key, attempt);

	idem_row_set(&row, IDEM_COL_STATUS,
				 ObjectIdGetDatum(idem_catalog()->status_completed), false);
	idem_row_set(&row, IDEM_COL_RESPONSE, PointerGetDatum(response),
				 response == NULL);
	idem_row_set(&row, IDEM_COL_BODY, PointerGetDatum(body), body == NULL);
	idem_row_set(&row, IDEM_COL_COMPLETED_AT, TimestampTzGetDatum(now), false);
	idem_row_set(&row, IDEM_COL_LOCKED_UNTIL, (Datum) 0, true);
	update_or_fail(rel, &row, name->key);

	/* the commit need not look at this key again */
	idem_pending_completed(name, &row.tid);
	idem_count(IDEM_COUNT_COMPLETIONS, 1);
}

/*
 * idem_complete(key, response, scope, attempt, owner, body): store the
 * result of a claim: a jsonb response, and a body kept byte for byte
 */
Datum
idem_complete(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	Relation	rel;
	Jsonb	   *response = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	bytea	   *body = NULL;

	key_name_args(fcinfo, &name, 0, 2, 4);
	if (response != NULL)
		idem_check_payload_size(PointerGetDatum(response), false, "response");
	if (PG_NARGS() > 5 && !PG_ARGISNULL(5))
	{
		body = PG_GETARG_BYTEA_PP(5);
		idem_check_payload_size(PointerGetDatum(body), true, "body");
	}
	idem_prevent_write("idem_complete()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);
	complete_key(rel, &name, response, body, attempt_arg(fcinfo, 3),
				 GetCurrentStatementStartTimestamp());
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * idem_complete_many(keys, responses, scope, owner): complete the claims of
 * this transaction (or leased ones) of many keys, each with the response at
 * its place (none if responses is NULL).  Returns the number completed.
 */
Datum
idem_complete_many(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	Datum	   *keys;
	bool	   *key_nulls;
	Datum	   *responses = NULL;
	bool	   *response_nulls = NULL;
	int			n;
	int			nresponses;
	Relation	rel;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	int			i;

	if (!idem_array_arg(fcinfo, 0, "keys", TEXTOID, &keys, &key_nulls, &n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keys must not be null")));
	if (idem_array_arg(fcinfo, 1, "responses", JSONBOID, &responses, &response_nulls,
					   &nresponses) &&
		nresponses != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("responses must have as many elements as keys"),
				 errdetail("There are %d keys and %d responses.", n, nresponses)));
	name.scope = idem_scope_arg(fcinfo, 2);
	name.owner = idem_owner_arg(fcinfo, 3);
	for (i = 0; i < n; i++)
	{
		idem_check_key(key_nulls[i] ? NULL : DatumGetTextPP(keys[i]));
		if (responses != NULL && !response_nulls[i])
			idem_check_payload_size(responses[i], false, "response");
	}
	idem_prevent_write("idem_complete_many()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);
	for (i = 0; i < n; i++)
	{
		name.key = DatumGetTextPP(keys[i]);
		complete_key(rel, &name,
					 responses == NULL || response_nulls[i] ? NULL :
					 DatumGetJsonbP(responses[i]),
					 NULL, NULL, now);
		CHECK_FOR_INTERRUPTS();
	}
	table_close(rel, NoLock);
	PG_RETURN_INT32(n);
}

/*
 * Extend a leased claim's lease to now + lease, or its own lease when NULL,
 * and keep the key at least that long; fail unless the caller holds the
 * claim (check_owner()).  Returns the new end of the lease.
 */
static TimestampTz
extend_lease(IdemRow *row, text *key, FunctionCallInfo fcinfo,
			 int attempt_argno, Interval *lease, TimestampTz now,
			 const char *funcname)
{
	TimestampTz locked_until;

	if (row->isnull[IDEM_COL_LEASE])
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idempotency key \"%s\" has no lease", idem_key_cstring(key)),
				 errhint("%s works on a claim made with a lease.", funcname)));
	check_owner(row, key, attempt_arg(fcinfo, attempt_argno));

	/* both leases were checked: the sum cannot overflow */
	if (lease == NULL)
		lease = DatumGetIntervalP(row->values[IDEM_COL_LEASE]);
	locked_until = idem_timestamp_plus(now, lease, "lease");
	idem_row_set(row, IDEM_COL_LOCKED_UNTIL, TimestampTzGetDatum(locked_until), false);
	if (DatumGetTimestampTz(row->values[IDEM_COL_EXPIRES_AT]) < locked_until)
		idem_row_set(row, IDEM_COL_EXPIRES_AT, TimestampTzGetDatum(locked_until), false);
	return locked_until;
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
	locked_until = extend_lease(&row, name.key, fcinfo, 3, NULL, now,
								"idem_checkpoint()");
	if (!PG_ARGISNULL(1))
		idem_row_set(&row, IDEM_COL_RECOVERY_POINT, PG_GETARG_DATUM(1), false);
	update_or_fail(rel, &row, name.key);
	table_close(rel, NoLock);

	PG_RETURN_TIMESTAMPTZ(locked_until);
}

/*
 * idem_renew(key, attempt, scope, lease, owner): prove that 'attempt' still
 * holds a leased claim, just before an external effect, and extend its lease
 * to now + lease (by default the claim's own).  Fails if the attempt is
 * stale, released or completed.  Returns the new end of the lease.
 */
Datum
idem_renew(PG_FUNCTION_ARGS)
{
	IdemKeyName name;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	TimestampTz locked_until;
	IdemKeyLock keylock;
	Relation	rel;
	IdemRow		row;
	Interval   *lease;
	bool		found;

	key_name_args(fcinfo, &name, 0, 2, 4);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("attempt must not be null"),
				 errhint("Pass the attempt that idem_claim() returned.")));
	lease = idem_interval_arg(fcinfo, 3, "lease");
	idem_prevent_write("idem_renew()");
	rel = idem_keys_open(RowExclusiveLock, name.scope);
	found = idem_deferred_row(&name, &row) ||
		fetch_locked(rel, &keylock, &name, &row);
	check_in_progress(&row, found, name.key, now);
	locked_until = extend_lease(&row, name.key, fcinfo, 1, lease, now,
								"idem_renew()");
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
		check_owner(&row, name.key, attempt_arg(fcinfo, 2));
		idem_deferred_drop(&name);
		table_close(rel, NoLock);
		idem_count(IDEM_COUNT_RELEASES, 1);
		PG_RETURN_BOOL(true);
	}

	found = fetch_locked(rel, &keylock, &name, &row);
	/* a key released already has nothing more to give up */
	if (found && idem_row_live(&row, now) && !row_released(&row))
	{
		check_in_progress(&row, found, name.key, now);
		check_owner(&row, name.key, attempt_arg(fcinfo, 2));
		if (row.isnull[IDEM_COL_LEASE] &&
			DatumGetInt32(row.values[IDEM_COL_ATTEMPT]) == 1)
			released = (idem_keys_delete(rel, &row.tid, true) == TM_Ok);
		else
		{
			idem_row_set(&row, IDEM_COL_LOCKED_UNTIL,
						 TimestampTzGetDatum(DT_NOBEGIN), false);
			idem_row_set(&row, IDEM_COL_RECOVERY_POINT, (Datum) 0, true);
			idem_row_set(&row, IDEM_COL_RELEASED_ATTEMPT,
						 row.values[IDEM_COL_ATTEMPT], false);
			update_or_fail(rel, &row, name.key);
			released = true;
		}
		if (released)
			idem_pending_released(&name);
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
	if (deleted)
		idem_pending_released(&name);
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
