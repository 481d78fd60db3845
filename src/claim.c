/*
 * claim.c
 *		idem_claim(): decide what a request with an idempotency key must do.
 *
 * The claim first reads the key without locking it.  A completed key, a key
 * under a live lease and a key this transaction claimed already are answered
 * from that read: the replay path takes no lock, assigns no transaction id
 * and writes nothing.  Anything else takes the key's lock, which serialises
 * every writer of the key, reads again, and then claims a new key (written at
 * commit, pending.c), replaces an expired row or takes over a lease.  The
 * second read is left out when the first found no row and no holder of the
 * key's lock has committed since (keylock.c): the usual claim of a new key
 * then searches the index once.  Every read uses SnapshotSelf, so that at
 * every isolation level the claim answers from the latest committed row and
 * never meets a unique violation.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_claim);

/* What a claim found, before it writes anything */
typedef enum ClaimDecision
{
	DECIDE_CLAIMED,				/* answer claimed from our own row */
	DECIDE_REPLAY,
	DECIDE_IN_PROGRESS,
	DECIDE_MISMATCH,
	DECIDE_TAKEOVER,			/* lease over: take the row over */
	DECIDE_NEW					/* no live row: insert or replace */
} ClaimDecision;

/* A claim's arguments, checked, and what follows from them */
typedef struct ClaimArgs
{
	IdemKeyName name;
	text	   *fingerprint;	/* or NULL */
	Interval   *lease;			/* or NULL: a transactional claim */
	bool		wait;
	TimestampTz now;
	TimestampTz expires_at;
	TimestampTz locked_until;	/* with a lease */
} ClaimArgs;

/* Do two non-NULL fingerprints differ? */
static bool
fingerprint_differs(text *given, const IdemRow *row)
{
	if (given == NULL || row->isnull[IDEM_COL_FINGERPRINT])
		return false;
	return !idem_text_equal(given,
							DatumGetTextPP(row->values[IDEM_COL_FINGERPRINT]));
}

/* Decide from a row that is committed or ours */
static ClaimDecision
decide(const IdemRow *row, bool found, text *fingerprint, TimestampTz now)
{
	if (!found || !idem_row_live(row, now))
		return DECIDE_NEW;
	if (fingerprint_differs(fingerprint, row))
		return DECIDE_MISMATCH;
	if (idem_row_completed(row))
		return DECIDE_REPLAY;
	if (row->own)
		return DECIDE_CLAIMED;
	if (!row->isnull[IDEM_COL_LOCKED_UNTIL] &&
		DatumGetTimestampTz(row->values[IDEM_COL_LOCKED_UNTIL]) > now)
		return DECIDE_IN_PROGRESS;
	return DECIDE_TAKEOVER;
}

/* Build idem_claim()'s result row */
static Datum
claim_result(IdemOutcome outcome, const IdemRow *row)
{
	const IdemCatalog *cat = idem_catalog();
	Datum		values[5];
	bool		isnull[5] = {false, true, true, true, true};
	HeapTuple	tuple;

	values[0] = ObjectIdGetDatum(cat->outcome[outcome]);
	if (row != NULL)
	{
		/* a mismatch row carries no response */
		if (outcome == IDEM_OUTCOME_REPLAY)
		{
			values[1] = row->values[IDEM_COL_RESPONSE];
			isnull[1] = row->isnull[IDEM_COL_RESPONSE];
		}
		if (outcome != IDEM_OUTCOME_MISMATCH)
		{
			values[2] = row->values[IDEM_COL_ATTEMPT];
			isnull[2] = false;
			values[3] = row->values[IDEM_COL_RECOVERY_POINT];
			isnull[3] = row->isnull[IDEM_COL_RECOVERY_POINT];
			values[4] = row->values[IDEM_COL_EXPIRES_AT];
			isnull[4] = false;
		}
	}
	tuple = heap_form_tuple(cat->claim_result, values, isnull);
	return HeapTupleGetDatum(tuple);
}

/* Count an outcome and build the result */
static Datum
answer(IdemOutcome outcome, const IdemRow *row, bool takeover)
{
	static const IdemCounter counters[IDEM_NUM_OUTCOMES] = {
		IDEM_COUNT_CLAIMS, IDEM_COUNT_REPLAYS, IDEM_COUNT_IN_PROGRESS,
		IDEM_COUNT_MISMATCHES
	};

	idem_count(counters[outcome], 1);
	if (takeover)
		idem_count(IDEM_COUNT_TAKEOVERS, 1);
	return claim_result(outcome, row);
}

/* The outcome of a decision that needs no write */
static IdemOutcome
outcome_of(ClaimDecision decision)
{
	switch (decision)
	{
		case DECIDE_CLAIMED:
			return IDEM_OUTCOME_CLAIMED;
		case DECIDE_REPLAY:
			return IDEM_OUTCOME_REPLAY;
		case DECIDE_IN_PROGRESS:
			return IDEM_OUTCOME_IN_PROGRESS;
		case DECIDE_MISMATCH:
			return IDEM_OUTCOME_MISMATCH;
		default:
			elog(ERROR, "claim decision %d needs a write", (int) decision);
	}
	pg_unreachable();
}

/* Does this decision write the key's row? */
static bool
needs_write(ClaimDecision decision)
{
	return decision == DECIDE_NEW || decision == DECIDE_TAKEOVER;
}

/*
 * Write the claim that a decision to write made: a deferred claim of a key
 * that has no row, or a new row version.  'found' says whether *row holds
 * the key's current row.
 */
static void
write_claim(Relation rel, const ClaimArgs *args, IdemRow *row, bool found,
			bool takeover)
{
	/*
	 * A transactional claim of a key that has no row: the lock we hold keeps
	 * everybody out until we end, so the row need only exist at commit.
	 */
	if (!found && args->lease == NULL)
	{
		idem_deferred_claim(&args->name, args->fingerprint,
							args->now, args->expires_at);
		idem_deferred_row(&args->name, row);
		return;
	}

	/* no attempt number is handed out twice, and none wraps around */
	if (found && (takeover || !idem_row_completed(row)) &&
		DatumGetInt32(row->values[IDEM_COL_ATTEMPT]) == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("attempt of idempotency key \"%s\" is out of range",
						idem_key_cstring(args->name.key)),
				 errdetail("The key was claimed %d times.", PG_INT32_MAX),
				 errhint("Delete the key with idem_forget() to start it afresh.")));

	if (takeover)
	{
		/* a lease ran out: the next attempt resumes from the recovery point */
		idem_row_set(row, IDEM_COL_ATTEMPT,
					 Int32GetDatum(DatumGetInt32(row->values[IDEM_COL_ATTEMPT]) + 1),
					 false);
		if (row->isnull[IDEM_COL_FINGERPRINT] && args->fingerprint != NULL)
			idem_row_set(row, IDEM_COL_FINGERPRINT,
						 PointerGetDatum(args->fingerprint), false);
	}
	else
	{
		/*
		 * A new key, or one that expired: start afresh.  An expired key that
		 * was still in progress may have a worker that is only late: its
		 * attempt number is not handed out again.
		 */
		ItemPointerData old_tid;
		int32		attempt = 1;

		if (found)
		{
			old_tid = row->tid;
			if (!idem_row_completed(row))
				attempt = DatumGetInt32(row->values[IDEM_COL_ATTEMPT]) + 1;
		}
		idem_row_init(row, &args->name);
		if (found)
			row->tid = old_tid;
		idem_row_set(row, IDEM_COL_ATTEMPT, Int32GetDatum(attempt), false);
		idem_row_set(row, IDEM_COL_CREATED_AT, TimestampTzGetDatum(args->now), false);
		idem_row_set(row, IDEM_COL_FINGERPRINT, PointerGetDatum(args->fingerprint),
					 args->fingerprint == NULL);
	}
	idem_row_set(row, IDEM_COL_STATUS,
				 ObjectIdGetDatum(idem_catalog()->status_in_progress), false);
	idem_row_set(row, IDEM_COL_EXPIRES_AT, TimestampTzGetDatum(args->expires_at), false);
	idem_row_set(row, IDEM_COL_LOCKED_UNTIL, TimestampTzGetDatum(args->locked_until),
				 args->lease == NULL);
	idem_row_set(row, IDEM_COL_LEASE, IntervalPGetDatum(args->lease),
				 args->lease == NULL);

	if (!found || idem_keys_update(rel, row) == TM_Deleted)
		idem_keys_insert(rel, row);

	/* a transactional claim is completed when its transaction commits */
	if (args->lease == NULL)
		idem_pending_add(&args->name, &row->tid);
}

/*
 * Decide a claim and make it.  Fills *row with the row to answer from, or
 * sets *row_valid false when there is none (a busy key, with !wait), and
 * *takeover when a lease was taken over.
 */
static IdemOutcome
claim_key(Relation rel, const ClaimArgs *args, IdemRow *row, bool *row_valid,
		  bool *takeover)
{
	IdemKeyLock keylock;
	IdemLookup	lookup;
	ClaimDecision decision;
	bool		found;

	*row_valid = true;
	*takeover = false;

	/* a key this transaction claimed and will write at commit */
	if (idem_deferred_row(&args->name, row))
		return outcome_of(decide(row, true, args->fingerprint, args->now));

	idem_keys_lookup_begin(&lookup, rel, &args->name, SnapshotSelf);

	/* read without the lock: replay, live lease and our own claim end here */
	idem_key_prepare(&keylock, &args->name);
	idem_key_watch(&keylock);
	found = idem_keys_lookup(&lookup, row);
	decision = decide(row, found, args->fingerprint, args->now);
	if (needs_write(decision))
	{
		/* serialise with every other writer of this key */
		idem_prevent_write("idem_claim()");
		if (!idem_key_lock(&keylock, args->wait))
		{
			idem_keys_lookup_end(&lookup);
			*row_valid = false;
			return IDEM_OUTCOME_IN_PROGRESS;
		}

		/*
		 * A row that records no owner (from version 0.1) is written under
		 * its own lock, which every role takes after its own.
		 */
		if (found && idem_row_owner(row) != args->name.owner)
		{
			IdemKeyName shared = args->name;
			IdemKeyLock shared_lock;

			shared.owner = InvalidOid;
			idem_key_prepare(&shared_lock, &shared);
			if (!idem_key_lock(&shared_lock, args->wait))
			{
				idem_keys_lookup_end(&lookup);
				*row_valid = false;
				return IDEM_OUTCOME_IN_PROGRESS;
			}
		}

		/* read again, unless no row was found and none can have come since */
		if (found || !idem_key_unchanged(&keylock))
		{
			found = idem_keys_lookup(&lookup, row);
			decision = decide(row, found, args->fingerprint, args->now);
		}

		/* nothing to write after all: let the next caller of this key in */
		if (!needs_write(decision) && decision != DECIDE_CLAIMED)
			idem_key_unlock(&keylock);
	}
	idem_keys_lookup_end(&lookup);
	if (!needs_write(decision))
		return outcome_of(decision);

	*takeover = (decision == DECIDE_TAKEOVER);
	write_claim(rel, args, row, found, *takeover);
	return IDEM_OUTCOME_CLAIMED;
}

/*
 * idem_claim(key, fingerprint, ttl, scope, wait, lease, owner)
 *		returns (outcome, response, attempt, recovery_point, expires_at)
 */
Datum
idem_claim(PG_FUNCTION_ARGS)
{
	ClaimArgs	args;
	Interval   *ttl;
	Relation	rel;
	IdemRow		row;
	bool		row_valid;
	bool		takeover;
	IdemOutcome outcome;

	args.name.key = idem_key_arg(fcinfo, 0);
	args.fingerprint = idem_fingerprint_arg(fcinfo, 1);
	args.name.scope = idem_scope_arg(fcinfo, 3);
	args.name.owner = idem_owner_arg(fcinfo, 6);
	args.lease = idem_interval_arg(fcinfo, 5, "lease");
	args.now = GetCurrentStatementStartTimestamp();
	if (PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("wait must not be null")));
	args.wait = PG_GETARG_BOOL(4);

	/* both intervals are checked, so the sums cannot overflow */
	ttl = idem_interval_arg(fcinfo, 2, "ttl");
	if (ttl != NULL)
		args.expires_at = idem_timestamp_plus(args.now, ttl, "ttl");
	else
		args.expires_at = TimestampTzPlusMilliseconds(args.now,
													  (int64) idem_default_ttl * 1000);
	args.locked_until = 0;
	if (args.lease != NULL)
	{
		args.locked_until = idem_timestamp_plus(args.now, args.lease, "lease");
		/* a key is kept at least as long as it is leased */
		if (args.locked_until > args.expires_at)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lease must not be longer than ttl"),
					 errdetail("A key is kept for its ttl, which must cover its lease."),
					 errhint("Pass a longer ttl, or a shorter lease.")));
	}

	rel = idem_keys_open(RowExclusiveLock, args.name.scope);
	outcome = claim_key(rel, &args, &row, &row_valid, &takeover);
	/* the table stays locked until the transaction ends */
	table_close(rel, NoLock);

	PG_RETURN_DATUM(answer(outcome, row_valid ? &row : NULL, takeover));
}
