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
 * have been.  A change made inside a subtransaction first logs the entry as
 * it was (undo_log); a rollback to a savepoint restores, from the end of the
 * log, what was changed since the savepoint, and so costs in proportion to
 * what the savepoint did, not to every key of the transaction.  Changes at
 * the top level are not logged: only the end of the transaction undoes them.
 *
 * Entries are found by a linear search while there are few of them, as in
 * the usual transaction that claims one key; past INDEX_THRESHOLD a hash
 * table on (owner, scope, key) is built, so that a transaction claiming many keys
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
#include "citus.h"

typedef struct PendingKey
{
	IdemKeyName name;			/* texts copied */
	Oid			relid;			/* the idem_keys it was claimed in */
	bool		deferred;		/* the row is inserted at commit */
	SubTransactionId completed_in;	/* idem_complete() completed it here, or
									 * InvalidSubTransactionId */

	/* a deferred claim: the row to insert */
	SubTransactionId claimed_in;	/* claimed here; Invalid once rolled back */
	SubTransactionId released_in;	/* released or forgotten here, or Invalid
									 * (written claims too) */
	text	   *fingerprint;	/* or NULL */
	TimestampTz created_at;
	TimestampTz expires_at;
	Jsonb	   *response;		/* what idem_complete() stored, or NULL */
	bytea	   *body;			/* the body it stored, or NULL */
	TimestampTz completed_at;

	/* a claim that wrote its row: where, as a hint */
	ItemPointerData tid;		/* last version this transaction wrote */
	SubTransactionId tid_in;	/* written here, or InvalidSubTransactionId */

	struct PendingKey *next_same;	/* an older entry of the same key */
} PendingKey;

/* Entries beyond which they are found through pending_index */
#define INDEX_THRESHOLD		16

/* An entry of pending_index: the key's entries, newest first */
typedef struct PendingSlot
{
	IdemKeyName name;			/* the texts of the key's first entry */
	PendingKey *newest;
} PendingSlot;

/* Keys claimed by the current transaction, in TopTransactionContext */
static List *pending_keys = NIL;

/* pending_keys by (owner, scope, key) once there are many, or NULL */
static HTAB *pending_index = NULL;

/* An entry as it was before a change made in subtransaction 'subid' */
typedef struct PendingUndo
{
	PendingKey *pk;
	SubTransactionId subid;
	PendingKey	before;
} PendingUndo;

/*
 * Changes made in subtransactions, oldest first, in TopTransactionContext.
 * Subtransaction ids grow, so the changes made since a subtransaction
 * started are the ones at the end with an id at least its own.
 */
static PendingUndo *undo_log = NULL;
static int	undo_len = 0;
static int	undo_size = 0;

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

/* Are two key names the same key? */
static bool
name_equal(const IdemKeyName *a, const IdemKeyName *b)
{
	return a->owner == b->owner && idem_text_equal(a->key, b->key) &&
		idem_text_equal(a->scope, b->scope);
}

/* Hash of an IdemKeyName, by content */
static uint32
pending_name_hash(const void *key, Size keysize)
{
	return (uint32) idem_key_hash((const IdemKeyName *) key);
}

/* Compare two IdemKeyNames by content; 0 when equal */
static int
pending_name_match(const void *key1, const void *key2, Size keysize)
{
	return name_equal((const IdemKeyName *) key1,
					  (const IdemKeyName *) key2) ? 0 : 1;
}

/* Put an entry in pending_index, in front of older entries of its key */
static void
pending_index_add(PendingKey *pk)
{
	PendingSlot *slot;
	bool		found;

	slot = hash_search(pending_index, &pk->name, HASH_ENTER, &found);
	pk->next_same = found ? slot->newest : NULL;
	slot->newest = pk;
}

/* Index the entries, once there are many */
static void
pending_index_build(void)
{
	HASHCTL		ctl;
	ListCell   *lc;

	ctl.keysize = sizeof(IdemKeyName);
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
pending_find(const IdemKeyName *name, bool (*want) (PendingKey *))
{
	if (pending_index != NULL)
	{
		PendingSlot *slot = hash_search(pending_index, name, HASH_FIND, NULL);
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

			if (want(pk) && name_equal(&pk->name, name))
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
pending_find_written(const IdemKeyName *name)
{
	return pending_find(name, is_written);
}

/* The deferred claim of a key that still stands, or NULL */
static PendingKey *
pending_find_deferred(const IdemKeyName *name)
{
	return pending_find(name, deferred_active);
}

/* A new entry, in TopTransactionContext */
static PendingKey *
pending_new(const IdemKeyName *name, bool deferred)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	PendingKey *pk = palloc0(sizeof(PendingKey));

	pk->relid = idem_citus_keys_relid(name->scope);
	pk->name.owner = name->owner;
	pk->name.scope = text_copy(name->scope);
	pk->name.key = text_copy(name->key);
	pk->deferred = deferred;
	pending_keys = lappend(pending_keys, pk);
	if (pending_index != NULL)
		pending_index_add(pk);
	else if (list_length(pending_keys) > INDEX_THRESHOLD)
		pending_index_build();
	MemoryContextSwitchTo(oldcxt);
	return pk;
}

/* Log an entry as it is, before a change made in a subtransaction */
static void
pending_remember(PendingKey *pk)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	PendingUndo *undo;

	if (subid == TopSubTransactionId)
		return;
	if (undo_len == undo_size)
	{
		undo_size = undo_size == 0 ? 64 : undo_size * 2;
		undo_log = undo_log == NULL ?
			MemoryContextAlloc(TopTransactionContext, sizeof(PendingUndo) * undo_size) :
			repalloc(undo_log, sizeof(PendingUndo) * undo_size);
	}
	undo = &undo_log[undo_len++];
	undo->pk = pk;
	undo->subid = subid;
	undo->before = *pk;
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
idem_pending_add(const IdemKeyName *name, ItemPointer tid)
{
	PendingKey *pk = pending_find_written(name);

	if (pk == NULL)
		pk = pending_new(name, false);
	pending_remember(pk);
	/* claimed again: in progress again */
	pk->completed_in = InvalidSubTransactionId;
	pk->released_in = InvalidSubTransactionId;
	pending_set_tid(pk, tid);
}

/*
 * Note that idem_complete() completed a written key in the current
 * subtransaction, writing the version at tid
 */
void
idem_pending_completed(const IdemKeyName *name, ItemPointer tid)
{
	PendingKey *pk = pending_find_written(name);

	if (pk != NULL)
	{
		pending_remember(pk);
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
	return idem_keys_fetch_tid(rel, &pk->tid, &pk->name, row);
}

/*
 * Read the row of a key this transaction claimed without a lease, from the
 * version it wrote last.  False if there is no such key or version: the
 * caller then searches the index.
 */
bool
idem_pending_fetch(Relation rel, const IdemKeyName *name, IdemRow *row)
{
	PendingKey *pk = pending_find_written(name);

	return pk != NULL && pending_fetch_entry(rel, pk, row);
}

/* Make a deferred claim of a key that has no row */
void
idem_deferred_claim(const IdemKeyName *name, text *fingerprint,
					TimestampTz created_at, TimestampTz expires_at)
{
	PendingKey *pk = pending_new(name, true);
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);

	pending_remember(pk);
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

	idem_row_init(row, &pk->name);
	row->own = true;
	idem_row_set(row, IDEM_COL_STATUS,
				 ObjectIdGetDatum(completed ? cat->status_completed : cat->status_in_progress),
				 false);
	idem_row_set(row, IDEM_COL_FINGERPRINT, PointerGetDatum(pk->fingerprint),
				 pk->fingerprint == NULL);
	idem_row_set(row, IDEM_COL_RESPONSE, PointerGetDatum(pk->response),
				 !completed || pk->response == NULL);
	idem_row_set(row, IDEM_COL_BODY, PointerGetDatum(pk->body),
				 !completed || pk->body == NULL);
	idem_row_set(row, IDEM_COL_ATTEMPT, Int32GetDatum(1), false);
	idem_row_set(row, IDEM_COL_CREATED_AT, TimestampTzGetDatum(pk->created_at), false);
	idem_row_set(row, IDEM_COL_COMPLETED_AT, TimestampTzGetDatum(pk->completed_at),
				 !completed);
	idem_row_set(row, IDEM_COL_EXPIRES_AT, TimestampTzGetDatum(pk->expires_at), false);
}

/* The row of this transaction's deferred claim of a key, if there is one */
bool
idem_deferred_row(const IdemKeyName *name, IdemRow *row)
{
	PendingKey *pk;

	if (pending_keys == NIL)
		return false;
	pk = pending_find_deferred(name);
	if (pk == NULL)
		return false;
	deferred_row(pk, row);
	return true;
}

/* Complete a deferred claim with this response and body (NULL for none) */
void
idem_deferred_complete(const IdemKeyName *name, Jsonb *response,
					   bytea *body, TimestampTz now)
{
	PendingKey *pk = pending_find_deferred(name);
	MemoryContext oldcxt;

	Assert(pk != NULL);
	pending_remember(pk);
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	pk->response = response ? (Jsonb *) PG_DETOAST_DATUM_COPY(PointerGetDatum(response)) : NULL;
	pk->body = body ? (bytea *) PG_DETOAST_DATUM_COPY(PointerGetDatum(body)) : NULL;
	MemoryContextSwitchTo(oldcxt);
	pk->completed_at = now;
	pk->completed_in = GetCurrentSubTransactionId();
}

/* Give up a deferred claim (idem_release(), idem_forget()) */
void
idem_deferred_drop(const IdemKeyName *name)
{
	PendingKey *pk = pending_find_deferred(name);

	Assert(pk != NULL);
	pending_remember(pk);
	pk->released_in = GetCurrentSubTransactionId();
}

/*
 * Note that a key this transaction claimed by writing its row was released
 * (or forgotten) in the current subtransaction
 */
void
idem_pending_released(const IdemKeyName *name)
{
	PendingKey *pk = pending_find_written(name);

	if (pk != NULL)
	{
		pending_remember(pk);
		pk->released_in = GetCurrentSubTransactionId();
	}
}

/* Does this entry stand for a claim of this transaction that still holds? */
static bool
claim_stands(PendingKey *pk)
{
	if (pk->deferred)
		return deferred_active(pk);
	return pk->released_in == InvalidSubTransactionId;
}

/*
 * The keys this transaction claimed without a lease and still holds, oldest
 * claim first: a list of IdemKeyName, in the caller's memory context
 */
List *
idem_pending_claimed(void)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, pending_keys)
	{
		PendingKey *pk = (PendingKey *) lfirst(lc);
		IdemKeyName *name;

		if (!claim_stands(pk))
			continue;
		name = palloc(sizeof(IdemKeyName));
		*name = pk->name;
		result = lappend(result, name);
	}
	return result;
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

/*
 * Write the deferred claims, and complete the written keys still in
 * progress.  However many keys there are, the deferred rows go through one
 * executor state (IdemWriter), and each key's row is built in a memory
 * context that is reset before the next: COMMIT costs per key what it costs
 * for one.
 */
static void
complete_pending(void)
{
	const IdemCatalog *cat;
	Relation	rel;
	TimestampTz now;
	ListCell   *lc;
	int64		completed = 0;
	IdemWriter *writer = NULL;
	MemoryContext row_cxt;
	MemoryContext oldcxt;

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
	rel = NULL;				/* opened for the first key, its shard under Citus */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext,
									"idempotency commit row",
									ALLOCSET_DEFAULT_SIZES);
	foreach(lc, pending_keys)
	{
		PendingKey *pk = (PendingKey *) lfirst(lc);
		IdemRow		row;

		/* a claim made in a table that this transaction dropped went with it */
		if (!idem_citus_commit_rel(&rel, &writer, pk->relid, pk->name.scope))
			continue;

		if (pk->deferred)
		{
			if (!deferred_active(pk))
				continue;
			if (pk->completed_in == InvalidSubTransactionId)
			{
				pk->completed_in = GetCurrentSubTransactionId();
				pk->completed_at = now;
				pk->response = NULL;
				pk->body = NULL;
				completed++;
			}
			if (writer == NULL)
				writer = idem_writer_begin(rel);
			oldcxt = MemoryContextSwitchTo(row_cxt);
			deferred_row(pk, &row);
			idem_writer_insert(writer, &row);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(row_cxt);
			continue;
		}

		if (pk->completed_in != InvalidSubTransactionId)
			continue;
		oldcxt = MemoryContextSwitchTo(row_cxt);
		if ((pending_fetch_entry(rel, pk, &row) ||
			 idem_keys_fetch(rel, &pk->name, SnapshotSelf, &row)) &&
			row.own && !idem_row_completed(&row) &&
			row.isnull[IDEM_COL_LOCKED_UNTIL])
		{
			idem_row_set(&row, IDEM_COL_STATUS,
						 ObjectIdGetDatum(cat->status_completed), false);
			idem_row_set(&row, IDEM_COL_COMPLETED_AT, TimestampTzGetDatum(now), false);
			idem_keys_update(rel, &row);
			completed++;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(row_cxt);
	}
	if (writer != NULL)
		idem_writer_end(writer);
	MemoryContextDelete(row_cxt);
	if (rel != NULL)
		table_close(rel, NoLock);
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
			/* all lived in TopTransactionContext, which is going away */
			pending_keys = NIL;
			pending_index = NULL;
			undo_log = NULL;
			undo_len = undo_size = 0;
			break;
		default:
			break;
	}
}

/*
 * Subtransaction callback: a rollback to a savepoint undoes the claims,
 * completions, releases and row versions made since, from the end of the
 * undo log.  Every change made since the subtransaction started carries an
 * id at least its own, and every change made before it a smaller one.
 */
static void
pending_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (undo_len > 0 && undo_log[undo_len - 1].subid >= mySubid)
	{
		PendingUndo *undo = &undo_log[--undo_len];
		PendingKey *next_same = undo->pk->next_same;

		/* the index chain is not part of what changed */
		*undo->pk = undo->before;
		undo->pk->next_same = next_same;
	}
}

/* Register the transaction callbacks; called once from _PG_init */
void
idem_pending_init(void)
{
	RegisterXactCallback(pending_xact_callback, NULL);
	RegisterSubXactCallback(pending_subxact_callback, NULL);
}
