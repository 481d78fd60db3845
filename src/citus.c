/*
 * citus.c
 *		Keys in a Citus distributed idem_keys: the functions read and write
 *		the shard that holds the key, on the node where they run.
 *
 * When idem_keys is hash-distributed by Citus on its scope column, the
 * idem_keys of each node is an empty "shell", and the rows live in shards,
 * tables named idem_keys_<shardid> in the same schema, each on one node.
 * The functions, delegated by Citus to the node that holds the key's shard
 * (create_distributed_function(..., distribution_arg_name => 'scope',
 * colocate_with => 'idem_keys')), must read and write that shard, never the
 * shell.  This file finds it:
 *
 *	- Citus is detected at run time, from its catalogs, without linking to
 *	  it: pg_dist_partition says whether idem_keys is hash-distributed and by
 *	  which column, pg_dist_shard gives the shards' hash ranges,
 *	  pg_dist_placement and pg_dist_local_group which of them are on this
 *	  node.
 *	- A scope is hashed as Citus hashes a distribution value: the default
 *	  hash function of the column's type, under the column's collation.
 *	- What is found is kept until idem_keys, or one of the shards, is
 *	  invalidated; Citus invalidates the distributed table's relcache entry
 *	  whenever its shards or placements change.  Without Citus, or with an
 *	  idem_keys that is not distributed, the cost per call is one comparison.
 *
 * A shard is used only if it has the shell's columns at the same positions
 * (the code reads rows by attribute number) and a primary key on the same
 * columns.  A key whose shard is not on this node is an error: writing the
 * shell would hide the key from every other node.
 *
 * A call takes Citus's metadata lock of the key's shard in share mode, as
 * Citus's own writes do, and holds it to the end of its transaction: a shard
 * move (or split, or rebalance) takes it in exclusive mode on every node
 * while it switches the shard to its new node, so it waits for the keys
 * written on the old node to be copied, and a call that waited for it finds
 * the shard gone and fails with 40001, to be retried through the coordinator.
 *
 * The sweep (sweep.c) deletes expired keys from every shard this node
 * holds, through each shard's own index on expires_at, and never from the
 * shell.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/hash.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/primnodes.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "compat.h"
#include "idempotency.h"
#include "citus.h"

/*
 * The classes of Citus's advisory locks on a shard's metadata, by shard id,
 * and by co-location group and shard index (ADV_LOCKTAG_CLASS_CITUS_* in
 * Citus's resource_lock.h)
 */
#define CITUS_SHARD_METADATA_LOCK	4
#define CITUS_COLOCATED_SHARDS_METADATA_LOCK	8

/* One shard of idem_keys: its hash range and, once looked up, its relation */
typedef struct IdemShard
{
	int32		minvalue;
	int32		maxvalue;
	int64		shardid;
	bool		resolved;		/* relid and checked are known */
	bool		checked;		/* its layout was checked against the shell */
	Oid			relid;			/* InvalidOid: not on this node */
} IdemShard;

/* What Citus makes of idem_keys, for the cached keys_relid */
typedef struct IdemCitusState
{
	bool		valid;
	Oid			keys_relid;		/* the idem_keys this is about */
	bool		distributed;	/* hash-distributed by Citus on scope */
	Oid			nsp;			/* schema of idem_keys and its shards */
	Oid			collation;		/* of the distribution column */
	uint32		colocation_id;	/* 0: none */
	FmgrInfo	hash;			/* hash function of the column's type */
	int			nshards;
	IdemShard  *shards;			/* by minvalue, in CacheMemoryContext */
	int32		local_group;	/* this node's group in pg_dist_placement */
} IdemCitusState;

static IdemCitusState state;
static bool callback_registered = false;

/* Forget what was found when idem_keys or one of its shards changes */
static void
citus_invalidate(Datum arg, Oid relid)
{
	int			i;

	if (!state.valid)
		return;
	if (relid == InvalidOid || relid == state.keys_relid)
	{
		state.valid = false;
		return;
	}
	for (i = 0; i < state.nshards; i++)
	{
		if (state.shards[i].resolved && state.shards[i].relid == relid)
		{
			state.valid = false;
			return;
		}
	}
}

/* The OID of a Citus catalog table in pg_catalog, or InvalidOid */
static Oid
citus_catalog(const char *name)
{
	return get_relname_relid(name, PG_CATALOG_NAMESPACE);
}

/* The attribute number of a column of a Citus catalog, or an error */
static AttrNumber
citus_column(Oid relid, const char *name)
{
	AttrNumber	attnum = get_attnum(relid, name);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("column \"%s\" of Citus catalog \"%s\" does not exist",
						name, get_rel_name(relid)),
				 errdetail("The idempotency extension reads Citus's catalogs to find the shards of \"idem_keys\".")));
	return attnum;
}

/*
 * Read pg_dist_partition's row for idem_keys: false if it has none (the
 * table is not a Citus table).  A Citus table that is not hash-distributed
 * by scope (a reference table, a Citus local table, another column) is an
 * error: its rows cannot be reached through one local shard.
 */
static bool
read_partition(const IdemCatalog *cat)
{
	Oid			relid = citus_catalog("pg_dist_partition");
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	bool		found = false;
	char		method = 0;
	Var		   *partkey = NULL;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	ScanKeyInit(&key, citus_column(relid, "logicalrelid"),
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(cat->keys_relid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d;

		found = true;
		d = heap_getattr(tuple, citus_column(relid, "partmethod"),
						 RelationGetDescr(rel), &isnull);
		method = isnull ? 0 : DatumGetChar(d);
		d = heap_getattr(tuple, citus_column(relid, "colocationid"),
						 RelationGetDescr(rel), &isnull);
		state.colocation_id = isnull ? 0 : DatumGetUInt32(d);
		d = heap_getattr(tuple, citus_column(relid, "partkey"),
						 RelationGetDescr(rel), &isnull);
		if (!isnull)
		{
			Node	   *node = stringToNode(TextDatumGetCString(d));

			if (node != NULL && IsA(node, Var))
				partkey = (Var *) node;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!found)
		return false;

	if (method != 'h' || partkey == NULL ||
		partkey->varattno != cat->attnum[IDEM_COL_SCOPE])
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"idem_keys\" is a Citus table that is not distributed by scope"),
				 errdetail("The idempotency functions support a Citus table hash-distributed on column \"scope\", and no other kind."),
				 errhint("Use create_distributed_table('idem_keys', 'scope'), or undo it with undistribute_table('idem_keys').")));

	/* the hash function Citus uses: the default one of the column's type */
	{
		Oid			opclass = GetDefaultOpClass(partkey->vartype, HASH_AM_OID);
		Oid			input;
		Oid			proc;

		if (!OidIsValid(opclass))
			elog(ERROR, "no default hash operator class for type %u",
				 partkey->vartype);
		input = get_opclass_input_type(opclass);
		proc = get_opfamily_proc(get_opclass_family(opclass), input, input,
								 HASHSTANDARD_PROC);
		if (!OidIsValid(proc))
			elog(ERROR, "no hash function for type %u", partkey->vartype);
		fmgr_info_cxt(proc, &state.hash, CacheMemoryContext);
		state.collation = partkey->varcollid;
	}
	return true;
}

/* Sort shards by the start of their hash range */
static int
shard_cmp(const void *a, const void *b)
{
	int32		x = ((const IdemShard *) a)->minvalue;
	int32		y = ((const IdemShard *) b)->minvalue;

	return (x > y) - (x < y);
}

/* Read the shards of idem_keys and their hash ranges from pg_dist_shard */
static void
read_shards(const IdemCatalog *cat)
{
	Oid			relid = citus_catalog("pg_dist_shard");
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	AttrNumber	att_id, att_min, att_max;
	int			size = 32;

	if (!OidIsValid(relid))
		elog(ERROR, "Citus catalog \"pg_dist_shard\" does not exist");
	att_id = citus_column(relid, "shardid");
	att_min = citus_column(relid, "shardminvalue");
	att_max = citus_column(relid, "shardmaxvalue");
	state.shards = MemoryContextAlloc(CacheMemoryContext, sizeof(IdemShard) * size);
	state.nshards = 0;

	rel = table_open(relid, AccessShareLock);
	ScanKeyInit(&key, citus_column(relid, "logicalrelid"),
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(cat->keys_relid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		null_id, null_min, null_max;
		Datum		id = heap_getattr(tuple, att_id, desc, &null_id);
		Datum		min = heap_getattr(tuple, att_min, desc, &null_min);
		Datum		max = heap_getattr(tuple, att_max, desc, &null_max);
		IdemShard  *shard;

		if (null_id || null_min || null_max)
			elog(ERROR, "shard of \"idem_keys\" without a hash range");
		if (state.nshards == size)
		{
			size *= 2;
			state.shards = repalloc(state.shards, sizeof(IdemShard) * size);
		}
		shard = &state.shards[state.nshards++];
		memset(shard, 0, sizeof(IdemShard));
		shard->shardid = DatumGetInt64(id);
		shard->minvalue = pg_strtoint32(TextDatumGetCString(min));
		shard->maxvalue = pg_strtoint32(TextDatumGetCString(max));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	qsort(state.shards, state.nshards, sizeof(IdemShard), shard_cmp);
}

/* This node's group, from pg_dist_local_group */
static int32
read_local_group(void)
{
	Oid			relid = citus_catalog("pg_dist_local_group");
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	int32		group = -1;

	if (!OidIsValid(relid))
		return -1;
	rel = table_open(relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, citus_column(relid, "groupid"),
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			group = DatumGetInt32(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return group;
}

/* Has a shard a placement on this node (pg_dist_placement)? */
static bool
placed_here(int64 shardid)
{
	Oid			relid = citus_catalog("pg_dist_placement");
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	AttrNumber	att_group;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	att_group = citus_column(relid, "groupid");
	rel = table_open(relid, AccessShareLock);
	ScanKeyInit(&key, citus_column(relid, "shardid"),
				BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(shardid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	while (!found && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, att_group, RelationGetDescr(rel), &isnull);

		found = !isnull && DatumGetInt32(d) == state.local_group;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* Make the state valid for the current idem_keys */
static void
citus_state(const IdemCatalog *cat)
{
	if (state.valid && state.keys_relid == cat->keys_relid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(citus_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (state.shards != NULL)
		pfree(state.shards);
	memset(&state, 0, sizeof(state));
	state.keys_relid = cat->keys_relid;

	/* the usual case: no Citus in this database */
	if (OidIsValid(get_extension_oid("citus", true)) && read_partition(cat))
	{
		state.distributed = true;
		state.nsp = get_rel_namespace(cat->keys_relid);
		state.local_group = read_local_group();
		read_shards(cat);
	}
	state.valid = true;
}

/* The shard whose hash range holds a scope, or NULL */
static IdemShard *
find_shard(const text *scope)
{
	int32		h;
	int			lo = 0,
				hi = state.nshards - 1;

	h = DatumGetInt32(FunctionCall1Coll(&state.hash, state.collation,
										PointerGetDatum(scope)));
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		IdemShard  *shard = &state.shards[mid];

		if (h < shard->minvalue)
			hi = mid - 1;
		else if (h > shard->maxvalue)
			lo = mid + 1;
		else
			return shard;
	}
	return NULL;
}

/*
 * Take Citus's metadata lock of a shard in share mode, to the end of the
 * transaction, as Citus does for a write to the shard: a shard move or split
 * takes it in exclusive mode on every node while it switches the shard to
 * its new placement, so a key is never written to a placement that is being
 * left.  The lock is that of the shard's index in its co-location group, as
 * Citus locks a hash-distributed shard.  True if it was not held yet (the
 * placements may have changed since they were read).
 */
static bool
lock_shard_metadata(const IdemShard *shard)
{
	LOCKTAG		tag;

	if (state.colocation_id != 0)
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (shard - state.shards),
							 state.colocation_id,
							 CITUS_COLOCATED_SHARDS_METADATA_LOCK);
	else
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (shard->shardid >> 32),
							 (uint32) shard->shardid, CITUS_SHARD_METADATA_LOCK);
	return LockAcquire(&tag, ShareLock, false, false) == LOCKACQUIRE_OK;
}

/* Look up a shard's relation on this node, once */
static void
resolve_shard(IdemShard *shard)
{
	char	   *name;

	if (shard->resolved)
		return;
	name = psprintf("%s_" INT64_FORMAT, get_rel_name(state.keys_relid),
					shard->shardid);
	shard->relid = get_relname_relid(name, state.nsp);
	if (OidIsValid(shard->relid) && !placed_here(shard->shardid))
		shard->relid = InvalidOid;	/* left behind by a shard move */
	pfree(name);
	shard->resolved = true;
}

/*
 * Find a scope's shard, with its relation on this node resolved: false when
 * idem_keys is not distributed; *shard is NULL when no shard covers the scope
 */
static bool
locate_shard(const IdemCatalog *cat, const text *scope, IdemShard **shard)
{
	citus_state(cat);
	*shard = NULL;
	if (!state.distributed)
		return false;
	*shard = find_shard(scope);
	if (*shard != NULL)
		resolve_shard(*shard);
	return true;
}

/*
 * The relation of a scope's key on this node: idem_keys when it is not
 * distributed, else its shard, or InvalidOid when the shard is not here;
 * *shard is set to the shard, or NULL
 */
static Oid
keys_relid(const IdemCatalog *cat, const text *scope, IdemShard **shard)
{
	bool		was_here;
	int64		shardid;

	if (!locate_shard(cat, scope, shard))
		return cat->keys_relid;
	if (*shard == NULL)
		return InvalidOid;
	if (!lock_shard_metadata(*shard))
		return (*shard)->relid;

	/* a shard move that held the lock may have moved it: look again */
	was_here = OidIsValid((*shard)->relid);
	shardid = (*shard)->shardid;
	AcceptInvalidationMessages();
	if (!locate_shard(cat, scope, shard))
		return cat->keys_relid;
	if (*shard == NULL)
		return InvalidOid;
	if (was_here && !OidIsValid((*shard)->relid))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the shard of table \"idem_keys\" for scope \"%s\" has moved to another node",
						text_to_cstring(scope)),
				 errdetail("Shard " INT64_FORMAT " was moved while this call was routed to the node that held it.",
						   shardid),
				 errhint("Retry the transaction: it will be routed to the shard's new node.")));
	return (*shard)->relid;
}

/*
 * Fail unless a shard has the shell's attributes at the same positions, and
 * a btree primary key on the same columns: rows are read and written by
 * attribute number, and looked up through the primary key
 */
static void
check_shard(Relation shell, Relation shard)
{
	TupleDesc	a = RelationGetDescr(shell);
	TupleDesc	b = RelationGetDescr(shard);
	bool		ok = a->natts == b->natts;
	Oid			pkey = IdemPrimaryKeyIndex(shard);
	int			i;

	for (i = 0; ok && i < a->natts; i++)
	{
		Form_pg_attribute x = TupleDescAttr(a, i);
		Form_pg_attribute y = TupleDescAttr(b, i);

		ok = x->attisdropped == y->attisdropped &&
			(x->attisdropped || (x->atttypid == y->atttypid &&
								 x->attnotnull == y->attnotnull));
	}
	if (ok && OidIsValid(pkey))
	{
		HeapTuple	t1 = SearchSysCache1(INDEXRELID,
										 ObjectIdGetDatum(idem_catalog()->pkey_indexid));
		HeapTuple	t2 = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkey));

		ok = HeapTupleIsValid(t1) && HeapTupleIsValid(t2);
		if (ok)
		{
			Form_pg_index i1 = (Form_pg_index) GETSTRUCT(t1);
			Form_pg_index i2 = (Form_pg_index) GETSTRUCT(t2);

			ok = i1->indnkeyatts == i2->indnkeyatts &&
				memcmp(i1->indkey.values, i2->indkey.values,
					   sizeof(int16) * i1->indnkeyatts) == 0;
		}
		if (HeapTupleIsValid(t1))
			ReleaseSysCache(t1);
		if (HeapTupleIsValid(t2))
			ReleaseSysCache(t2);
	}
	else
		ok = false;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shard \"%s\" does not have the columns and primary key of table \"idem_keys\"",
						RelationGetRelationName(shard)),
				 errdetail("The idempotency functions read the shard by the column positions of \"idem_keys\"; a column dropped before the table was distributed shifts them."),
				 errhint("Recreate the extension, then distribute \"idem_keys\" again.")));
}

/*
 * The relation to read and write a scope's keys in, opened with lockmode:
 * rel itself (idem_keys, locked by the caller) unless idem_keys is
 * distributed by Citus, else the scope's shard on this node; rel then stays
 * locked to the end of the transaction, as DDL on the distributed table
 * expects.
 */
Relation
idem_citus_route(Relation rel, const text *scope, LOCKMODE lockmode)
{
	const IdemCatalog *cat = idem_catalog();
	IdemShard  *shard;
	Oid			relid;
	Relation	result;

	if (state.valid && state.keys_relid == cat->keys_relid && !state.distributed)
		return rel;
	relid = keys_relid(cat, scope, &shard);
	if (relid == RelationGetRelid(rel))
		return rel;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the shard of table \"idem_keys\" for scope \"%s\" is not on this node",
						text_to_cstring(scope)),
				 errdetail("Table \"idem_keys\" is distributed by Citus; the key's row is in shard " INT64_FORMAT ", on another node.",
						   shard ? shard->shardid : (int64) 0),
				 errhint("Distribute the idempotency functions with create_distributed_function(..., distribution_arg_name => 'scope', colocate_with => 'idem_keys', force_delegation => true), and call them on the coordinator.")));
	result = table_open(relid, lockmode);

	/*
	 * Check the shard's layout the first time it is used.  Opening it may
	 * have processed invalidations that reset the state: then look again.
	 */
	if (!state.valid)
		(void) keys_relid(cat, scope, &shard);
	if (shard == NULL || !shard->checked)
	{
		check_shard(rel, result);
		if (shard != NULL)
			shard->checked = true;
	}
	table_close(rel, NoLock);
	return result;
}

/*
 * The relation a claim of a scope's key is made in: idem_keys, or the
 * scope's shard on this node (InvalidOid if it is not here)
 */
Oid
idem_citus_keys_relid(const text *scope)
{
	const IdemCatalog *cat = idem_catalog();
	IdemShard  *shard;

	if (state.valid && state.keys_relid == cat->keys_relid && !state.distributed)
		return cat->keys_relid;
	return keys_relid(cat, scope, &shard);
}

/* The primary key of idem_keys, or of the shard rel */
Oid
idem_citus_pkey_index(Relation rel)
{
	const IdemCatalog *cat = idem_catalog();

	if (RelationGetRelid(rel) == cat->keys_relid)
		return cat->pkey_indexid;
	return IdemPrimaryKeyIndex(rel);
}

/*
 * At commit: make *rel the relation a pending key was claimed in (relid),
 * ending the writer of the previous one; false if that relation is no longer
 * where the scope's keys go (the table was dropped, or recreated, since).
 */
bool
idem_citus_commit_rel(Relation *rel, IdemWriter **writer, Oid relid,
					  const text *scope)
{
	if (!OidIsValid(relid) || idem_citus_keys_relid(scope) != relid)
		return false;
	if (*rel != NULL && RelationGetRelid(*rel) == relid)
		return true;
	if (*writer != NULL)
	{
		idem_writer_end(*writer);
		*writer = NULL;
	}
	if (*rel != NULL)
		table_close(*rel, NoLock);
	*rel = table_open(relid, RowExclusiveLock);
	return true;
}

/*
 * The shards of idem_keys that this node holds, as a list of relation OIDs
 * in the order of their hash ranges: what a sweep of this node deletes from.
 * *distributed is false (and the list empty) when idem_keys is not
 * distributed by Citus; the caller then sweeps idem_keys itself.  The
 * caller holds a lock on idem_keys.
 */
List *
idem_citus_local_shards(bool *distributed)
{
	const IdemCatalog *cat = idem_catalog();
	List	   *result = NIL;
	int			i;

	citus_state(cat);
	*distributed = state.distributed;
	if (!state.distributed)
		return NIL;
	for (i = 0; i < state.nshards; i++)
	{
		resolve_shard(&state.shards[i]);
		if (OidIsValid(state.shards[i].relid))
			result = lappend_oid(result, state.shards[i].relid);
	}
	return result;
}

/* The btree index of a shard whose only key column is expires_at, or InvalidOid */
static Oid
shard_expires_index(Relation shard, AttrNumber expires_attnum)
{
	List	   *indexes = RelationGetIndexList(shard);
	ListCell   *lc;
	Oid			result = InvalidOid;

	foreach(lc, indexes)
	{
		Oid			indexid = lfirst_oid(lc);
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexid));
		HeapTuple	classtup;
		Form_pg_index index;

		if (!HeapTupleIsValid(tup))
			continue;
		index = (Form_pg_index) GETSTRUCT(tup);
		classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexid));
		if (HeapTupleIsValid(classtup) &&
			((Form_pg_class) GETSTRUCT(classtup))->relam == BTREE_AM_OID &&
			index->indnkeyatts == 1 &&
			index->indkey.values[0] == expires_attnum &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL) &&
			index->indisvalid)
			result = indexid;
		if (HeapTupleIsValid(classtup))
			ReleaseSysCache(classtup);
		ReleaseSysCache(tup);
		if (OidIsValid(result))
			break;
	}
	list_free(indexes);
	return result;
}

/*
 * Open a shard of idem_keys for a sweep, with lockmode, checked like the
 * shard of a claim; *expires_index is set to its index on expires_at.  NULL
 * if the shard is gone (moved or dropped since it was listed), or, with
 * nowait, locked.  A shard without that index is an error, as idem_keys
 * without it is.
 */
Relation
idem_citus_open_shard(Oid relid, LOCKMODE lockmode, bool nowait,
					  Oid *expires_index)
{
	const IdemCatalog *cat = idem_catalog();
	Relation	shell;
	Relation	shard;

	if (nowait)
	{
		if (!ConditionalLockRelationOid(relid, lockmode))
			return NULL;
		shard = try_table_open(relid, NoLock);
	}
	else
		shard = try_table_open(relid, lockmode);
	if (shard == NULL)
		return NULL;

	/* the caller holds its lock on idem_keys */
	shell = table_open(cat->keys_relid, NoLock);
	check_shard(shell, shard);
	table_close(shell, NoLock);

	*expires_index = shard_expires_index(shard, cat->attnum[IDEM_COL_EXPIRES_AT]);
	if (!OidIsValid(*expires_index))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shard \"%s\" of table \"idem_keys\" has no btree index on expires_at",
						RelationGetRelationName(shard)),
				 errdetail("The sweep deletes expired keys in the order of that index."),
				 errhint("Create one on the distributed table with CREATE INDEX ON idem_keys (expires_at).")));
	return shard;
}
