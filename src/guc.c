/*
 * guc.c
 *		The idempotency.* settings.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "idempotency.h"

int			idem_default_ttl = 24 * 60 * 60;
int			idem_max_key_length = 255;
int			idem_max_response_size = 1024 * 1024;
int			idem_sweep_interval = 60;
int			idem_sweep_batch_size = 1000;
int			idem_sweep_rate_limit = 100000;
int			idem_max_databases = 1000;

/* Register every setting; called once from _PG_init */
void
idem_guc_init(void)
{
	DefineCustomIntVariable("idempotency.default_ttl",
							"How long a key is kept when idem_claim() is given no ttl.",
							NULL,
							&idem_default_ttl,
							24 * 60 * 60,
							1,
							INT_MAX,
							PGC_USERSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.max_key_length",
							"Longest idempotency key or scope accepted, in characters.",
							"At most as long as fits in an entry of the primary key's index.",
							&idem_max_key_length,
							255,
							1,
							IDEM_KEY_LENGTH_LIMIT,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.max_response_size",
							"Largest response idem_complete() stores.",
							"The size is that of the jsonb value before compression.",
							&idem_max_response_size,
							1024 * 1024,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.sweep_interval",
							"Time between two sweeps of expired keys by the background worker.",
							NULL,
							&idem_sweep_interval,
							60,
							1,
							INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.sweep_batch_size",
							"Expired keys the background worker deletes in one transaction.",
							NULL,
							&idem_sweep_batch_size,
							1000,
							1,
							INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idempotency.sweep_rate_limit",
							"Most expired keys per second the background worker deletes in a database.",
							"The worker waits between batches to stay under it.  0 means no limit.",
							&idem_sweep_rate_limit,
							100000,
							0,
							INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/* sizes shared memory: exists only when preloaded, fixed at start-up */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("idempotency.max_databases",
								"Databases whose sweeper state idem_stats can show.",
								"Kept in shared memory; the worker sweeps every database whatever this is.",
								&idem_max_databases,
								1000,
								1,
								100000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);

	MarkGUCPrefixReserved("idempotency");
}
