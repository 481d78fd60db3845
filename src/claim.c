/*
 * claim.c
 *		idem_claim() and idem_claim_many(): decide what a request with an
 *		idempotency key must do.
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
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_claim);
PG_FUNCTION_INFO_V1(idem_claim_many);

/* Columns of a claim's answer, idem_claim_result (from 0.2 on) */
#define CLAIM_RESULT_COLUMNS	6

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
	int64		wait_usecs;		/* with wait: at most this long, or -1 */
	TimestampTz wait_deadline;	/* set at the first wait that is bounded */
	const char *funcname;		/* for errors: idem_claim() or idem_claim_many() */
	bool		notify;			/* announce the end of a key in flight */
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

/*
 * Fill the columns of a claim's answer: outcome, response, attempt,
 * recovery_point, expires_at and body
 */
static void
fill_result(IdemOutcome outcome, const IdemRow *row, Datum *values, bool *isnull)
{
	int			i;

	values[0] = ObjectIdGetDatum(idem_catalog()->outcome[outcome]);
	isnull[0] = false;
	for (i = 1; i < CLAIM_RESULT_COLUMNS; i++)
	{
		values[i] = (Datum) 0;
		isnull[i] = true;
	}
	if (row == NULL)
		return;

	/* a mismatch row carries no response */
	if (outcome == IDEM_OUTCOME_REPLAY)
	{
		values[1] = row->values[IDEM_COL_RESPONSE];
		isnull[1] = row->isnull[IDEM_COL_RESPONSE];
		values[5] = row->values[IDEM_COL_BODY];
		isnull[5] = row->isnull[IDEM_COL_BODY];
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

/* Build idem_claim()'s result row (5 columns under 0.1, 6 from 0.2 on) */
static Datum
claim_result(IdemOutcome outcome, const IdemRow *row)
{
	Datum		values[CLAIM_RESULT_COLUMNS];
	bool		isnull[CLAIM_RESULT_COLUMNS];
	HeapTuple	tuple;

	fill_result(outcome, row, values, isnull);
	tuple = heap_form_tuple(idem_catalog()->claim_result, values, isnull);
	return HeapTupleGetDatum(tuple);
}

/* Count an outcome */
static void
count_outcome(IdemOutcome outcome, bool takeover)
{
	static const IdemCounter counters[IDEM_NUM_OUTCOMES] = {
		IDEM_COUNT_CLAIMS, IDEM_COUNT_REPLAYS, IDEM_COUNT_IN_PROGRESS,
		IDEM_COUNT_MISMATCHES
	};

	idem_count(counters[outcome], 1);
	if (takeover)
		idem_count(IDEM_COUNT_TAKEOVERS, 1);
}

/* Count an outcome and build the result */
static Datum
answer(IdemOutcome outcome, const IdemRow *row, bool takeover)
{
	count_outcome(outcome, takeover);
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
 * Take a key's lock as the claim asks: at once or not at all (!wait), for as
 * long as it takes, or until the claim's deadline; false if it is still busy
 */
static bool
lock_for_claim(IdemKeyLock *kl, ClaimArgs *args)
{
	if (!args->wait || args->wait_usecs <= 0)
		return idem_key_lock(kl, args->wait && args->wait_usecs < 0);
	/* the first wait sets the deadline: several keys share it */
	if (args->wait_deadline == 0)
		args->wait_deadline = GetCurrentTimestamp() + args->wait_usecs;
	return idem_key_lock_until(kl, args->wait_deadline);
}

/*
 * Decide a claim and make it, from a first read of the key made without its
 * lock ('found', *row), after idem_key_watch(keylock).  Reads again through
 * 'lookup', or, when it is NULL, through a look-up of its own.  Fills *row
 * with the row to answer from, or sets *row_valid false when there is none
 * (a busy key, with !wait), and *takeover when a lease was taken over.
 */
static IdemOutcome
claim_key_decide(Relation rel, ClaimArgs *args, IdemKeyLock *keylock,
				 IdemLookup *lookup, IdemRow *row, bool found, bool *row_valid,
				 bool *takeover)
{
	ClaimDecision decision;

	*row_valid = true;
	*takeover = false;
	decision = decide(row, found, args->fingerprint, args->now);
	if (needs_write(decision))
	{
		/* serialise with every other writer of this key */
		idem_prevent_write(args->funcname);
		if (!lock_for_claim(keylock, args))
		{
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
			if (!lock_for_claim(&shared_lock, args))
			{
				*row_valid = false;
				return IDEM_OUTCOME_IN_PROGRESS;
			}
		}

		/* read again, unless no row was found and none can have come since */
		if (found || !idem_key_unchanged(keylock))
		{
			found = lookup != NULL ? idem_keys_lookup(lookup, row) :
				idem_keys_fetch(rel, &args->name, SnapshotSelf, row);
			decision = decide(row, found, args->fingerprint, args->now);
		}

		/* nothing to write after all: let the next caller of this key in */
		if (!needs_write(decision) && decision != DECIDE_CLAIMED)
			idem_key_unlock(keylock);
	}
	if (!needs_write(decision))
		return outcome_of(decision);

	*takeover = (decision == DECIDE_TAKEOVER);
	write_claim(rel, args, row, found, *takeover);
	return IDEM_OUTCOME_CLAIMED;
}

/* Times a claim with notify reads a key again before it watches it anyway */
#define NOTIFY_REREADS		8

/*
 * claim_key_decide(), and for a claim with notify that answers in_progress,
 * a watch on the key (notify.c).  If a holder of the key's slot ended before
 * the watch was in place, its end may not be announced: read the key again
 * and decide again, since that end is visible by now.
 */
static IdemOutcome
claim_key_read(Relation rel, ClaimArgs *args, IdemKeyLock *keylock,
			   IdemLookup *lookup, IdemRow *row, bool found, bool *row_valid,
			   bool *takeover)
{
	int			rereads = 0;

	for (;;)
	{
		IdemOutcome outcome = claim_key_decide(rel, args, keylock, lookup, row,
											   found, row_valid, takeover);

		if (outcome != IDEM_OUTCOME_IN_PROGRESS || !args->notify)
			return outcome;
		/* under constant churn of the slot, watch without the check */
		if (idem_notify_watch(keylock) || ++rereads >= NOTIFY_REREADS)
			return outcome;
		idem_key_rewatch(keylock);
		found = lookup != NULL ? idem_keys_lookup(lookup, row) :
			idem_keys_fetch(rel, &args->name, SnapshotSelf, row);
	}
}

/*
 * Decide a claim of one key and make it (claim_key_read()), reading the key
 * through the primary key.
 */
static IdemOutcome
claim_key(Relation rel, ClaimArgs *args, IdemRow *row, bool *row_valid,
		  bool *takeover)
{
	IdemKeyLock keylock;
	IdemLookup	lookup;
	IdemOutcome outcome;
	bool		found;

	/* a key this transaction claimed and will write at commit */
	if (idem_deferred_row(&args->name, row))
	{
		*row_valid = true;
		*takeover = false;
		return outcome_of(decide(row, true, args->fingerprint, args->now));
	}

	idem_keys_lookup_begin(&lookup, rel, &args->name, SnapshotSelf);

	/* read without the lock: replay, live lease and our own claim end here */
	idem_key_prepare(&keylock, &args->name);
	idem_key_watch(&keylock);
	found = idem_keys_lookup(&lookup, row);
	outcome = claim_key_read(rel, args, &keylock, &lookup, row, found,
							 row_valid, takeover);
	idem_keys_lookup_end(&lookup);
	return outcome;
}

/*
 * Check the claim arguments shared by idem_claim() and idem_claim_many():
 * ttl, scope, wait, lease, owner and wait_timeout, at these argument numbers
 */
static void
claim_args(FunctionCallInfo fcinfo, ClaimArgs *args, int ttl_argno,
		   int scope_argno, int wait_argno, int lease_argno, int owner_argno,
		   int wait_timeout_argno)
{
	Interval   *ttl;

	args->name.scope = idem_scope_arg(fcinfo, scope_argno);
	args->name.owner = idem_owner_arg(fcinfo, owner_argno);
	args->lease = idem_interval_arg(fcinfo, lease_argno, "lease");
	args->now = GetCurrentStatementStartTimestamp();
	if (PG_ARGISNULL(wait_argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("wait must not be null")));
	args->wait = PG_GETARG_BOOL(wait_argno);
	args->wait_usecs = idem_wait_timeout_arg(fcinfo, wait_timeout_argno);
	args->wait_deadline = 0;
	args->notify = false;

	/* both intervals are checked, so the sums cannot overflow */
	ttl = idem_interval_arg(fcinfo, ttl_argno, "ttl");
	if (ttl != NULL)
		args->expires_at = idem_timestamp_plus(args->now, ttl, "ttl");
	else
		args->expires_at = TimestampTzPlusMilliseconds(args->now,
													   (int64) idem_default_ttl * 1000);
	args->locked_until = 0;
	if (args->lease != NULL)
	{
		args->locked_until = idem_timestamp_plus(args->now, args->lease, "lease");
		/* a key is kept at least as long as it is leased */
		if (args->locked_until > args->expires_at)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lease must not be longer than ttl"),
					 errdetail("A key is kept for its ttl, which must cover its lease."),
					 errhint("Pass a longer ttl, or a shorter lease.")));
	}
}

/*
 * idem_claim(key, fingerprint, ttl, scope, wait, lease, owner, wait_timeout,
 *			  notify)
 *		returns (outcome, response, attempt, recovery_point, expires_at, body)
 */
Datum
idem_claim(PG_FUNCTION_ARGS)
{
	ClaimArgs	args;
	Relation	rel;
	IdemRow		row;
	bool		row_valid;
	bool		takeover;
	IdemOutcome outcome;

	args.name.key = idem_key_arg(fcinfo, 0);
	args.fingerprint = idem_fingerprint_arg(fcinfo, 1);
	claim_args(fcinfo, &args, 2, 3, 4, 5, 6, 7);
	args.funcname = "idem_claim()";
	if (PG_NARGS() > 8)
	{
		if (PG_ARGISNULL(8))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("notify must not be null")));
		args.notify = PG_GETARG_BOOL(8);
		if (args.notify)
			idem_notify_check();
	}

	rel = idem_keys_open(RowExclusiveLock, args.name.scope);
	outcome = claim_key(rel, &args, &row, &row_valid, &takeover);
	/* the table stays locked until the transaction ends */
	table_close(rel, NoLock);

	PG_RETURN_DATUM(answer(outcome, row_valid ? &row : NULL, takeover));
}

/* A key of a batch, and its place in the batch */
typedef struct BatchKey
{
	int			pos;
	uint64		hash;
} BatchKey;

/* Order a batch's keys by hash, then by place: the order of their locks */
static int
batch_key_cmp(const void *a, const void *b)
{
	const BatchKey *ka = (const BatchKey *) a;
	const BatchKey *kb = (const BatchKey *) b;

	if (ka->hash != kb->hash)
		return ka->hash < kb->hash ? -1 : 1;
	return (ka->pos > kb->pos) - (ka->pos < kb->pos);
}

/*
 * The elements of a one-dimensional text array argument, NULL elements as
 * NULL pointers; *n gets their number.  An empty or NULL array has none.
 */
static text **
text_array_arg(FunctionCallInfo fcinfo, int argno, const char *argname, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	text	  **result;
	int			i;

	if (!idem_array_arg(fcinfo, argno, argname, TEXTOID, &elems, &nulls, n))
		return NULL;
	result = palloc(sizeof(text *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		result[i] = nulls[i] ? NULL : DatumGetTextPP(elems[i]);
	return result;
}

/*
 * idem_claim_many(keys, fingerprints, ttl, scope, wait, lease, owner,
 *				   wait_timeout)
 *		returns a row (key, outcome, response, attempt, recovery_point,
 *		expires_at, body) per key, in the order of keys
 *
 * Each key is claimed as idem_claim() claims it; a key given twice is
 * claimed by its first place and answered "claimed" again at the next, as a
 * second idem_claim() in the same transaction would be.  All keys are read
 * with one search of the primary key, before any lock is taken; the keys
 * that must be written are then locked in the order of their hashes, so that
 * two batches that share keys never wait for each other in a cycle.  A
 * bounded wait (wait_timeout) is for the whole batch.
 */
Datum
idem_claim_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ClaimArgs	args;
	text	  **keys;
	text	  **fingerprints;
	int			n;
	int			nfingerprints;
	BatchKey   *order;
	IdemKeyLock *keylocks;
	IdemRow    *rows;
	bool	   *found;
	IdemOutcome *outcomes;
	bool	   *row_valid;
	Relation	rel;
	int			i;

	keys = text_array_arg(fcinfo, 0, "keys", &n);
	if (keys == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keys must not be null")));
	fingerprints = text_array_arg(fcinfo, 1, "fingerprints", &nfingerprints);
	if (fingerprints != NULL && nfingerprints != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("fingerprints must have as many elements as keys"),
				 errdetail("There are %d keys and %d fingerprints.", n, nfingerprints)));
	for (i = 0; i < n; i++)
	{
		idem_check_key(keys[i]);
		if (fingerprints != NULL)
			idem_check_fingerprint(fingerprints[i]);
	}
	claim_args(fcinfo, &args, 2, 3, 4, 5, 6, 7);
	args.funcname = "idem_claim_many()";
	args.notify = false;
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n == 0)
		return (Datum) 0;

	order = palloc(sizeof(BatchKey) * n);
	keylocks = palloc(sizeof(IdemKeyLock) * n);
	rows = palloc(sizeof(IdemRow) * n);
	found = palloc(sizeof(bool) * n);
	outcomes = palloc(sizeof(IdemOutcome) * n);
	row_valid = palloc(sizeof(bool) * n);

	rel = idem_keys_open(RowExclusiveLock, args.name.scope);

	/* note each key's slot of commits, then read them all at once */
	for (i = 0; i < n; i++)
	{
		args.name.key = keys[i];
		idem_key_prepare(&keylocks[i], &args.name);
		idem_key_watch(&keylocks[i]);
		order[i].pos = i;
		order[i].hash = keylocks[i].hash;
	}
	idem_keys_fetch_many(rel, args.name.scope, args.name.owner, keys, n,
						 SnapshotSelf, rows, found);
	qsort(order, n, sizeof(BatchKey), batch_key_cmp);

	/* claim in the order of the locks */
	for (i = 0; i < n; i++)
	{
		int			pos = order[i].pos;
		bool		takeover = false;

		args.name.key = keys[pos];
		args.fingerprint = fingerprints ? fingerprints[pos] : NULL;
		row_valid[pos] = true;
		if (idem_deferred_row(&args.name, &rows[pos]))
			outcomes[pos] = outcome_of(decide(&rows[pos], true, args.fingerprint,
											  args.now));
		else
			outcomes[pos] = claim_key_read(rel, &args, &keylocks[pos], NULL,
										   &rows[pos], found[pos],
										   &row_valid[pos], &takeover);
		count_outcome(outcomes[pos], takeover);
		CHECK_FOR_INTERRUPTS();
	}
	/* the table stays locked until the transaction ends */
	table_close(rel, NoLock);

	for (i = 0; i < n; i++)
	{
		Datum		values[CLAIM_RESULT_COLUMNS + 1];
		bool		isnull[CLAIM_RESULT_COLUMNS + 1];

		values[0] = PointerGetDatum(keys[i]);
		isnull[0] = false;
		fill_result(outcomes[i], row_valid[i] ? &rows[i] : NULL,
					values + 1, isnull + 1);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	return (Datum) 0;
}
