/*
 * pending.c
 *		Transactional claims, completed when their transaction commits.
 *
 * A transactional claim (no lease) that is still in progress when its
 * transaction commits is completed with a NULL response: the caller's writes
 * did happen.
 *
 * A claim of a key that has no row at all is not written when it is made.
 * The key's lock, held to the end of the transaction, is what keeps every
 * other caller out; the row only has to exist once the transaction commits.
 * Such a "deferred" claim lives here, with the response idem_complete()
 * gives it, and its row is inserted once, completed, just before commit (or
 * PREPARE TRANSACTION).  The usual claim, write, complete transaction thus
 * writes one row version instead of an insert and an update, and a claim
 * that rolls back writes nothing at all.  Until the commit, the claiming
 * transaction sees the key through the functions (idem_lookup() included),
 * not in the table.
 *
 * A claim that had to change an existing row (replacing an expired key,
 * taking over a lease) writes it at once.  Such a key is read again at
 * commit and completed if its row is still ours and in progress; the entry
 * remembers where the transaction last wrote the row, to read it there
 * rather than through the index.  A key that idem_complete() completed needs
 * no second look.
 *
 * Every change is stamped with the subtransaction that made it, and undone
 * when that subtransaction (or one around it) rolls back, as the row would
 * have been.
 *
 * Entries are found by a linear search while there are few of them, as in
 * the usual transaction that claims one key; past INDEX_THRESHOLD a hash
 * table on (scope, key) is built, so that a transaction claiming many keys
 * does not pay a search of all the others for each.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "idempotency.h"

typedef struct PendingKey
{
	text	   *scope;
	text	   *key;
	bool		deferred;		/* the row is inserted at commit */
	SubTransactionId completed_in;	/* idem_complete() completed it here, or
									 * InvalidSubTransactionId */

	/* a deferred claim: the row to insert */
	SubTransactionId claimed_in;	/* claimed here; Invalid once rolled back */
	SubTransactionId released_in;	/* released or forgotten here, or Invalid */
	text	   *fingerprint;	/* or NULL */
	TimestampTz created_at;
	TimestampTz expires_at;
	Jsonb	   *response;		/* what idem_complete() stored, or NULL */
	TimestampTz completed_at;

	/* a claim that wrote its row: where, as a hint */
	ItemPointerData tid;		/* last version this transaction wrote */
	SubTransactionId tid_in;	/* written here, or InvalidSubTransactionId */

	struct PendingKey *next_same;	/* an older entry of the same key */
} PendingKey;

/* Entries beyond which they are found through pending_index */
#define INDEX_THRESHOLD		16

/* The key of pending_index: the texts of the key's first entry */
typedef struct PendingName
{
	text	   *scope;
	text	   *key;
} PendingName;

/* An entry of pending_index: the key's entries, newest first */
typedef struct PendingSlot
{
	PendingName name;
	PendingKey *newest;
} PendingSlot;

/* Keys claimed by the current transaction, in TopTransactionContext */
static List *pending_keys = NIL;

/* pending_keys by (scope, key) once there are many, or NULL */
static HTAB *pending_index = NULL;

/* Copy a text into TopTransactionContext */
static text *
text_copy(text *t)
{
	return (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(t));
}

/* Is this entry a deferred claim that still stands? */
static bool
deferred_active(PendingKey *pk)
{
	return pk->deferred && pk->claimed_in != InvalidSubTransactionId &&
		pk->released_in == InvalidSubTransactionId;
}

/* Hash of a PendingName, by content */
static uint32
pending_name_hash(const void *key, Size keysize)
{
	const PendingName *name = (const PendingName *) key;

	return (uint32) idem_key_hash(name->scope, name->key);
}

/* Compare two PendingNames by content; 0 when equal */
static int
pending_name_match(const void *key1, const void *key2, Size keysize)
{
	const PendingName *a = (const PendingName *) key1;
	const PendingName *b = (const PendingName *) key2;

	return (idem_text_equal(a->key, b->key) && idem_text_equal(a->scope, b->scope)) ? 0 : 1;
}

/* Put an entry in pending_index, in front of older entries of its key */
static void
pending_index_add(PendingKey *pk)
{
	PendingName name = {pk->scope, pk->key};
	PendingSlot *slot;
	bool		found;

	slot = hash_search(pending_index, &name, HASH_ENTER, &found);
	pk->next_same = found ? slot->newest : NULL;
	slot->newest = pk;
}

/* Index the entries, once there are many */
static void
pending_index_build(void)
{
	HASHCTL		ctl;
	ListCell   *lc;

	ctl.keysize = sizeof(PendingName);
	ctl.entrysize = sizeof(PendingSlot);
	ctl.hash = pending_name_hash;
	ctl.match = pending_name_match;
	ctl.hcxt = TopTransactionContext;
	pending_index = hash_create("idempotency pending keys", 4 * INDEX_THRESHOLD,
								&ctl,
								HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	foreach(lc, pending_keys)
		pending_index_add((PendingKey *) lfirst(lc));
}

/* The newest entry of a key that satisfies want, or NULL */
static PendingKey *
pending_find(text *scope, text *key, bool (*want) (PendingKey *))
{
	if (pending_index != NULL)
	{
		PendingName name = {scope, key};
		PendingSlot *slot = hash_search(pending_index, &name, HASH_FIND, NULL);
		PendingKey *pk;

		for (pk = slot ? slot->newest : NULL; pk != NULL; pk = pk->next_same)
		{
			if (want(pk))
				return pk;
		}
	}
	else
	{
		ListCell   *lc;

		foreach(lc, pending_keys)
		{
			PendingKey *pk = (PendingKey *) lfirst(lc);

			if (want(pk) && idem_text_equal(pk->key, key) && idem_text_equal(pk->scope, scope))
				return pk;
		}
	}
	return NULL;
}

/* Is this entry that of a claim that wrote its row? */
static bool
is_written(PendingKey *pk)
{
	return !pk->deferred;
}

/* The entry of a claim that wrote its row, or NULL */
static PendingKey *
pending_find_written(text *scope, text *key)
{
	return pending_find(scope, key, is_written);
}

/* The deferred claim of a key that still stands, or NULL */
static PendingKey *
pending_find_deferred(text *scope, text *key)
{
	return pending_find(scope, key, deferred_active);
}

/* A new entry, in TopTransactionContext */
static PendingKey *
pending_new(text *scope, text *key, bool deferred)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	PendingKey *pk = palloc0(sizeof(PendingKey));

	pk->scope = text_copy(scope);
	pk->key = text_copy(key);
	pk->deferred = deferred;
	pending_keys = lappend(pending_keys, pk);
	if (pending_index != NULL)
		pending_index_add(pk);
	else if (list_length(pending_keys) > INDEX_THRESHOLD)
		pending_index_build();
	MemoryContextSwitchTo(oldcxt);
	return pk;
}

/* Remember where this transaction wrote the key's row last */
static void
pending_set_tid(PendingKey *pk, ItemPointer tid)
{
	pk->tid = *tid;
	pk->tid_in = GetCurrentSubTransactionId();
}

/*
 * Remember a key that this transaction claimed without a lease by writing its
 * row, and the version it wrote
 */
void
idem_pending_add(text *scope, text *key, ItemPointer tid)
{
	PendingKey *pk = pending_find_written(scope, key);

	if (pk == NULL)
		pk = pending_new(scope, key, false);
	/* claimed again: in progress again */
	pk->completed_in = InvalidSubTransactionId;
	pending_set_tid(pk, tid);
}

/*
 * Note that idem_complete() completed a written key in the current
 * subtransaction, writing the version at tid
 */
void
idem_pending_completed(text *scope, text *key, ItemPointer tid)
{
	PendingKey *pk = pending_find_written(scope, key);

	if (pk != NULL)
	{
		pk->completed_in = GetCurrentSubTransactionId();
		pending_set_tid(pk, tid);
	}
}

/* Read a written key's row where this transaction wrote it last, if it is there */
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
	PendingKey *pk = pending_find_written(scope, key);

	return pk != NULL && pending_fetch_entry(rel, pk, row);
}

/* Make a deferred claim of a key that has no row */
void
idem_deferred_claim(text *scope, text *key, text *fingerprint,
					TimestampTz created_at, TimestampTz expires_at)
{
	PendingKey *pk = pending_new(scope, key, true);
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);

	pk->claimed_in = GetCurrentSubTransactionId();
	pk->fingerprint = fingerprint ? text_copy(fingerprint) : NULL;
	pk->created_at = created_at;
	pk->expires_at = expires_at;
	MemoryContextSwitchTo(oldcxt);
}

/* Build the row of a deferred claim, as it stands now */
static void
deferred_row(PendingKey *pk, IdemRow *row)
{
	const IdemCatalog *cat = idem_catalog();
	bool		completed = pk->completed_in != InvalidSubTransactionId;

	idem_row_init(row, pk->scope, pk->key);
	row->own = true;
	idem_row_set(row, IDEM_COL_STATUS,
				 ObjectIdGetDatum(completed ? cat->status_completed : cat->status_in_progress),
				 false);
	idem_row_set(row, IDEM_COL_FINGERPRINT, PointerGetDatum(pk->fingerprint),
				 pk->fingerprint == NULL);
	idem_row_set(row, IDEM_COL_RESPONSE, PointerGetDatum(pk->response),
				 !completed || pk->response == NULL);
	idem_row_set(row, IDEM_COL_ATTEMPT, Int32GetDatum(1), false);
	idem_row_set(row, IDEM_COL_CREATED_AT, TimestampTzGetDatum(pk->created_at), false);
	idem_row_set(row, IDEM_COL_COMPLETED_AT, TimestampTzGetDatum(pk->completed_at),
				 !completed);
	idem_row_set(row, IDEM_COL_EXPIRES_AT, TimestampTzGetDatum(pk->expires_at), false);
}

/* The row of this transaction's deferred claim of a key, if there is one */
bool
idem_deferred_row(text *scope, text *key, IdemRow *row)
{
	PendingKey *pk;

	if (pending_keys == NIL)
		return false;
	pk = pending_find_deferred(scope, key);
	if (pk == NULL)
		return false;
	deferred_row(pk, row);
	return true;
}

/* Complete a deferred claim with this response (NULL for none) */
void
idem_deferred_complete(text *scope, text *key, Jsonb *response, TimestampTz now)
{
	PendingKey *pk = pending_find_deferred(scope, key);
	MemoryContext oldcxt;

	Assert(pk != NULL);
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	pk->response = response ? (Jsonb *) PG_DETOAST_DATUM_COPY(PointerGetDatum(response)) : NULL;
	MemoryContextSwitchTo(oldcxt);
	pk->completed_at = now;
	pk->completed_in = GetCurrentSubTransactionId();
}

/* Give up a deferred claim (idem_release(), idem_forget()) */
void
idem_deferred_drop(text *scope, text *key)
{
	PendingKey *pk = pending_find_deferred(scope, key);

	Assert(pk != NULL);
	pk->released_in = GetCurrentSubTransactionId();
}

/* Is there anything to write at commit? */
static bool
commit_has_work(void)
{
	ListCell   *lc;

	foreach(lc, pending_keys)
	{
		PendingKey *pk = (PendingKey *) lfirst(lc);

		if (pk->deferred ? deferred_active(pk) :
			pk->completed_in == InvalidSubTransactionId)
			return true;
	}
	return false;
}

/* Write the deferred claims, and complete the written keys still in progress */
static void
complete_pending(void)
{
	const IdemCatalog *cat;
	Relation	rel;
	TimestampTz now;
	ListCell   *lc;
	int64		completed = 0;

	if (!commit_has_work())
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

		if (pk->deferred)
		{
			if (!deferred_active(pk))
				continue;
			if (pk->completed_in == InvalidSubTransactionId)
			{
				pk->completed_in = GetCurrentSubTransactionId();
				pk->completed_at = now;
				pk->response = NULL;
				completed++;
			}
			deferred_row(pk, &row);
			idem_keys_insert(rel, &row);
			continue;
		}

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

/* Transaction callback: write before commit, forget at the end */
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
			/* both lived in TopTransactionContext, which is going away */
			pending_keys = NIL;
			pending_index = NULL;
			break;
		default:
			break;
	}
}

/*
 * Subtransaction callback: a rollback to a savepoint undoes the claims,
 * completions, releases and row versions made since.  Subtransaction ids
 * grow, and every subtransaction started after this one is inside it, so
 * those changes carry an id at least this one's.
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

		if (pk->claimed_in != InvalidSubTransactionId && pk->claimed_in >= mySubid)
			pk->claimed_in = InvalidSubTransactionId;
		if (pk->released_in != InvalidSubTransactionId && pk->released_in >= mySubid)
			pk->released_in = InvalidSubTransactionId;
		if (pk->completed_in != InvalidSubTransactionId && pk->completed_in >= mySubid)
		{
			pk->completed_in = InvalidSubTransactionId;
			pk->response = NULL;
		}
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
