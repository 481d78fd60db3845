/*
 * worker.c
 *		Background expiry of keys (not there yet).
 */
#include "postgres.h"

#include "idempotency.h"

/* Register the background worker (nothing yet) */
void
idem_worker_init(void)
{
}
