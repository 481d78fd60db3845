/*
 * citus.h
 *		Keys in a Citus distributed idem_keys: which shard relation holds a
 *		key's row on this node, and which shards this node holds (citus.c).
 */
#ifndef IDEM_CITUS_H
#define IDEM_CITUS_H

#include "nodes/pg_list.h"
#include "storage/lockdefs.h"
#include "utils/relcache.h"

struct IdemWriter;

extern Relation idem_citus_route(Relation rel, const text *scope,
								 LOCKMODE lockmode);
extern Oid	idem_citus_keys_relid(const text *scope);
extern Oid	idem_citus_pkey_index(Relation rel);
extern bool idem_citus_commit_rel(Relation *rel, struct IdemWriter **writer,
								  Oid relid, const text *scope);
extern List *idem_citus_local_shards(bool *distributed);
extern Relation idem_citus_open_shard(Oid relid, LOCKMODE lockmode,
									  bool nowait, Oid *expires_index);

#endif							/* IDEM_CITUS_H */
