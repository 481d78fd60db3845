/*
 * compat.h
 *		What differs between the PostgreSQL majors the extension supports
 *		(15 to 18), in one place: the logic files call these names and never
 *		test PG_VERSION_NUM themselves.
 */
#ifndef IDEM_COMPAT_H
#define IDEM_COMPAT_H

#include "access/genam.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "executor/executor.h"
#include "postmaster/interrupt.h"
#include "utils/relcache.h"

#if PG_VERSION_NUM >= 170000
#include "storage/procnumber.h"
#else
#include "storage/backendid.h"
#endif

/*
 * This backend's slot among MaxBackends: 0-based, or negative for a process
 * that has none.  17 replaced 1-based backend ids by 0-based proc numbers.
 */
#if PG_VERSION_NUM >= 170000
#define IdemMyBackendSlot()		((int) MyProcNumber)
#else
#define IdemMyBackendSlot()		((int) MyBackendId - 1)
#endif

/* Shared transaction-id state: 17 renamed ShmemVariableCache */
#if PG_VERSION_NUM >= 170000
#define IdemTransamVariables	TransamVariables
#else
#define IdemTransamVariables	ShmemVariableCache
#endif

/* A background worker's reload-and-exit handling: renamed in 18 */
#if PG_VERSION_NUM >= 180000
#define IdemProcessMainLoopInterrupts()	ProcessMainLoopInterrupts()
#else
#define IdemProcessMainLoopInterrupts()	HandleMainLoopInterrupts()
#endif

/* The primary key's index; 18 asks whether a deferrable one will do */
#if PG_VERSION_NUM >= 180000
#define IdemPrimaryKeyIndex(rel)	RelationGetPrimaryKeyIndex((rel), false)
#else
#define IdemPrimaryKeyIndex(rel)	RelationGetPrimaryKeyIndex(rel)
#endif

/* An index scan with no instrumentation: 18 added the argument */
#if PG_VERSION_NUM >= 180000
#define idem_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define idem_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/* Insert a row's entries into every index: 16 added onlySummarizing */
#if PG_VERSION_NUM >= 160000
#define idem_insert_index_tuples(rri, slot, estate, only_summarizing) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, \
						  (only_summarizing))
#else
#define idem_insert_index_tuples(rri, slot, estate, only_summarizing) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

/*
 * Which indexes an update must add entries to.  Before 16 the table AM
 * answered a bool (all or none); 16 added "summarizing indexes only".
 */
#if PG_VERSION_NUM >= 160000
typedef TU_UpdateIndexes IdemUpdateIndexes;
#define IdemUpdateNeedsIndexes(u)		((u) != TU_None)
#define IdemUpdateOnlySummarizing(u)	((u) == TU_Summarizing)
#else
typedef bool IdemUpdateIndexes;
#define IdemUpdateNeedsIndexes(u)		(u)
#define IdemUpdateOnlySummarizing(u)	false
#endif

#endif							/* IDEM_COMPAT_H */
