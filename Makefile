# Makefile for the idempotency extension (PGXS)

EXTENSION = idempotency
EXTVERSION = 0.2
MODULE_big = idempotency
OBJS = \
	src/idempotency.o \
	src/guc.o \
	src/catalog.o \
	src/keylock.o \
	src/keys.o \
	src/args.o \
	src/claim.o \
	src/manage.o \
	src/current.o \
	src/offsets.o \
	src/notify.o \
	src/pending.o \
	src/sweep.o \
	src/fingerprint.o \
	src/stats.o \
	src/worker.o \
	src/citus.o
HEADERS =
# every version stays installable, and each update script leads to the next
DATA = sql/$(EXTENSION)--0.1.sql sql/$(EXTENSION)--0.2.sql \
	sql/$(EXTENSION)--0.1--0.2.sql
PGFILEDESC = "idempotency - idempotency keys for PostgreSQL"

# pg_regress: API, outcomes, errors and settings
REGRESS = setup claim complete release lookup_forget many_keys batch body renew current_key offsets errors limits settings fingerprint security ownership catalog replay_nowrite leased sweep stats
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=test/conf/preload.conf --temp-config=test/conf/two_phase.conf --encoding=UTF8

# isolationtester: every concurrency promise
ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --temp-instance=tmp_check_iso --temp-config=test/conf/preload.conf --encoding=UTF8

# TAP: background worker, restarts, crashes
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check_regress tmp_check_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
