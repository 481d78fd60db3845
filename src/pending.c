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

/* Remember a key that this transaction claimed without a lease */
void
idem_pending_add(text *scope, text *key)
{
	MemoryContext oldcxt;
	PendingKey *pk;
	ListCell   *lc;

	foreach(lc, pending_keys)
	{
		pk = (PendingKey *) lfirst(lc);
		if (text_equal(pk->key, key) && text_equal(pk->scope, scope))
			return;
	}

	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	pk = palloc(sizeof(PendingKey));
	pk->scope = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(scope));
	pk->key = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(key));
	pending_keys = lappend(pending_keys, pk);
	MemoryContextSwitchTo(oldcxt);
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

		if (!idem_keys_fetch(rel, pk->scope, pk->key, SnapshotSelf, &row))
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

/* Register the transaction callback; called once from _PG_init */
void
idem_pending_init(void)
{
	RegisterXactCallback(pending_xact_callback, NULL);
}
