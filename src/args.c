/*
 * args.c
 *		Checks of the arguments that the SQL functions share: key, scope,
 *		owner, fingerprint, intervals and payload sizes.  Every limit is
 *		enforced here, at the call, so that nothing can fail at COMMIT.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_authid.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "idempotency.h"

/* The key as a C string, cut for use in messages */
char *
idem_key_cstring(text *key)
{
	int			len = VARSIZE_ANY_EXHDR(key);

	if (len > 64)
		len = pg_mbcliplen(VARDATA_ANY(key), len, 64);
	return pnstrdup(VARDATA_ANY(key), len);
}

/* Fetch and check the key argument: not NULL, not empty, not too long */
text *
idem_key_arg(FunctionCallInfo fcinfo, int argno)
{
	return idem_check_key(PG_ARGISNULL(argno) ? NULL : PG_GETARG_TEXT_PP(argno));
}

/* Check a key (NULL for a null one): not NULL, not empty, not too long */
text *
idem_check_key(text *key)
{
	int			len;

	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("idempotency key must not be null")));
	len = VARSIZE_ANY_EXHDR(key);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must not be empty")));
	/* a character is at least one byte: count them only when it matters */
	if (len > idem_max_key_length &&
		pg_mbstrlen_with_len(VARDATA_ANY(key), len) > idem_max_key_length)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("idempotency key is too long"),
				 errdetail("The key has %d characters; the limit is %d.",
						   pg_mbstrlen_with_len(VARDATA_ANY(key), len),
						   idem_max_key_length),
				 errhint("Raise idempotency.max_key_length, or send a hash of the key.")));
	return key;
}

/* Fetch and check the scope argument: not NULL, not too long */
text *
idem_scope_arg(FunctionCallInfo fcinfo, int argno)
{
	text	   *scope;
	int			len;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("scope must not be null"),
				 errhint("The default scope is the empty string.")));
	scope = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(scope);
	if (len > idem_max_key_length &&
		pg_mbstrlen_with_len(VARDATA_ANY(scope), len) > idem_max_key_length)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("scope is too long"),
				 errdetail("The scope has %d characters; the limit is %d.",
						   pg_mbstrlen_with_len(VARDATA_ANY(scope), len),
						   idem_max_key_length)));
	return scope;
}

/* Refuse to write in a read-only transaction, on a standby, or in parallel mode */
void
idem_prevent_write(const char *funcname)
{
	PreventCommandIfReadOnly(funcname);
	PreventCommandIfParallelMode(funcname);
}

/*
 * The role whose keys the call reaches: the current role, or the role named
 * by the owner argument, which the current role must have the privileges
 * of.  Argument 'argno' may be missing (a function of version 0.1), and a
 * table of version 0.1 records no owner at all.
 */
Oid
idem_owner_arg(FunctionCallInfo fcinfo, int argno)
{
	const char *rolename;
	Oid			roleid;

	if (!idem_catalog()->has_owner)
		return InvalidOid;
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return GetUserId();
	rolename = NameStr(*PG_GETARG_NAME(argno));
	roleid = get_role_oid(rolename, false);
	if (!has_privs_of_role(GetUserId(), roleid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to use the idempotency keys of role \"%s\"",
						rolename),
				 errdetail("Only roles that have the privileges of role \"%s\" may use its keys.",
						   rolename)));
	return roleid;
}

/* Fetch and check a fingerprint argument: NULL, or at most IDEM_MAX_FINGERPRINT bytes */
text *
idem_fingerprint_arg(FunctionCallInfo fcinfo, int argno)
{
	return idem_check_fingerprint(PG_ARGISNULL(argno) ? NULL : PG_GETARG_TEXT_PP(argno));
}

/* Check a fingerprint: NULL, or at most IDEM_MAX_FINGERPRINT bytes */
text *
idem_check_fingerprint(text *fingerprint)
{
	if (fingerprint != NULL && VARSIZE_ANY_EXHDR(fingerprint) > IDEM_MAX_FINGERPRINT)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("fingerprint is too long"),
				 errdetail("The fingerprint has %d bytes; the limit is %d.",
						   (int) VARSIZE_ANY_EXHDR(fingerprint), IDEM_MAX_FINGERPRINT),
				 errhint("Pass a hash of the request, such as idem_fingerprint() returns.")));
	return fingerprint;
}

/*
 * Fetch and check the wait_timeout argument, in microseconds: -1 when it is
 * NULL or missing (wait as long as it takes), 0 for no wait at all
 */
int64
idem_wait_timeout_arg(FunctionCallInfo fcinfo, int argno)
{
	Interval   *span;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return -1;
	span = PG_GETARG_INTERVAL_P(argno);
	if (span->time == 0 && span->day == 0 && span->month == 0)
		return 0;
	return idem_interval_usecs(idem_interval_arg(fcinfo, argno, "wait_timeout"));
}

/* Fail: the interval given as argname is not positive */
static void
not_positive(const char *argname, Interval *span)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s must be positive", argname),
			 errdetail("The %s given is %s.", argname,
					   DatumGetCString(DirectFunctionCall1(interval_out,
														   IntervalPGetDatum(span))))));
}

/*
 * Fetch and check an interval argument (ttl, lease): NULL, or positive and
 * at most IDEM_MAX_INTERVAL_YEARS, so that adding it to a timestamp cannot
 * overflow
 */
Interval *
idem_interval_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	Interval   *span;
	Interval	zero = {0, 0, 0};
	Interval	longest = {0, 0, IDEM_MAX_INTERVAL_YEARS * MONTHS_PER_YEAR};

	if (PG_ARGISNULL(argno))
		return NULL;
	span = PG_GETARG_INTERVAL_P(argno);
	if (DatumGetBool(DirectFunctionCall2(interval_le, IntervalPGetDatum(span),
										 IntervalPGetDatum(&zero))))
		not_positive(argname, span);
	if (DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(span),
										 IntervalPGetDatum(&longest))))
		ereport(ERROR,
				(errcode(ERRCODE_INTERVAL_FIELD_OVERFLOW),
				 errmsg("%s is out of range", argname),
				 errdetail("The %s given is %s; the longest is %d years.", argname,
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(span))),
						   IDEM_MAX_INTERVAL_YEARS)));
	return span;
}

/*
 * A timestamp plus an interval that idem_interval_arg() accepted.  An
 * interval that compares as positive may still end before it starts ('1
 * month -30 days 1 second', added in February): that is not positive
 * either.
 */
TimestampTz
idem_timestamp_plus(TimestampTz ts, Interval *span, const char *argname)
{
	TimestampTz result;

	result = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													 TimestampTzGetDatum(ts),
													 IntervalPGetDatum(span)));
	if (result <= ts)
		not_positive(argname, span);
	return result;
}

/*
 * Fail if a payload kept for replay or for the next attempt is over
 * idempotency.max_response_size: a response (a jsonb value, counted whole
 * before compression) or a recovery point (the bytes of its text)
 */
void
idem_check_payload_size(Datum value, bool is_text, const char *what)
{
	Size		size = toast_raw_datum_size(value) - (is_text ? VARHDRSZ : 0);

	if (size > (Size) idem_max_response_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large", what),
				 errdetail("The %s has %zu bytes; idempotency.max_response_size is %d bytes.",
						   what, size, idem_max_response_size),
				 errhint("Store a smaller %s, such as the identifier of the row that holds the result.",
						 what)));
}

/*
 * The length of an interval that idem_interval_arg() accepted, in
 * microseconds, a month counted as 30 days
 */
int64
idem_interval_usecs(const Interval *span)
{
	return span->time + span->day * USECS_PER_DAY +
		(int64) span->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/*
 * Fetch a one-dimensional array argument of elemtype (text or jsonb): false
 * if it is NULL, else its elements and NULL flags in *elems and *nulls, and
 * their number in *n
 */
bool
idem_array_arg(FunctionCallInfo fcinfo, int argno, const char *argname,
			   Oid elemtype, Datum **elems, bool **nulls, int *n)
{
	ArrayType  *array;

	*n = 0;
	if (PG_ARGISNULL(argno))
		return false;
	array = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", argname)));
	deconstruct_array(array, elemtype, -1, false, TYPALIGN_INT, elems, nulls, n);
	return true;
}
