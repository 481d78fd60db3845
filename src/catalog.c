/*
 * catalog.c
 *		Where the extension's objects are: resolved once per backend, by OID
 *		and never by search_path, and forgotten when the keys table changes.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "access/genam.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_extension.h"
#include "catalog/indexing.h"
#include "utils/fmgroids.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "utils/builtins.h"
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

static const char *const column_names[IDEM_NUM_COLUMNS] = {
	"scope", "key", "status", "fingerprint", "response", "attempt",
	"recovery_point", "created_at", "completed_at", "expires_at",
	"locked_until", "lease"
};

static const char *const outcome_labels[IDEM_NUM_OUTCOMES] = {
	"claimed", "replay", "in_progress", "mismatch"
};

/* Forget the cache when idem_keys (or everything) is invalidated */
static void
idem_catalog_invalidate(Datum arg, Oid relid)
{
	if (cache_valid && (relid == InvalidOid || relid == cache.keys_relid))
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
		elog(ERROR, "enum label \"%s\" of type %u does not exist", label, typid);
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

/* The schema of an extension (get_extension_schema() is not exported in 15) */
static Oid
extension_schema(Oid extoid)
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
	if (HeapTupleIsValid(tuple))
		result = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

/* Find the index of idem_keys whose only key column is expires_at */
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

/* The result row type of idem_claim(), from the extension's composite type */
static TupleDesc
claim_result_desc(Oid nsp)
{
	return lookup_rowtype_tupdesc_copy(extension_type_oid(nsp, "idem_claim_result"), -1);
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
	Relation	rel;
	MemoryContext oldcxt;
	int			i;

	extoid = get_extension_oid("idempotency", true);
	if (!OidIsValid(extoid))
		return false;
	nsp = extension_schema(extoid);
	relid = get_relname_relid("idem_keys", nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"idem_keys\" of extension \"idempotency\" does not exist")));

	if (cache.claim_result != NULL)
		FreeTupleDesc(cache.claim_result);
	memset(&cache, 0, sizeof(cache));
	cache.keys_relid = relid;

	rel = table_open(relid, AccessShareLock);
	cache.natts = RelationGetDescr(rel)->natts;
	for (i = 0; i < IDEM_NUM_COLUMNS; i++)
	{
		cache.attnum[i] = get_attnum(relid, column_names[i]);
		if (cache.attnum[i] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table \"idem_keys\" does not exist",
							column_names[i]),
					 errhint("Recreate the extension with DROP EXTENSION and CREATE EXTENSION.")));
	}
	cache.pkey_indexid = IdemPrimaryKeyIndex(rel);
	cache.expires_indexid = expires_index(rel, cache.attnum[IDEM_COL_EXPIRES_AT]);
	table_close(rel, AccessShareLock);

	if (!OidIsValid(cache.pkey_indexid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"idem_keys\" has no primary key")));

	status_typid = extension_type_oid(nsp, "idem_status");
	cache.status_in_progress = enum_label_oid(status_typid, "in_progress");
	cache.status_completed = enum_label_oid(status_typid, "completed");

	outcome_typid = extension_type_oid(nsp, "idem_outcome");
	for (i = 0; i < IDEM_NUM_OUTCOMES; i++)
		cache.outcome[i] = enum_label_oid(outcome_typid, outcome_labels[i]);

	/* kept until the cache is filled again */
	oldcxt = MemoryContextSwitchTo(CacheMemoryContext);
	cache.claim_result = claim_result_desc(nsp);
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

/* The extension's objects, or NULL if it is not created here */
const IdemCatalog *
idem_catalog_if_installed(void)
{
	if (!cache_valid && !idem_catalog_fill())
		return NULL;
	return &cache;
}
