/*
 * current.c
 *		What the current transaction claimed: idem_current_key() and
 *		idem_current_keys().
 *
 * These let a business row name the request that created it: as a column
 * DEFAULT or in a trigger, the key of the claim made in the same transaction
 * is stamped on the row, so that "what did request K create?" is a query.
 * They list the transactional claims (made without a lease) that this
 * transaction holds: not those it released, forgot or rolled back to a
 * savepoint before.  A leased claim commits on its own and is not listed.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "idempotency.h"

PG_FUNCTION_INFO_V1(idem_current_key);
PG_FUNCTION_INFO_V1(idem_current_keys);

/*
 * idem_current_key(): the key of the latest claim this transaction holds,
 * or NULL when it holds none
 */
Datum
idem_current_key(PG_FUNCTION_ARGS)
{
	List	   *claimed = idem_pending_claimed();
	IdemKeyName *name;

	if (claimed == NIL)
		PG_RETURN_NULL();
	name = (IdemKeyName *) llast(claimed);
	PG_RETURN_TEXT_P(name->key);
}

/*
 * idem_current_keys(): (scope, key) of every claim this transaction holds,
 * oldest first
 */
Datum
idem_current_keys(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	foreach(lc, idem_pending_claimed())
	{
		IdemKeyName *name = (IdemKeyName *) lfirst(lc);
		Datum		values[2];
		bool		isnull[2] = {false, false};

		values[0] = PointerGetDatum(name->scope);
		values[1] = PointerGetDatum(name->key);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	return (Datum) 0;
}
