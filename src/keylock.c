/*
 * keylock.c
 *		Per-key locks in the extension's own advisory lock space.
 *
 * A key's lock is an advisory lock whose tag holds the database, a 64-bit
 * hash of (scope, key) and, in the field that pg_advisory_lock(bigint) sets
 * to 1 and pg_advisory_lock(int, int) sets to 2, the extension's own number.
 * An application's advisory locks therefore never collide with these.  Locks
 * are transaction-scoped: a rollback, a crash or the end of a pooled
 * transaction releases them.  Two keys share a lock only if their hashes are
 * equal (one chance in 2^64 per pair); they then wait on each other but stay
 * correct.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "idempotency.h"

/* locktag_field4 of the extension's advisory locks, shown as pg_locks.objsubid */
#define IDEM_LOCK_SPACE		0x4944

/* Build the lock tag of (scope, key) */
static void
key_locktag(LOCKTAG *tag, text *scope, text *key)
{
	uint64		h;

	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(scope),
							VARSIZE_ANY_EXHDR(scope), 0);
	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(key),
							VARSIZE_ANY_EXHDR(key), h);
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 IDEM_LOCK_SPACE);
}

/* Lock a key until the end of the transaction; false if busy and !wait */
bool
idem_lock_key(text *scope, text *key, bool wait)
{
	LOCKTAG		tag;

	key_locktag(&tag, scope, key);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/* Give back one acquisition of a key's lock, for paths that wrote nothing */
void
idem_unlock_key(text *scope, text *key)
{
	LOCKTAG		tag;

	key_locktag(&tag, scope, key);
	LockRelease(&tag, ExclusiveLock, false);
}
