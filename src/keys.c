/*
 * keys.c
 *		Reading and writing rows of idem_keys through the table and index
 *		access methods, with no SQL to parse or plan.
 *
 * Writes go through the executor's index maintenance, so an index that an
 * operator adds to the table is kept up to date too.  Triggers and row-level
 * security policies on idem_keys are not applied: the functions are the
 * interface to the table.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "catalog/pg_am_d.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "miscadmin.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "idempotency.h"
#include "citus.h"

/*
 * Open idem_keys for one of the SQL functions.  They read and write the
 * table directly, so they cannot apply row-level security policies: rather
 * than ignore policies that apply to the caller, they refuse.
 */
Relation
idem_keys_open(LOCKMODE lockmode, const text *scope)
{
	Relation	rel = table_open(idem_catalog_lock_keys(lockmode, false), NoLock);

	if (rel->rd_rel->relrowsecurity &&
		check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("row-level security on table \"idem_keys\" applies to role \"%s\"",
						GetUserNameFromId(GetUserId(), false)),
				 errdetail("The idempotency functions read and write the table directly and do not apply its policies."),
				 errhint("Call them through a SECURITY DEFINER function that sets the scope for the caller.")));
	/* the scope's shard when idem_keys is distributed by Citus */
	return idem_citus_route(rel, scope, lockmode);
}

/* Start a row for a new key: every column NULL but owner, scope and key */
void
idem_row_init(IdemRow *row, const IdemKeyName *name)
{
	const IdemCatalog *cat = idem_catalog();
	int			i;

	ItemPointerSetInvalid(&row->tid);
	row->own = false;
	row->all_values = palloc0(sizeof(Datum) * cat->natts);
	row->all_isnull = palloc(sizeof(bool) * cat->natts);
	for (i = 0; i < cat->natts; i++)
		row->all_isnull[i] = true;
	for (i = 0; i < IDEM_NUM_COLUMNS; i++)
	{
		row->values[i] = (Datum) 0;
		row->isnull[i] = true;
	}
	idem_row_set(row, IDEM_COL_SCOPE, PointerGetDatum(name->scope), false);
	idem_row_set(row, IDEM_COL_KEY, PointerGetDatum(name->key), false);
	idem_row_set(row, IDEM_COL_OWNER, ObjectIdGetDatum(name->owner), false);
}

/* Set one column of a row; a column the table does not have is ignored */
void
idem_row_set(IdemRow *row, IdemColumn col, Datum value, bool isnull)
{
	AttrNumber	attnum = idem_catalog()->attnum[col];

	row->values[col] = value;
	row->isnull[col] = isnull;
	if (attnum != InvalidAttrNumber)
	{
		row->all_values[attnum - 1] = value;
		row->all_isnull[attnum - 1] = isnull;
	}
}

/* The role a row's key belongs to; InvalidOid for a key that records none */
Oid
idem_row_owner(const IdemRow *row)
{
	return row->isnull[IDEM_COL_OWNER] ? InvalidOid :
		DatumGetObjectId(row->values[IDEM_COL_OWNER]);
}

/* Is the row's status 'completed'? */
bool
idem_row_completed(const IdemRow *row)
{
	return DatumGetObjectId(row->values[IDEM_COL_STATUS]) ==
		idem_catalog()->status_completed;
}

/*
 * Is the row live at 'now'?  A key under an unexpired lease is live whatever
 * its expires_at, though claims keep expires_at at or after locked_until.
 * A row this transaction wrote is live until the transaction ends: nothing
 * can sweep it before it commits, and its owner must still complete it.
 */
bool
idem_row_live(const IdemRow *row, TimestampTz now)
{
	if (row->own)
		return true;
	if (DatumGetTimestampTz(row->values[IDEM_COL_EXPIRES_AT]) > now)
		return true;
	return !idem_row_completed(row) &&
		!row->isnull[IDEM_COL_LOCKED_UNTIL] &&
		DatumGetTimestampTz(row->values[IDEM_COL_LOCKED_UNTIL]) > now;
}

/*
 * Copy a datum out of a buffer, fetching it from TOAST if needed, so that it
 * outlives the scan that found it.
 */
static Datum
copy_datum(Datum value, Form_pg_attribute att)
{
	if (att->attlen == -1)
		return PointerGetDatum(PG_DETOAST_DATUM_COPY(value));
	return datumCopy(value, att->attbyval, att->attlen);
}

/* Copy the row in a slot into *row */
static void
row_from_slot(Relation rel, TupleTableSlot *slot, IdemRow *row)
{
	const IdemCatalog *cat = idem_catalog();
	TupleDesc	desc = RelationGetDescr(rel);
	bool		should_free;
	HeapTuple	tuple;
	int			i;

	tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
	row->tid = tuple->t_self;
	row->own = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tuple->t_data));

	slot_getallattrs(slot);
	row->all_values = palloc(sizeof(Datum) * cat->natts);
	row->all_isnull = palloc(sizeof(bool) * cat->natts);
	for (i = 0; i < cat->natts; i++)
	{
		row->all_isnull[i] = slot->tts_isnull[i];
		row->all_values[i] = slot->tts_isnull[i] ? (Datum) 0 :
			copy_datum(slot->tts_values[i], TupleDescAttr(desc, i));
	}
	for (i = 0; i < IDEM_NUM_COLUMNS; i++)
	{
		if (cat->attnum[i] == InvalidAttrNumber)
		{
			row->values[i] = (Datum) 0;
			row->isnull[i] = true;
			continue;
		}
		row->values[i] = row->all_values[cat->attnum[i] - 1];
		row->isnull[i] = row->all_isnull[cat->attnum[i] - 1];
	}
	if (should_free)
		heap_freetuple(tuple);
}

/* Are two texts equal byte for byte (as under the "C" collation)? */
bool
idem_text_equal(const text *a, const text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* The owner of the row in a slot; InvalidOid when it records none */
static Oid
slot_owner(TupleTableSlot *slot)
{
	AttrNumber	attnum = idem_catalog()->attnum[IDEM_COL_OWNER];
	bool		isnull;
	Datum		value;

	if (attnum == InvalidAttrNumber)
		return InvalidOid;
	value = slot_getattr(slot, attnum, &isnull);
	return isnull ? InvalidOid : DatumGetObjectId(value);
}

/*
 * Read the row version at 'tid' if SnapshotSelf sees it and it is the row of
 * the key 'name'.  The caller must know that the version's page still exists:
 * the pending list uses it for versions this transaction wrote and did not
 * roll back.  A version that this transaction replaced or deleted since is
 * not seen, and the caller then looks the key up through the index.
 *
 * Like an index scan, it first lets the heap prune the page of versions that
 * no one can see any more: the usual transaction leaves one behind on this
 * page (the claim's), and without this the page would fill up with them
 * until the next VACUUM.
 */
bool
idem_keys_fetch_tid(Relation rel, ItemPointer tid, const IdemKeyName *name,
					IdemRow *row)
{
	const IdemCatalog *cat = idem_catalog();
	TupleTableSlot *slot;
	bool		found = false;

	if (rel->rd_rel->relam == HEAP_TABLE_AM_OID)
	{
		Buffer		buffer = ReadBuffer(rel, ItemPointerGetBlockNumber(tid));

		heap_page_prune_opt(rel, buffer);
		ReleaseBuffer(buffer);
	}

	slot = table_slot_create(rel, NULL);
	if (table_tuple_fetch_row_version(rel, tid, SnapshotSelf, slot))
	{
		bool		isnull;
		Datum		k = slot_getattr(slot, cat->attnum[IDEM_COL_KEY], &isnull);
		Datum		s = slot_getattr(slot, cat->attnum[IDEM_COL_SCOPE], &isnull);

		if (idem_text_equal(DatumGetTextPP(k), name->key) &&
			idem_text_equal(DatumGetTextPP(s), name->scope) &&
			slot_owner(slot) == name->owner)
		{
			row_from_slot(rel, slot, row);
			found = true;
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	return found;
}

/*
 * Start a look-up of a key through the primary key.  Reads see what
 * 'snapshot' sees; SnapshotSelf sees what committed and what this
 * transaction wrote, including in the current command.  The claim paths read
 * with it, so that they answer from the latest committed row at every
 * isolation level.
 *
 * The scan searches (scope, key), the leading columns of the primary key,
 * and picks the row of the key's owner among the rows of other roles that
 * use the same key; usually there are none.  A row that records no owner
 * (claimed under version 0.1) answers for every role that has no row of
 * its own.
 */
void
idem_keys_lookup_begin(IdemLookup *lookup, Relation rel,
					   const IdemKeyName *name, Snapshot snapshot)
{
	Relation	index = index_open(idem_citus_pkey_index(rel), AccessShareLock);

	ScanKeyEntryInitialize(&lookup->skey[0], 0, 1, BTEqualStrategyNumber,
						   InvalidOid, index->rd_indcollation[0], F_TEXTEQ,
						   PointerGetDatum(name->scope));
	ScanKeyEntryInitialize(&lookup->skey[1], 0, 2, BTEqualStrategyNumber,
						   InvalidOid, index->rd_indcollation[1], F_TEXTEQ,
						   PointerGetDatum(name->key));
	lookup->rel = rel;
	lookup->owner = name->owner;
	lookup->index = index;
	lookup->slot = table_slot_create(rel, NULL);
	lookup->scan = idem_index_beginscan(rel, index, snapshot, 2, 0);
	index_rescan(lookup->scan, lookup->skey, 2, NULL, 0);
}

/*
 * Find the row of the look-up's key; can be called again, to read the key
 * afresh (after taking its lock, say)
 */
bool
idem_keys_lookup(IdemLookup *lookup, IdemRow *row)
{
	bool		found = false;

	while (index_getnext_slot(lookup->scan, ForwardScanDirection, lookup->slot))
	{
		Oid			owner = slot_owner(lookup->slot);

		if (owner == lookup->owner)
		{
			row_from_slot(lookup->rel, lookup->slot, row);
			found = true;
			break;
		}
		/* a row of no role: the answer, unless one of our own follows */
		if (owner == InvalidOid && !found)
		{
			row_from_slot(lookup->rel, lookup->slot, row);
			found = true;
		}
	}

	/*
	 * The row is copied: drop the buffer pins now, since the caller may wait
	 * for the key's lock before the next look-up.
	 */
	ExecClearTuple(lookup->slot);
	index_rescan(lookup->scan, lookup->skey, 2, NULL, 0);
	return found;
}

/* End a look-up */
void
idem_keys_lookup_end(IdemLookup *lookup)
{
	index_endscan(lookup->scan);
	ExecDropSingleTupleTableSlot(lookup->slot);
	/* locked until the transaction ends, like the table */
	index_close(lookup->index, NoLock);
}

/* Find the row of a key visible to 'snapshot' through the primary key */
bool
idem_keys_fetch(Relation rel, const IdemKeyName *name, Snapshot snapshot,
				IdemRow *row)
{
	IdemLookup	lookup;
	bool		found;

	idem_keys_lookup_begin(&lookup, rel, name, snapshot);
	found = idem_keys_lookup(&lookup, row);
	idem_keys_lookup_end(&lookup);
	return found;
}

/* Order two keys as the primary key does: byte for byte, the "C" collation */
static int
key_cmp(const text *a, const text *b)
{
	int			la = VARSIZE_ANY_EXHDR(a);
	int			lb = VARSIZE_ANY_EXHDR(b);
	int			c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	if (c != 0)
		return c;
	return (la > lb) - (la < lb);
}

/* qsort_arg comparator of positions in an array of keys */
static int
position_cmp(const void *a, const void *b, void *arg)
{
	text	  **keys = (text **) arg;

	return key_cmp(keys[*(const int *) a], keys[*(const int *) b]);
}

/*
 * Read the rows of many keys of one scope and owner with one search of the
 * primary key ("key = ANY (keys)"), as idem_keys_lookup() reads one: found[i]
 * and rows[i] for keys[i].  A key given more than once gets its row at each
 * place.
 */
void
idem_keys_fetch_many(Relation rel, text *scope, Oid owner, text **keys, int n,
					 Snapshot snapshot, IdemRow *rows, bool *found)
{
	const IdemCatalog *cat = idem_catalog();
	Relation	index = index_open(idem_citus_pkey_index(rel), AccessShareLock);
	Datum	   *elems = palloc(sizeof(Datum) * n);
	int		   *sorted = palloc(sizeof(int) * n);
	bool	   *own = palloc0(sizeof(bool) * n);
	ArrayType  *array;
	ScanKeyData skey[2];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int			i;

	for (i = 0; i < n; i++)
	{
		elems[i] = PointerGetDatum(keys[i]);
		sorted[i] = i;
		found[i] = false;
	}
	qsort_arg(sorted, n, sizeof(int), position_cmp, keys);
	array = construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);

	ScanKeyEntryInitialize(&skey[0], 0, 1, BTEqualStrategyNumber,
						   InvalidOid, index->rd_indcollation[0], F_TEXTEQ,
						   PointerGetDatum(scope));
	ScanKeyEntryInitialize(&skey[1], SK_SEARCHARRAY, 2, BTEqualStrategyNumber,
						   InvalidOid, index->rd_indcollation[1], F_TEXTEQ,
						   PointerGetDatum(array));
	slot = table_slot_create(rel, NULL);
	scan = idem_index_beginscan(rel, index, snapshot, 2, 0);
	index_rescan(scan, skey, 2, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		text	   *key = DatumGetTextPP(slot_getattr(slot, cat->attnum[IDEM_COL_KEY],
													  &isnull));
		Oid			row_owner = slot_owner(slot);
		int			lo = 0,
					hi = n;
		int			first;
		IdemRow		row;

		/* a row of no role answers unless one of our own is found */
		if (row_owner != owner && row_owner != InvalidOid)
			continue;

		/* the first place of this key in sorted order */
		while (lo < hi)
		{
			int			mid = (lo + hi) / 2;

			if (key_cmp(keys[sorted[mid]], key) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		first = lo;
		if (first == n || key_cmp(keys[sorted[first]], key) != 0)
			continue;
		if (own[sorted[first]] || (found[sorted[first]] && row_owner == InvalidOid))
			continue;

		row_from_slot(rel, slot, &row);
		for (i = first; i < n && key_cmp(keys[sorted[i]], key) == 0; i++)
		{
			rows[sorted[i]] = row;
			found[sorted[i]] = true;
			own[sorted[i]] = (row_owner == owner);
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	/* locked until the transaction ends, like the table */
	index_close(index, NoLock);
}

/* A minimal executor state for index maintenance of one relation */
static EState *
writer_begin(Relation rel, ResultRelInfo **rri_out)
{
	EState	   *estate = CreateExecutorState();
	MemoryContext oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	/* everything it builds lives in the executor state's memory */
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	MemoryContextSwitchTo(oldcxt);
	estate->es_output_cid = GetCurrentCommandId(true);
	*rri_out = rri;
	return estate;
}

/* Release what writer_begin() set up */
static void
writer_end(EState *estate, ResultRelInfo *rri)
{
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
}

/*
 * Start inserting rows: one executor state, one set of open indexes and one
 * slot for all of them, however many there are (the rows of a transaction's
 * deferred claims, at commit)
 */
IdemWriter *
idem_writer_begin(Relation rel)
{
	IdemWriter *writer = palloc(sizeof(IdemWriter));

	writer->rel = rel;
	writer->estate = writer_begin(rel, &writer->rri);
	writer->slot = table_slot_create(rel, NULL);
	return writer;
}

/*
 * Insert a row through a writer; a concurrent duplicate raises
 * unique_violation.  The row is seen by this command's later reads
 * (SnapshotSelf), and by the next command once the writer ends.
 */
void
idem_writer_insert(IdemWriter *writer, IdemRow *row)
{
	TupleTableSlot *slot = writer->slot;
	int			natts = RelationGetDescr(writer->rel)->natts;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, row->all_values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, row->all_isnull, sizeof(bool) * natts);
	ExecStoreVirtualTuple(slot);

	table_tuple_insert(writer->rel, slot, writer->estate->es_output_cid, 0, NULL);
	list_free(idem_insert_index_tuples(writer->rri, slot, writer->estate, false));
	ResetPerTupleExprContext(writer->estate);
	row->tid = slot->tts_tid;
	row->own = true;
}

/* Release a writer, and make what it inserted visible to the next command */
void
idem_writer_end(IdemWriter *writer)
{
	ExecDropSingleTupleTableSlot(writer->slot);
	writer_end(writer->estate, writer->rri);
	pfree(writer);
	CommandCounterIncrement();
}

/* Form the row in a slot of the table's own type */
static TupleTableSlot *
row_slot(Relation rel, IdemRow *row)
{
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int			natts = RelationGetDescr(rel)->natts;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, row->all_values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, row->all_isnull, sizeof(bool) * natts);
	ExecStoreVirtualTuple(slot);
	return slot;
}

/* Insert one new row; a concurrent duplicate raises unique_violation */
void
idem_keys_insert(Relation rel, IdemRow *row)
{
	IdemWriter *writer = idem_writer_begin(rel);

	idem_writer_insert(writer, row);
	idem_writer_end(writer);
}

/*
 * Replace the row at row->tid by row's values.  Waits for a transaction that
 * is deleting the row (a sweep); returns TM_Deleted if it went away.  The
 * indexes are opened only if the update is not HOT: completing a key changes
 * no indexed column, so it usually needs none of them.
 */
TM_Result
idem_keys_update(Relation rel, IdemRow *row)
{
	TupleTableSlot *slot = row_slot(rel, row);
	CommandId	cid = GetCurrentCommandId(true);
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	IdemUpdateIndexes update_indexes;
	TM_Result	result;

	result = table_tuple_update(rel, &row->tid, slot, cid,
								InvalidSnapshot, InvalidSnapshot, true,
								&tmfd, &lockmode, &update_indexes);
	if (result == TM_Ok)
	{
		if (IdemUpdateNeedsIndexes(update_indexes))
		{
			ResultRelInfo *rri;
			EState	   *estate = writer_begin(rel, &rri);

			/*
			 * update = false: the "index unchanged" hint needs a range table,
			 * and an update that is not HOT changed an indexed column anyway.
			 */
			list_free(idem_insert_index_tuples(rri, slot, estate,
											   IdemUpdateOnlySummarizing(update_indexes)));
			writer_end(estate, rri);
		}
		row->tid = slot->tts_tid;
		row->own = true;
	}
	else if (result != TM_Deleted)
		elog(ERROR, "unexpected result %d updating idempotency key", (int) result);

	ExecDropSingleTupleTableSlot(slot);
	CommandCounterIncrement();
	return result;
}

/*
 * Delete the row at tid.  With !wait, a row that another transaction is
 * changing is left alone (TM_BeingModified).
 */
TM_Result
idem_keys_delete(Relation rel, ItemPointer tid, bool wait)
{
	TM_FailureData tmfd;
	TM_Result	result;

	result = table_tuple_delete(rel, tid, GetCurrentCommandId(true),
								InvalidSnapshot, InvalidSnapshot, wait,
								&tmfd, false);
	if (result == TM_Ok)
		CommandCounterIncrement();
	return result;
}
