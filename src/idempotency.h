/*
 * idempotency.h
 *		Declarations shared by the idempotency extension's source files.
 */
#ifndef IDEMPOTENCY_H
#define IDEMPOTENCY_H

#include "access/attnum.h"
#include "access/skey.h"
#include "access/tableam.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

/*
 * Settings (guc.c)
 */
extern int	idem_default_ttl;		/* seconds */
extern int	idem_max_key_length;	/* characters */

/*
 * The highest idempotency.max_key_length: a scope and a key of that many
 * characters of the longest encoding, and the owner, fit in one entry of the
 * primary key's btree index (a third of a page, less its overheads), so that
 * every key a claim accepts can be indexed at COMMIT.  325 for 8 kB pages.
 */
#define IDEM_KEY_LENGTH_LIMIT \
	((BLCKSZ / 3 - 128) / (2 * MAX_MULTIBYTE_CHAR_LEN))
extern int	idem_max_response_size; /* bytes */
extern int	idem_sweep_interval;	/* seconds */
extern int	idem_sweep_batch_size;	/* rows */
extern int	idem_sweep_rate_limit;	/* keys per second, 0 for none */
extern int	idem_max_databases;		/* sweeper states kept for idem_stats */

extern void idem_guc_init(void);

/*
 * Columns of idem_keys, by role.  Their attribute numbers are looked up by
 * name once per backend, and their types checked (catalog.c).
 */
typedef enum IdemColumn
{
	IDEM_COL_SCOPE,
	IDEM_COL_KEY,
	IDEM_COL_STATUS,
	IDEM_COL_FINGERPRINT,
	IDEM_COL_RESPONSE,
	IDEM_COL_ATTEMPT,
	IDEM_COL_RECOVERY_POINT,
	IDEM_COL_CREATED_AT,
	IDEM_COL_COMPLETED_AT,
	IDEM_COL_EXPIRES_AT,
	IDEM_COL_LOCKED_UNTIL,
	IDEM_COL_LEASE,
	IDEM_COL_OWNER,				/* from 0.2 on */
	IDEM_COL_BODY,				/* from 0.2 on */
	IDEM_COL_RELEASED_ATTEMPT,	/* from 0.2 on */
	IDEM_NUM_COLUMNS
} IdemColumn;

/* Labels of idem_outcome, in declaration order */
typedef enum IdemOutcome
{
	IDEM_OUTCOME_CLAIMED,
	IDEM_OUTCOME_REPLAY,
	IDEM_OUTCOME_IN_PROGRESS,
	IDEM_OUTCOME_MISMATCH,
	IDEM_NUM_OUTCOMES
} IdemOutcome;

/*
 * What the extension's objects are in this database (catalog.c).  Filled on
 * first use, kept until the keys table is invalidated (DROP EXTENSION, ALTER
 * TABLE, VACUUM, ...).
 */
typedef struct IdemCatalog
{
	Oid			schema;			/* the extension's schema */
	Oid			keys_relid;		/* idem_keys */
	bool		has_owner;		/* 0.2 on (not 0.1): keys belong to roles, and
								 * have a body */
	Oid			pkey_indexid;	/* primary key (scope, key) */
	Oid			expires_indexid;	/* index on expires_at */
	Oid			status_in_progress; /* enum label OIDs of idem_status */
	Oid			status_completed;
	Oid			outcome[IDEM_NUM_OUTCOMES]; /* enum label OIDs of idem_outcome */
	AttrNumber	attnum[IDEM_NUM_COLUMNS];
	int			natts;			/* attributes of idem_keys, dropped included */
	TupleDesc	claim_result;	/* row type of idem_claim(), idem_claim_result */
	Oid			claim_result_relid; /* its pg_class entry */
} IdemCatalog;

extern void idem_catalog_init(void);
extern const IdemCatalog *idem_catalog(void);
extern const IdemCatalog *idem_catalog_if_installed(void);
extern Oid	idem_catalog_lock_keys(LOCKMODE lockmode, bool nowait);

/*
 * Which key: the role it belongs to, its scope and the key itself.  Owner
 * InvalidOid is a key that records no role (claimed under version 0.1),
 * which every role reaches.
 */
typedef struct IdemKeyName
{
	Oid			owner;
	text	   *scope;
	text	   *key;
} IdemKeyName;

/*
 * A key's row, as read from idem_keys (keys.c).  values and isnull are
 * indexed by IdemColumn; the row's other attributes are carried in
 * all_values/all_isnull so that an update keeps them.
 */
typedef struct IdemRow
{
	ItemPointerData tid;
	bool		own;			/* this version was written by our transaction */
	Datum		values[IDEM_NUM_COLUMNS];
	bool		isnull[IDEM_NUM_COLUMNS];
	Datum	   *all_values;
	bool	   *all_isnull;
} IdemRow;

/* A look-up of one key that can be repeated (keys.c) */
typedef struct IdemLookup
{
	Relation	rel;
	Relation	index;
	struct IndexScanDescData *scan;
	TupleTableSlot *slot;
	Oid			owner;
	ScanKeyData skey[2];
} IdemLookup;

extern Relation idem_keys_open(LOCKMODE lockmode, const text *scope);
extern void idem_keys_lookup_begin(IdemLookup *lookup, Relation rel,
								   const IdemKeyName *name, Snapshot snapshot);
extern bool idem_keys_lookup(IdemLookup *lookup, IdemRow *row);
extern void idem_keys_lookup_end(IdemLookup *lookup);
extern bool idem_keys_fetch(Relation rel, const IdemKeyName *name,
							Snapshot snapshot, IdemRow *row);
extern void idem_keys_fetch_many(Relation rel, text *scope, Oid owner,
								 text **keys, int n, Snapshot snapshot,
								 IdemRow *rows, bool *found);
extern bool idem_keys_fetch_tid(Relation rel, ItemPointer tid,
								const IdemKeyName *name, IdemRow *row);
extern void idem_keys_insert(Relation rel, IdemRow *row);

/* Inserts of many rows through one executor state (keys.c) */
typedef struct IdemWriter
{
	Relation	rel;
	struct EState *estate;
	struct ResultRelInfo *rri;
	TupleTableSlot *slot;
} IdemWriter;

extern IdemWriter *idem_writer_begin(Relation rel);
extern void idem_writer_insert(IdemWriter *writer, IdemRow *row);
extern void idem_writer_end(IdemWriter *writer);
extern TM_Result idem_keys_update(Relation rel, IdemRow *row);
extern TM_Result idem_keys_delete(Relation rel, ItemPointer tid, bool wait);
extern bool idem_text_equal(const text *a, const text *b);
extern void idem_row_init(IdemRow *row, const IdemKeyName *name);
extern Oid	idem_row_owner(const IdemRow *row);
extern void idem_row_set(IdemRow *row, IdemColumn col, Datum value, bool isnull);
extern bool idem_row_completed(const IdemRow *row);
extern bool idem_row_live(const IdemRow *row, TimestampTz now);

/*
 * The extension's advisory lock spaces: the last field of the lock tag,
 * shown as pg_locks.objsubid, which pg_advisory_lock() sets to 1 or 2 and
 * never to these.  Key locks are "ID", the launcher's lock "IE".
 */
#define IDEM_KEY_LOCK_SPACE			0x4944
#define IDEM_LAUNCHER_LOCK_SPACE	0x4945

/*
 * Per-key locks in the extension's own advisory lock space (keylock.c)
 */
typedef struct IdemKeyLock
{
	LOCKTAG		tag;
	uint64		hash;			/* idem_key_hash() of the key */
	uint32		slot;			/* slot of commit counts */
	bool		watched;		/* commits is known, and may skip a read */
	uint32		commits;		/* the slot's count when watched */
	bool		ends_known;		/* ends is known (shared memory) */
	uint32		ends;			/* the slot's count, for notify.c */
} IdemKeyLock;

extern void idem_keylock_init(void);
extern uint64 idem_key_hash(const IdemKeyName *name);
extern void idem_key_prepare(IdemKeyLock *kl, const IdemKeyName *name);
extern void idem_key_watch(IdemKeyLock *kl);
extern bool idem_key_lock(IdemKeyLock *kl, bool wait);
extern bool idem_key_lock_until(IdemKeyLock *kl, TimestampTz deadline);
extern bool idem_key_unchanged(const IdemKeyLock *kl);
extern bool idem_key_ends_known(const IdemKeyLock *kl);
extern bool idem_key_ended(const IdemKeyLock *kl);
extern void idem_key_rewatch(IdemKeyLock *kl);

/*
 * Notification of the end of a watched key (notify.c)
 */
#define IDEM_NOTIFY_CHANNEL		"idempotency"

extern void idem_notify_init(void);
extern void idem_notify_check(void);
extern bool idem_notify_watch(const IdemKeyLock *kl);
extern void idem_notify_ended(const uint64 *hashes, int n);
extern void idem_key_unlock(const IdemKeyLock *kl);

/*
 * Arguments shared by the SQL functions (args.c)
 */

/* Longest fingerprint, in bytes: a hash fits many times over */
#define IDEM_MAX_FINGERPRINT		1024

/* Longest ttl or lease, in years: now + it never overflows a timestamp */
#define IDEM_MAX_INTERVAL_YEARS		100

extern text *idem_key_arg(FunctionCallInfo fcinfo, int argno);
extern text *idem_check_key(text *key);
extern text *idem_check_fingerprint(text *fingerprint);
extern int64 idem_wait_timeout_arg(FunctionCallInfo fcinfo, int argno);
extern bool idem_array_arg(FunctionCallInfo fcinfo, int argno, const char *argname,
						   Oid elemtype, Datum **elems, bool **nulls, int *n);
extern text *idem_scope_arg(FunctionCallInfo fcinfo, int argno);
extern Oid	idem_owner_arg(FunctionCallInfo fcinfo, int argno);
extern text *idem_fingerprint_arg(FunctionCallInfo fcinfo, int argno);
extern Interval *idem_interval_arg(FunctionCallInfo fcinfo, int argno,
								   const char *argname);
extern int64 idem_interval_usecs(const Interval *span);
extern TimestampTz idem_timestamp_plus(TimestampTz ts, Interval *span,
									   const char *argname);
extern void idem_check_payload_size(Datum value, bool is_text,
									const char *what);
extern void idem_prevent_write(const char *funcname);
extern char *idem_key_cstring(text *key);

/*
 * Transactional claims that are completed at commit (pending.c)
 */
extern void idem_pending_init(void);
extern void idem_pending_add(const IdemKeyName *name, ItemPointer tid);
extern void idem_pending_completed(const IdemKeyName *name, ItemPointer tid);
extern bool idem_pending_fetch(Relation rel, const IdemKeyName *name,
							   IdemRow *row);
extern void idem_deferred_claim(const IdemKeyName *name, text *fingerprint,
								TimestampTz created_at, TimestampTz expires_at);
extern bool idem_deferred_row(const IdemKeyName *name, IdemRow *row);
extern void idem_deferred_complete(const IdemKeyName *name, Jsonb *response,
								   bytea *body, TimestampTz now);
extern void idem_pending_released(const IdemKeyName *name);
extern List *idem_pending_claimed(void);
extern void idem_deferred_drop(const IdemKeyName *name);

/*
 * Expiry (sweep.c)
 */
extern int64 idem_sweep_keys(int64 max_rows, bool nowait);

/*
 * Counters in shared memory (stats.c).  Counting is a no-op when the library
 * was not preloaded.
 */
typedef enum IdemCounter
{
	IDEM_COUNT_CLAIMS,			/* claims answered "claimed", takeovers included */
	IDEM_COUNT_REPLAYS,
	IDEM_COUNT_IN_PROGRESS,
	IDEM_COUNT_MISMATCHES,
	IDEM_COUNT_TAKEOVERS,
	IDEM_COUNT_COMPLETIONS,		/* explicit and at commit */
	IDEM_COUNT_RELEASES,
	IDEM_COUNT_SWEPT,			/* keys deleted by any sweep */
	IDEM_NUM_COUNTERS
} IdemCounter;

extern void idem_stats_init(void);
extern void idem_count(IdemCounter counter, int64 n);

/* The sweeper's last run per database, for idem_stats (stats.c) */
extern void idem_sweeper_report(int64 keys, const char *error);
extern void idem_sweeper_forget(Oid dboid);
extern void idem_sweeper_prune(const Oid *dboids, int n);

/*
 * Background worker (worker.c)
 */
extern void idem_worker_init(void);

#endif							/* IDEMPOTENCY_H */
