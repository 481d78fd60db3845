/*
 * offsets.c
 *		Stream offsets of idempotent consumers: idem_offset_advance(),
 *		idem_offset_get() and idem_offset_forget().
 *
 * A consumer of an ordered partition (a Kafka partition, a RabbitMQ or NATS
 * stream) needs no key per message: the highest offset whose effects
 * committed, kept in the same transaction as those effects, says which
 * messages are done.  idem_offsets holds one row per (consumer group,
 * stream, partition) and role, whatever the number of messages, and never
 * expires.
 *
 * The table's rows belong to roles, as keys do: a call reaches the offsets
 * of the current role, or of the role named by its owner argument, which the
 * current role must have the privileges of.  Nobody else may touch the
 * table, so the statements run as its owner, with the role checked first
 * and passed as a parameter.  Each is planned once per backend (SPI, kept
 * plans), with names qualified by the extension's schema.
 *
 * An advance is one INSERT ... ON CONFLICT DO UPDATE that raises the stored
 * offset only if the new one is higher: two advancers of one partition
 * serialise on its row, and the second answers from the first's committed
 * offset.  Under REPEATABLE READ or SERIALIZABLE, the second fails with a
 * serialization error instead, as any update of a row changed since the
 * transaction's snapshot does, and its caller retries.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_offset_advance);
PG_FUNCTION_INFO_V1(idem_offset_get);
PG_FUNCTION_INFO_V1(idem_offset_forget);

/* The statements, by role */
typedef enum OffsetStatement
{
	OFFSET_ADVANCE,
	OFFSET_GET,
	OFFSET_FORGET,
	OFFSET_NUM_STATEMENTS
} OffsetStatement;

/* Their plans, for the schema they were made in */
static SPIPlanPtr plans[OFFSET_NUM_STATEMENTS];
static Oid	plans_schema = InvalidOid;

/* Fail on a NULL argument */
static void
not_null(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
}

/* Check the consumer group, stream and partition arguments (0, 1, 2) */
static void
partition_args(FunctionCallInfo fcinfo, bool with_partition)
{
	not_null(fcinfo, 0, "consumer_group");
	if (!with_partition)
		return;
	not_null(fcinfo, 1, "stream");
	not_null(fcinfo, 2, "partition");
	if (PG_GETARG_INT32(2) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition must not be negative"),
				 errdetail("The partition given is %d.", PG_GETARG_INT32(2))));
}

/*
 * Run one of the statements as the owner of idem_offsets, with these
 * parameters; returns SPI's result code, the connection still open
 */
static int
run_as_owner(OffsetStatement which, Datum *values, const char *nulls)
{
	static const char *const texts[OFFSET_NUM_STATEMENTS] = {
		"INSERT INTO %1$s.idem_offsets AS o "
		"(consumer_group, stream, partition, owner, committed_offset, updated_at) "
		"VALUES ($1, $2, $3, $4, $5, pg_catalog.clock_timestamp()) "
		"ON CONFLICT (consumer_group, stream, partition, owner) DO UPDATE "
		"SET committed_offset = excluded.committed_offset, updated_at = excluded.updated_at "
		"WHERE o.committed_offset OPERATOR(pg_catalog.<) excluded.committed_offset "
		"RETURNING 1",
		"SELECT committed_offset FROM %1$s.idem_offsets "
		"WHERE consumer_group OPERATOR(pg_catalog.=) $1 AND stream OPERATOR(pg_catalog.=) $2 "
		"AND partition OPERATOR(pg_catalog.=) $3 AND owner OPERATOR(pg_catalog.=) $4",
		"DELETE FROM %1$s.idem_offsets "
		"WHERE consumer_group OPERATOR(pg_catalog.=) $1 AND owner OPERATOR(pg_catalog.=) $2"
	};
	static const Oid argtypes[OFFSET_NUM_STATEMENTS][5] = {
		{TEXTOID, TEXTOID, INT4OID, REGROLEOID, INT8OID},
		{TEXTOID, TEXTOID, INT4OID, REGROLEOID},
		{TEXTOID, REGROLEOID}
	};
	static const int nargs[OFFSET_NUM_STATEMENTS] = {5, 4, 2};
	const IdemCatalog *cat = idem_catalog();
	Oid			relid;
	Oid			save_userid;
	int			save_sec_context;
	volatile int ret = 0;
	HeapTuple	tuple;
	Oid			table_owner;

	relid = get_relname_relid("idem_offsets", cat->schema);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"idem_offsets\" of extension \"idempotency\" does not exist"),
				 errhint("Update the extension with ALTER EXTENSION idempotency UPDATE.")));

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	table_owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plans_schema != cat->schema)
	{
		int			i;

		for (i = 0; i < OFFSET_NUM_STATEMENTS; i++)
		{
			if (plans[i] != NULL)
				SPI_freeplan(plans[i]);
			plans[i] = NULL;
		}
		plans_schema = cat->schema;
	}

	/* the table's owner runs the statement; the role was checked already */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(table_owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		if (plans[which] == NULL)
		{
			char	   *query = psprintf(texts[which],
										 quote_identifier(get_namespace_name(cat->schema)));
			SPIPlanPtr	plan = SPI_prepare(query, nargs[which],
										   (Oid *) argtypes[which]);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			plans[which] = plan;
		}
		ret = SPI_execute_plan(plans[which], values, nulls, false, 0);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	if (ret < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	return ret;
}

/*
 * idem_offset_advance(consumer_group, stream, partition, message_offset,
 * owner): record that the effects of the messages up to message_offset
 * commit with this transaction.  True if the offset is new (higher than the
 * one stored), false if it is a duplicate (at or below it).
 */
Datum
idem_offset_advance(PG_FUNCTION_ARGS)
{
	Datum		values[5];
	bool		advanced;

	partition_args(fcinfo, true);
	not_null(fcinfo, 3, "message_offset");
	if (PG_GETARG_INT64(3) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message_offset must not be negative"),
				 errdetail("The offset given is " INT64_FORMAT ".", PG_GETARG_INT64(3))));
	idem_prevent_write("idem_offset_advance()");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = ObjectIdGetDatum(idem_owner_arg(fcinfo, 4));
	values[4] = PG_GETARG_DATUM(3);
	run_as_owner(OFFSET_ADVANCE, values, NULL);
	advanced = (SPI_processed > 0);
	SPI_finish();
	PG_RETURN_BOOL(advanced);
}

/*
 * idem_offset_get(consumer_group, stream, partition, owner): the offset to
 * resume from, one past the highest committed, or NULL if there is none
 */
Datum
idem_offset_get(PG_FUNCTION_ARGS)
{
	Datum		values[4];
	bool		found;
	int64		next = 0;

	partition_args(fcinfo, true);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = ObjectIdGetDatum(idem_owner_arg(fcinfo, 3));
	run_as_owner(OFFSET_GET, values, NULL);
	found = (SPI_processed > 0);
	if (found)
	{
		bool		isnull;
		int64		committed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc,
															1, &isnull));

		if (committed == PG_INT64_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("the next offset is out of range")));
		next = committed + 1;
	}
	SPI_finish();
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_INT64(next);
}

/*
 * idem_offset_forget(consumer_group, owner): drop every offset of a consumer
 * group; returns how many partitions it had
 */
Datum
idem_offset_forget(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	int64		deleted;

	partition_args(fcinfo, false);
	idem_prevent_write("idem_offset_forget()");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = ObjectIdGetDatum(idem_owner_arg(fcinfo, 1));
	run_as_owner(OFFSET_FORGET, values, NULL);
	deleted = (int64) SPI_processed;
	SPI_finish();
	PG_RETURN_INT64(deleted);
}
