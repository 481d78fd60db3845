/*
 * keylock.c
 *		Per-key locks in the extension's own advisory lock space, and a count
 *		of the commits of their holders.
 *
 * A key's lock is an advisory lock whose tag holds the database, a 64-bit
 * hash of (owner, scope, key) and, in the field that pg_advisory_lock(bigint) sets
 * to 1 and pg_advisory_lock(int, int) sets to 2, the extension's own number.
 * An application's advisory locks therefore never collide with these.  Locks
 * are transaction-scoped: a rollback, a crash or the end of a pooled
 * transaction releases them.  Two keys share a lock only if their hashes are
 * equal (one chance in 2^64 per pair); they then wait on each other but stay
 * correct.
 *
 * Every row of a key is written by a transaction that holds the key's lock
 * until it ends.  A claim that read a key without its lock, found no row and
 * then took the lock would have to read the key again, in case a holder of
 * the lock committed a row in between.  With the library preloaded, shared
 * memory counts, in KEY_SLOTS slots chosen by the key's hash, the commits of
 * transactions that held a lock of the slot.  A transaction adds to its slots
 * after it became visible to others and before it releases its locks (the
 * commit callback runs between the two).  A claim notes its slot before its
 * first read (idem_key_watch()); if the count is the same once it holds the
 * lock (idem_key_unchanged()), nobody who could have written the key committed
 * since, and a first read that found no row still stands.  A count that moved
 * for another key of the slot only costs the second read.
 *
 * Rollbacks are counted too, for notify.c, which needs every end of a
 * holder; a claim that waited on one only reads the key once more.
 *
 * A prepared transaction is committed later, by COMMIT PREPARED in any
 * session, which runs no callback of ours.  When prepared transactions are
 * enabled (max_prepared_transactions > 0), a claim therefore always reads
 * again; so it does without shared memory.
 */
#include "postgres.h"

#include "access/twophase.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "port/pg_bitutils.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "idempotency.h"

/* Slots of commit counts; a power of two */
#define KEY_SLOTS			4096

/* Commits of lock holders, per slot, in shared memory; NULL without it */
static pg_atomic_uint32 *slot_commits = NULL;

/* Slots of the locks this transaction took, to count at its end */
static uint64 locked_slots[KEY_SLOTS / 64];
static bool any_locked = false;

/* Hashes of the keys this transaction locked, for notify.c; TopMemoryContext */
static uint64 *locked_hashes = NULL;
static int	nlocked_hashes = 0;
static int	locked_hashes_size = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * 64-bit hash of (owner, scope, key), the key's identity in locks and hash
 * tables.  Keys of two roles have two locks: neither role waits for, or
 * learns of, the other's claims.
 */
uint64
idem_key_hash(const IdemKeyName *name)
{
	uint64		h;

	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(name->scope),
							VARSIZE_ANY_EXHDR(name->scope), (uint64) name->owner);
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(name->key),
							   VARSIZE_ANY_EXHDR(name->key), h);
}

/* Hash a key, build its lock tag and pick its slot */
void
idem_key_prepare(IdemKeyLock *kl, const IdemKeyName *name)
{
	uint64		h = idem_key_hash(name);

	SET_LOCKTAG_ADVISORY(kl->tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 IDEM_KEY_LOCK_SPACE);
	kl->hash = h;
	kl->slot = (uint32) h & (KEY_SLOTS - 1);
	kl->watched = false;
	kl->ends_known = false;
}

/* Note a prepared lock's slot count, before the key is read */
void
idem_key_watch(IdemKeyLock *kl)
{
	kl->watched = (slot_commits != NULL && max_prepared_xacts == 0);
	kl->ends_known = (slot_commits != NULL);
	if (kl->ends_known)
	{
		kl->commits = pg_atomic_read_u32(&slot_commits[kl->slot]);
		kl->ends = kl->commits;
		/* the reads of the key that follow must not come before this one */
		pg_read_barrier();
	}
}

/* Is the slot's count of ends known since idem_key_watch()? */
bool
idem_key_ends_known(const IdemKeyLock *kl)
{
	return kl->ends_known;
}

/*
 * Has a holder of a lock of the key's slot ended (committed or rolled back)
 * since idem_key_watch() or the last idem_key_rewatch()?  Only with shared
 * memory (idem_key_ends_known()).
 */
bool
idem_key_ended(const IdemKeyLock *kl)
{
	pg_read_barrier();
	return pg_atomic_read_u32(&slot_commits[kl->slot]) != kl->ends;
}

/*
 * Note the slot's count again before reading the key again, for
 * idem_key_ended(); the first read can no longer stand for a second one
 * (idem_key_unchanged() is false from now on)
 */
void
idem_key_rewatch(IdemKeyLock *kl)
{
	kl->watched = false;
	if (kl->ends_known)
	{
		kl->ends = pg_atomic_read_u32(&slot_commits[kl->slot]);
		pg_read_barrier();
	}
}

/* Lock a key until the end of the transaction; false if busy and !wait */
bool
idem_key_lock(IdemKeyLock *kl, bool wait)
{
	LockAcquireResult res;

	res = LockAcquire(&kl->tag, ExclusiveLock, false, !wait);
	if (res == LOCKACQUIRE_NOT_AVAIL)
		return false;
	locked_slots[kl->slot / 64] |= UINT64CONST(1) << (kl->slot % 64);
	any_locked = true;
	if (res == LOCKACQUIRE_OK)
	{
		/* a first acquisition: remember the key, for notifications */
		if (nlocked_hashes == locked_hashes_size)
		{
			locked_hashes_size = locked_hashes_size == 0 ? 64 : locked_hashes_size * 2;
			locked_hashes = locked_hashes == NULL ?
				MemoryContextAlloc(TopMemoryContext, sizeof(uint64) * locked_hashes_size) :
				repalloc(locked_hashes, sizeof(uint64) * locked_hashes_size);
		}
		locked_hashes[nlocked_hashes++] = kl->hash;
	}
	return true;
}

/* Longest pause between two tries of a bounded wait, in milliseconds */
#define BOUNDED_WAIT_MAX_PAUSE_MS	10

/*
 * Lock a key until the end of the transaction, waiting for its holder at
 * most until 'deadline'; false if it is still busy then.
 *
 * The lock manager can wait with a timeout only through lock_timeout, whose
 * end is an error; that would leave the caller's transaction aborted.  So a
 * bounded wait tries the lock without waiting, and sleeps on the latch
 * between tries, 1 ms at first and at most BOUNDED_WAIT_MAX_PAUSE_MS: the
 * caller learns at most that late that the holder has finished.  Such a
 * waiter is not queued behind the holder, and takes no part in deadlock
 * detection: it never waits past its deadline anyway.
 */
bool
idem_key_lock_until(IdemKeyLock *kl, TimestampTz deadline)
{
	long		pause_ms = 1;

	for (;;)
	{
		TimestampTz now;
		long		left_ms;

		if (idem_key_lock(kl, false))
			return true;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			return false;
		left_ms = TimestampDifferenceMilliseconds(now, deadline);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(Min(pause_ms, left_ms), 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		pause_ms = Min(pause_ms * 2, BOUNDED_WAIT_MAX_PAUSE_MS);
	}
}

/*
 * Has no holder of the key's lock committed since idem_key_watch()?  Call it
 * holding the lock.  False when that cannot be known.
 */
bool
idem_key_unchanged(const IdemKeyLock *kl)
{
	if (!kl->watched)
		return false;
	/* read the count only after the lock was granted */
	pg_read_barrier();
	return pg_atomic_read_u32(&slot_commits[kl->slot]) == kl->commits;
}

/* Give back one acquisition of a key's lock, for paths that wrote nothing */
void
idem_key_unlock(const IdemKeyLock *kl)
{
	LockRelease(&kl->tag, ExclusiveLock, false);
}

/* Count this transaction's end in the slots of the locks it took */
static void
count_end(void)
{
	int			w;

	for (w = 0; w < KEY_SLOTS / 64; w++)
	{
		uint64		bits = locked_slots[w];

		while (bits != 0)
		{
			int			b = pg_rightmost_one_pos64(bits);

			pg_atomic_fetch_add_u32(&slot_commits[w * 64 + b], 1);
			bits &= bits - 1;
		}
	}
}

/*
 * Transaction callback: count a commit or a rollback before the locks are
 * released, then announce the ends of watched keys (notify.c).  A rollback
 * is counted too, for notify.c; a claim that waited on it only reads the key
 * once more.
 */
static void
keylock_xact_callback(XactEvent event, void *arg)
{
	if (!any_locked)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
			if (slot_commits != NULL)
			{
				count_end();
				idem_notify_ended(locked_hashes, nlocked_hashes);
			}
			/* FALLTHROUGH */
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			memset(locked_slots, 0, sizeof(locked_slots));
			any_locked = false;
			nlocked_hashes = 0;
			break;
		default:
			break;
	}
}

/* Ask for the slots' shared memory */
static void
keylock_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(mul_size(sizeof(pg_atomic_uint32), KEY_SLOTS));
}

/* Create or attach to the slots, at start-up and after a crash */
static void
keylock_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	slot_commits = ShmemInitStruct("idempotency key commits",
								   mul_size(sizeof(pg_atomic_uint32), KEY_SLOTS),
								   &found);
	if (!found)
	{
		for (i = 0; i < KEY_SLOTS; i++)
			pg_atomic_init_u32(&slot_commits[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Register the commit callback, and the shared memory hooks when preloaded */
void
idem_keylock_init(void)
{
	RegisterXactCallback(keylock_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = keylock_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = keylock_shmem_startup;
}
