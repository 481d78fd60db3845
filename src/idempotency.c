/*
 * idempotency.c
 *		Module entry point: one init call per subsystem.
 */
#include "postgres.h"

#include "fmgr.h"

#include "idempotency.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Set up settings, caches, commit hooks and, when preloaded, shared memory and
 * the worker
 */
void
_PG_init(void)
{
	idem_guc_init();
	idem_catalog_init();
	idem_keylock_init();
	idem_notify_init();
	idem_pending_init();
	idem_stats_init();
	idem_worker_init();
}
