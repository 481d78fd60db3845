/*
 * args.c
 *		Checks of the arguments that the SQL functions share: key and scope.
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"

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
	text	   *key;
	int			len;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("idempotency key must not be null")));
	key = PG_GETARG_TEXT_PP(argno);
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
