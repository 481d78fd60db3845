/*
 * pending.c
 *		Completion at commit of transactional claims.
 *
 * A transactional claim (no lease) that is still in progress when its
 * transaction commits is completed with a NULL response: the caller's writes
 * did happen.  Claims remember their keys here; just before commit (or
 * PREPARE TRANSACTION) each key is read again, and completed if its row is
 * still ours and in progress.  Reading again, rather than trusting the list,
 * keeps savepoint rollbacks, releases and explicit completions right.
 *
 * A key that idem_complete() completed needs no second look, which spares
 * the usual claim, write, complete transaction an index look-up and a
 * snapshot at commit.  The mark remembers the subtransaction that completed
 * the key, and is dropped if that subtransaction (or one around it) rolls
 * back, or if the key is claimed again.
 *
 * Each entry also remembers where the last version of the row that this
 * transaction wrote is, so that idem_complete() and the commit read it
 * there rather than through the index.  That is only a hint: the version is
 * used if SnapshotSelf still sees it and it holds the key, and the index is
 * searched otherwise.  It is forgotten when the subtransaction that wrote it
 * rolls back, so that its page is known to exist whenever it is used.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "idempotency.h"

typedef struct PendingKey
{
	text	   *scope;
	text	   *key;
	SubTransactionId completed_in;	/* idem_complete() completed it here, or
									 * InvalidSubTransactionId */
	ItemPointerData tid;		/* last version this transaction wrote */
	SubTransactionId tid_in;	/* written here, or InvalidSubTransactionId */
} PendingKey;

/* Keys claimed by the current transaction, in TopTransactionContext */
static List *pending_keys = NIL;

/* Is this text equal to that one? */
static bool
text_equal(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* The entry of a key, or NULL */
static PendingKey *
pending_find(text *scope, text *key)
{
	ListCell   *lc;

	foreach(lc, pending_keys)
	{
		PendingKey *pk = (PendingKey *) lfirst(lc);

		if (text_equal(pk->key, key) && text_equal(pk->scope, scope))
			return pk;
	}
	return NULL;
}

/* Remember where this transaction wrote the key's row last */
static void
pending_set_tid(PendingKey *pk, ItemPointer tid)
{
	pk->tid = *tid;
	pk->tid_in = GetCurrentSubTransactionId();
}

/*
 * Remember a key that this transaction claimed without a lease, and the
 * version of its row that the claim wrote
 */
void
idem_pending_add(text *scope, text *key, ItemPointer tid)
{
	MemoryContext oldcxt;
	PendingKey *pk;

	pk = pending_find(scope, key);
	if (pk != NULL)
	{
		/* claimed again: in progress again */
		pk->completed_in = InvalidSubTransactionId;
		pending_set_tid(pk, tid);
		return;
	}

	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	pk = palloc(sizeof(PendingKey));
	pk->scope = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(scope));
	pk->key = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(key));
	pk->completed_in = InvalidSubTransactionId;
	pending_set_tid(pk, tid);
	pending_keys = lappend(pending_keys, pk);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Note that idem_complete() completed a key in the current subtransaction,
 * writing the version at tid
 */
void
idem_pending_completed(text *scope, text *key, ItemPointer tid)
{
	PendingKey *pk = pending_find(scope, key);

	if (pk != NULL)
	{
		pk->completed_in = GetCurrentSubTransactionId();
		pending_set_tid(pk, tid);
	}
}

/* Read the key's row where this transaction wrote it last, if it is there */
static bool
pending_fetch_entry(Relation rel, PendingKey *pk, IdemRow *row)
{
	if (pk->tid_in == InvalidSubTransactionId)
		return false;
	return idem_keys_fetch_tid(rel, &pk->tid, pk->scope, pk->key, row);
}

/*
 * Read the row of a key this transaction claimed without a lease, from the
 * version it wrote last.  False if there is no such key or version: the
 * caller then searches the index.
 */
bool
idem_pending_fetch(Relation rel, text *scope, text *key, IdemRow *row)
{
	PendingKey *pk = pending_find(scope, key);

	return pk != NULL && pending_fetch_entry(rel, pk, row);
}

/* Complete every key that is still ours and in progress */
static void
complete_pending(void)
{
	const IdemCatalog *cat;
	Relation	rel;
	TimestampTz now;
	ListCell   *lc;
	int64		completed = 0;

	/* nothing to do if idem_complete() completed every key */
	foreach(lc, pending_keys)
	{
		if (((PendingKey *) lfirst(lc))->completed_in == InvalidSubTransactionId)
			break;
	}
	if (lc == NULL)
		return;

	/* the extension may have been dropped by this very transaction */
	cat = idem_catalog_if_installed();
	if (cat == NULL)
		return;

	/* rows written by the last command must be visible to our updates */
	CommandCounterIncrement();
	now = GetCurrentTimestamp();
	/* a stored response may have to be fetched from TOAST */
	PushActiveSnapshot(GetTransactionSnapshot());
	/* not idem_keys_open(): the claim passed its checks as its caller */
	rel = table_open(cat->keys_relid, RowExclusiveLock);
	foreach(lc, pending_keys)
	{
		PendingKey *pk = (PendingKey *) lfirst(lc);
		IdemRow		row;

		if (pk->completed_in != InvalidSubTransactionId)
			continue;
		if (!pending_fetch_entry(rel, pk, &row) &&
			!idem_keys_fetch(rel, pk->scope, pk->key, SnapshotSelf, &row))
			continue;
		if (!row.own || idem_row_completed(&row) ||
			!row.isnull[IDEM_COL_LOCKED_UNTIL])
			continue;
		idem_row_set(&row, IDEM_COL_STATUS,
					 ObjectIdGetDatum(cat->status_completed), false);
		idem_row_set(&row, IDEM_COL_COMPLETED_AT, TimestampTzGetDatum(now), false);
		idem_keys_update(rel, &row);
		completed++;
	}
	table_close(rel, RowExclusiveLock);
	PopActiveSnapshot();
	idem_count(IDEM_COUNT_COMPLETIONS, completed);
}

/* Transaction callback: complete before commit, forget at the end */
static void
pending_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (pending_keys != NIL)
				complete_pending();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* the list lived in TopTransactionContext, which is going away */
			pending_keys = NIL;
			break;
		default:
			break;
	}
}

/*
 * Subtransaction callback: a rollback to a savepoint undoes the completions
 * and the row versions written since.  Subtransaction ids grow, and every subtransaction started
 * after this one is inside it, so those completions carry an id at least
 * this one's.
 */
static void
pending_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	foreach(lc, pending_keys)
	{
		PendingKey *pk = (PendingKey *) lfirst(lc);

		if (pk->completed_in != InvalidSubTransactionId &&
			pk->completed_in >= mySubid)
			pk->completed_in = InvalidSubTransactionId;
		if (pk->tid_in != InvalidSubTransactionId && pk->tid_in >= mySubid)
			pk->tid_in = InvalidSubTransactionId;
	}
}

/* Register the transaction callbacks; called once from _PG_init */
void
idem_pending_init(void)
{
	RegisterXactCallback(pending_xact_callback, NULL);
	RegisterSubXactCallback(pending_subxact_callback, NULL);
}
