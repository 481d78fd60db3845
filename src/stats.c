/*
 * stats.c
 *		Counters for idem_stats (not kept yet).
 */
#include "postgres.h"

#include "idempotency.h"

/* Set up shared memory for the counters (nothing yet) */
void
idem_stats_init(void)
{
}

/* Add n to a counter (not kept yet) */
void
idem_count(IdemCounter counter, int64 n)
{
}
