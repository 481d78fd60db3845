/*
 * catalog.c
 *		Where the extension's objects are: resolved once per backend, by OID
 *		and never by search_path, and forgotten when the keys table changes.
 *
 * The C code reads and writes idem_keys directly, so what it finds is
 * checked before it is used: the table must be a member of the extension,
 * every column the code uses must have the type it expects (and NOT NULL
 * where it expects a value), the primary key must be a btree on (scope,
 * key, owner), the expiry index a btree on expires_at, and idem_claim()'s
 * result type must have the columns the code fills.  Anything else is an
 * error that names the object, raised before any row is touched.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "parser/parse_type.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "compat.h"
#include "idempotency.h"

static IdemCatalog cache;
static bool cache_valid = false;

/* What the code expects of each column of idem_keys */
typedef struct ColumnSpec
{
	const char *name;
	Oid			typid;			/* InvalidOid: the extension's idem_status */
	bool		notnull;
} ColumnSpec;

static const ColumnSpec columns[IDEM_NUM_COLUMNS] = {
	{"scope", TEXTOID, true},
	{"key", TEXTOID, true},
	{"status", InvalidOid, true},
	{"fingerprint", TEXTOID, false},
	{"response", JSONBOID, false},
	{"attempt", INT4OID, true},
	{"recovery_point", TEXTOID, false},
	{"created_at", TIMESTAMPTZOID, true},
	{"completed_at", TIMESTAMPTZOID, false},
	{"expires_at", TIMESTAMPTZOID, true},
	{"locked_until", TIMESTAMPTZOID, false},
	{"lease", INTERVALOID, false},
	{"owner", REGROLEOID, true},
	{"body", BYTEAOID, false},
	{"released_attempt", INT4OID, false}
};

/* The columns of idem_claim_result, in order */
static const Oid claim_result_types[] = {
	InvalidOid,					/* outcome: the extension's idem_outcome */
	JSONBOID,					/* response */
	INT4OID,					/* attempt */
	TEXTOID,					/* recovery_point */
	TIMESTAMPTZOID,				/* expires_at */
	BYTEAOID					/* body, from 0.2 on */
};

static const char *const outcome_labels[IDEM_NUM_OUTCOMES] = {
	"claimed", "replay", "in_progress", "mismatch"
};

/*
 * Forget the cache when idem_keys, the relation of idem_claim_result (ALTER
 * TYPE) or everything is invalidated
 */
static void
idem_catalog_invalidate(Datum arg, Oid relid)
{
	if (cache_valid &&
		(relid == InvalidOid || relid == cache.keys_relid ||
		 relid == cache.claim_result_relid))
		cache_valid = false;
}

/* Register the invalidation callback; called once from _PG_init */
void
idem_catalog_init(void)
{
	CacheRegisterRelcacheCallback(idem_catalog_invalidate, (Datum) 0);
}

/* Look up the OID of an enum label, or fail */
static Oid
enum_label_oid(Oid typid, const char *label)
{
	Oid			oid;

	oid = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
						  ObjectIdGetDatum(typid), CStringGetDatum(label));
	if (!OidIsValid(oid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("label \"%s\" of type \"%s\" of extension \"idempotency\" does not exist",
						label, format_type_be(typid)),
				 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
	return oid;
}

/* Look up a type of the extension's schema, or fail */
static Oid
extension_type_oid(Oid nsp, const char *name)
{
	Oid			typid;

	typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
							CStringGetDatum(name), ObjectIdGetDatum(nsp));
	if (!OidIsValid(typid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("type \"%s\" of extension \"idempotency\" does not exist", name)));
	return typid;
}

/*
 * The schema of an extension (get_extension_schema() is not exported in 15),
 * and whether its installed version is 0.1, whose keys record no owner
 */
static Oid
extension_schema(Oid extoid, bool *version_0_1)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	Oid			result = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	*version_0_1 = false;
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		version = heap_getattr(tuple, Anum_pg_extension_extversion,
										   RelationGetDescr(rel), &isnull);

		result = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
		*version_0_1 = !isnull && strcmp(TextDatumGetCString(version), "0.1") == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

/* The access method of an index (get_rel_relam() is not in 15 and 16) */
static Oid
index_am(Oid indexid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexid));
	Oid			am;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", indexid);
	am = ((Form_pg_class) GETSTRUCT(tup))->relam;
	ReleaseSysCache(tup);
	return am;
}

/*
 * Find the btree index of idem_keys whose only key column is expires_at, the
 * one the sweep scans in order.  An index of another access method on that
 * column does not count: it cannot return rows in order, or at all.
 */
static Oid
expires_index(Relation rel, AttrNumber expires_attnum)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			result = InvalidOid;

	foreach(lc, indexes)
	{
		Oid			indexid = lfirst_oid(lc);
		HeapTuple	tup;
		Form_pg_index index;

		tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexid));
		if (!HeapTupleIsValid(tup))
			continue;
		index = (Form_pg_index) GETSTRUCT(tup);
		if (index->indnkeyatts == 1 &&
			index->indkey.values[0] == expires_attnum &&
			index_am(indexid) == BTREE_AM_OID &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL) &&
			index->indisvalid)
			result = indexid;
		ReleaseSysCache(tup);
		if (OidIsValid(result))
			break;
	}
	list_free(indexes);
	return result;
}

/*
 * The result row type of idem_claim(), from the extension's composite type,
 * checked against the columns that claim.c fills
 */
static TupleDesc
claim_result_desc(Oid nsp, Oid outcome_typid, bool version_0_1)
{
	Oid			typid = extension_type_oid(nsp, "idem_claim_result");
	TupleDesc	desc;
	int			i;
	bool		ok;

	cache.claim_result_relid = typeidTypeRelid(typid);
	desc = lookup_rowtype_tupdesc_copy(typid, -1);
	ok = (desc->natts == (int) lengthof(claim_result_types) - (version_0_1 ? 1 : 0));
	for (i = 0; ok && i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			want = OidIsValid(claim_result_types[i]) ?
			claim_result_types[i] : outcome_typid;

		ok = !att->attisdropped && att->atttypid == want;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("type \"idem_claim_result\" of extension \"idempotency\" has been altered"),
				 errdetail("It must have the columns outcome, response, attempt, recovery_point, expires_at and body, in that order."),
				 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
	return desc;
}

/* Fail unless a column exists with the type (and NOT NULL) the code expects */
static AttrNumber
check_column(Relation rel, const ColumnSpec *spec, Oid status_typid)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), spec->name);
	Form_pg_attribute att;
	Oid			want = OidIsValid(spec->typid) ? spec->typid : status_typid;

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"idem_keys\" does not exist",
						spec->name),
				 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
	att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	if (att->atttypid != want)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("column \"%s\" of table \"idem_keys\" has type %s, not %s",
						spec->name, format_type_be(att->atttypid), format_type_be(want)),
				 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
	if (spec->notnull && !att->attnotnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("column \"%s\" of table \"idem_keys\" must be NOT NULL",
						spec->name),
				 errhint("Restore the constraint with ALTER TABLE idem_keys ALTER COLUMN %s SET NOT NULL.",
						 spec->name)));
	return attnum;
}

/*
 * Fail unless the primary key is a btree index on exactly (scope, key,
 * owner), or (scope, key) for a table of version 0.1: the look-ups search
 * its leading columns
 */
static void
check_primary_key(Relation rel, Oid indexid, const AttrNumber *attnum,
				  bool has_owner)
{
	HeapTuple	tup;
	Form_pg_index index;
	bool		ok;

	if (!OidIsValid(indexid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"idem_keys\" has no primary key"),
				 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for index %u", indexid);
	index = (Form_pg_index) GETSTRUCT(tup);
	ok = index_am(indexid) == BTREE_AM_OID &&
		index->indnkeyatts == (has_owner ? 3 : 2) &&
		index->indkey.values[0] == attnum[IDEM_COL_SCOPE] &&
		index->indkey.values[1] == attnum[IDEM_COL_KEY] &&
		(!has_owner || index->indkey.values[2] == attnum[IDEM_COL_OWNER]);
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("primary key \"%s\" of table \"idem_keys\" is not a btree index on (scope, key%s)",
						get_rel_name(indexid), has_owner ? ", owner" : ""),
				 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
}

/* Fill the cache; false when the extension is not created in this database */
static bool
idem_catalog_fill(void)
{
	Oid			extoid;
	Oid			nsp;
	Oid			relid;
	Oid			status_typid;
	Oid			outcome_typid;
	bool		version_0_1;
	Relation	rel;
	MemoryContext oldcxt;
	int			i;

	extoid = get_extension_oid("idempotency", true);
	if (!OidIsValid(extoid))
		return false;
	nsp = extension_schema(extoid, &version_0_1);
	if (!OidIsValid(nsp))
		return false;			/* dropped since we looked */

	/*
	 * Look the table up, then lock it, and look again if it went away in
	 * between (DROP and CREATE EXTENSION in another session): taking the
	 * lock brings the catalog up to date.
	 */
	for (;;)
	{
		relid = get_relname_relid("idem_keys", nsp);
		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table \"idem_keys\" of extension \"idempotency\" does not exist")));
		rel = try_table_open(relid, AccessShareLock);
		if (rel != NULL)
			break;
	}

	/* a table of that name that is not the extension's own is not used */
	if (getExtensionOfObject(RelationRelationId, relid) != extoid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.idem_keys\" is not a member of extension \"idempotency\"",
						get_namespace_name(nsp)),
				 errdetail("The extension's own table has been renamed or dropped."),
				 errhint("Rename the extension's table back to \"idem_keys\", or recreate the extension.")));

	status_typid = extension_type_oid(nsp, "idem_status");
	outcome_typid = extension_type_oid(nsp, "idem_outcome");

	if (cache.claim_result != NULL)
		FreeTupleDesc(cache.claim_result);
	memset(&cache, 0, sizeof(cache));
	cache.keys_relid = relid;
	cache.schema = nsp;
	cache.has_owner = !version_0_1;

	cache.natts = RelationGetDescr(rel)->natts;
	for (i = 0; i < IDEM_NUM_COLUMNS; i++)
	{
		/* columns from 0.2 on */
		if ((i == IDEM_COL_OWNER || i == IDEM_COL_BODY ||
			 i == IDEM_COL_RELEASED_ATTEMPT) && !cache.has_owner)
			continue;
		cache.attnum[i] = check_column(rel, &columns[i], status_typid);
	}
	cache.pkey_indexid = IdemPrimaryKeyIndex(rel);
	check_primary_key(rel, cache.pkey_indexid, cache.attnum, cache.has_owner);
	cache.expires_indexid = expires_index(rel, cache.attnum[IDEM_COL_EXPIRES_AT]);
	table_close(rel, AccessShareLock);

	cache.status_in_progress = enum_label_oid(status_typid, "in_progress");
	cache.status_completed = enum_label_oid(status_typid, "completed");
	for (i = 0; i < IDEM_NUM_OUTCOMES; i++)
		cache.outcome[i] = enum_label_oid(outcome_typid, outcome_labels[i]);

	/* kept until the cache is filled again */
	oldcxt = MemoryContextSwitchTo(CacheMemoryContext);
	cache.claim_result = claim_result_desc(nsp, outcome_typid, version_0_1);
	MemoryContextSwitchTo(oldcxt);

	cache_valid = true;
	return true;
}

/* The extension's objects, or an error if it is not created here */
const IdemCatalog *
idem_catalog(void)
{
	if (!cache_valid && !idem_catalog_fill())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"idempotency\" is not created in this database")));
	return &cache;
}

/*
 * Lock idem_keys and return its OID, the cache valid for it.  The lock is
 * taken on the cached OID; if taking it brought news that the table changed
 * meanwhile (DROP and CREATE EXTENSION in another session, say), the lock is
 * given back and the cache filled again.  With nowait, InvalidOid if the
 * lock is not free or the extension is gone; otherwise those are errors.
 */
Oid
idem_catalog_lock_keys(LOCKMODE lockmode, bool nowait)
{
	for (;;)
	{
		const IdemCatalog *cat = nowait ? idem_catalog_if_installed() : idem_catalog();
		Oid			relid;

		if (cat == NULL)
			return InvalidOid;
		relid = cat->keys_relid;
		if (!nowait)
			LockRelationOid(relid, lockmode);
		else if (!ConditionalLockRelationOid(relid, lockmode))
			return InvalidOid;
		/* taking the lock processed the invalidations that came before it */
		if (cache_valid && cache.keys_relid == relid)
			return relid;
		UnlockRelationOid(relid, lockmode);
	}
}

/* The extension's objects, or NULL if it is not created here */
const IdemCatalog *
idem_catalog_if_installed(void)
{
	if (!cache_valid && !idem_catalog_fill())
		return NULL;
	return &cache;
}
