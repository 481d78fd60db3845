#!/usr/bin/env python3
"""
idem_fuzz.py - a fuzzer of the idempotency extension's SQL API.

The promise it guards: nothing a role can call may crash the server or fail
an assertion; bad input gets an ERROR, never a crash.

Several sessions, each connected as a different role (a superuser, a role
without privileges, a member of a group role, an operator role), call every
function of the extension with random and hostile arguments: NULL in every
position, empty and huge text (up to several MB), quotes, backslashes, odd
Unicode, extreme intervals and attempts, huge and deeply nested jsonb, odd
owner roles.  They do so in autocommit mode and in transactions of every
isolation level, with savepoints rolled back at random, prepared
transactions, PL/pgSQL exception blocks, cursors and statement timeouts, on
a small pool of keys that they share.  Meanwhile another session runs DDL
against the extension's table and the extension itself (TRUNCATE, VACUUM
FULL, CLUSTER, ALTER TABLE, CREATE INDEX, REINDEX, DROP and CREATE
EXTENSION, and, unless --no-hostile-ddl, changes that break the table's
expected shape, repaired by recreating the extension) and cancels or
terminates a worker's backend now and then.

Errors are expected; every SQLSTATE seen is counted and reported.  What
fails the run (exit status 1):
  - a session losing its connection other than by our own termination
    ("server closed the connection unexpectedly", 57P02 crash of another
    server process),
  - in the server log (--server-log): "TRAP:" (a failed assertion),
    "PANIC", a server process terminated by a signal, a crash restart,
  - a statement that runs far beyond its statement_timeout (a hang),
  - at the end: SELECT count(*) FROM idem_keys or REINDEX TABLE idem_keys
    failing.
An internal error (SQLSTATE XX000) is reported as a finding with its SQL,
but does not fail the run unless --fail-on-internal.

The run is driven by --seed (printed at start and end): each session draws
its operations from its own generator seeded from it, so that a failure can
be replayed with the same seed (exactly with --workers 1 and --no-ddl; with
several sessions the interleaving differs from run to run).

Usage (a server with the extension installed, trust authentication):

  python3 test/fuzz/idem_fuzz.py --host /tmp/sock --port 5432 \\
      --dbname fuzz --superuser postgres --setup --seconds 60 --seed 42 \\
      --server-log /path/to/server.log

  --setup         create the database's roles, the extension and some keys
  --setup-only    only that (for sqlsmith), then exit
  --seconds N     run for N seconds (or --ops N operations per session)
  --workers N     concurrent sessions calling the API (default 4)
  --no-ddl        no concurrent DDL session
  --trace FILE    write every statement (huge values abbreviated) to FILE

Needs Python 3 and psycopg 3 (Debian: python3-psycopg).
"""

import argparse
import collections
import os
import random
import re
import sys
import threading
import time
import traceback

import psycopg
from psycopg import sql

ROLES = {
    "super": None,              # the superuser given by --superuser
    "app": "fuzz_app",          # no privilege beyond PUBLIC's
    "member": "fuzz_member",    # member of fuzz_group
    "group": "fuzz_group",      # a group role (NOLOGIN)
    "admin": "fuzz_admin",      # may forget, sweep, read idem_stats
    "nopriv": "fuzz_nopriv",    # EXECUTE on nothing of the extension
}

SHARED_KEYS = ["k1", "k2", "k3", "k4", "pay-1", "pay-2", "ks\u00e9", "\u2603"]
SHARED_SCOPES = ["", "", "", "s1", "tenant/42", "r\u00e9\u00e9l"]

# Messages of a lost connection that we did not cause
CRASH_PATTERNS = [
    "server closed the connection unexpectedly",
    "terminating connection because of crash of another server process",
    "could not receive data from server",
    "connection to server was lost",
    "no connection to the server",
]

# SQLSTATEs whose examples are printed: the promises say they never happen
# (a unique violation from a claim, an internal error), outside hostile DDL
NOTABLE = {"XX000", "23505", "40001", "XX001", "XX002"}

LOG_PATTERNS = [
    re.compile(r"TRAP:"),
    re.compile(r"PANIC:"),
    re.compile(r"was terminated by signal"),
    re.compile(r"terminating any other active server processes"),
    re.compile(r"server process \(PID \d+\) exited with exit code [^01]"),
    re.compile(r"all server processes terminated; reinitializing"),
    re.compile(r"received (smart|fast|immediate) shutdown request"),
]


def abbrev(v, limit=120):
    """A short, replayable description of a value for traces."""
    if isinstance(v, str) and len(v) > limit:
        return "<text of %d chars: %r...%r>" % (len(v), v[:30], v[-10:])
    r = repr(v)
    if len(r) > limit:
        return r[:limit] + "..."
    return r


class Shared:
    """State shared by the sessions of one run."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.sqlstates = collections.Counter()
        self.examples = {}
        self.ok = collections.Counter()
        self.ops = 0
        self.internal = []          # (sql, params, message, altered)
        self.notable = collections.defaultdict(list)   # state -> examples
        self.altered = None         # the hostile DDL in effect, if any
        self.failures = []          # crash, hang, ...
        self.prepared = []          # gids of prepared transactions
        self.terminated = set()     # backend pids we terminated on purpose
        self.worker_pids = {}       # worker name -> backend pid
        self.worker_state = {}      # name -> (start time, sql, params)
        self.history = {}           # name -> deque of recent statements
        self.stop = threading.Event()
        self.trace = open(args.trace, "w", encoding="utf-8") if args.trace else None
        self.max_prepared = 0

    def count(self, state, sqltext, params, msg):
        with self.lock:
            self.sqlstates[state] += 1
            if state not in self.examples:
                self.examples[state] = (msg.splitlines()[0] if msg else "", sqltext)
            if state == "XX000":
                if len(self.internal) < 200:
                    self.internal.append((sqltext, [abbrev(p) for p in (params or [])], msg,
                                          self.altered))
            if state in NOTABLE and len(self.notable[state]) < 50:
                self.notable[state].append((sqltext, [abbrev(p) for p in (params or [])], msg,
                                            self.altered))

    def fail(self, what):
        with self.lock:
            self.failures.append(what)
        print("FAILURE: " + what, file=sys.stderr, flush=True)

    def log_trace(self, who, sqltext, params):
        if self.trace:
            with self.lock:
                self.trace.write("%s\t%s\t%s\n" % (who, " ".join(sqltext.split()),
                                                   [abbrev(p) for p in (params or [])]))


def connect(args, user, appname):
    conn = psycopg.connect(host=args.host, port=args.port, dbname=args.dbname,
                           user=user, autocommit=True, application_name=appname,
                           connect_timeout=20)
    conn.add_notice_handler(lambda d: None)
    # results as text: Python cannot hold every value PostgreSQL can
    # ('-infinity', year 294276, ...), and the fuzzer only counts them
    for t in ("timestamptz", "timestamp", "date", "interval", "numeric", "jsonb", "json"):
        conn.adapters.register_loader(t, psycopg.types.string.TextLoader)
    return conn


def is_crash_message(msg):
    return any(p in msg for p in CRASH_PATTERNS)


class Api:
    """The extension's functions as installed now: schema and argument names."""

    def __init__(self, conn):
        self.schema = None
        self.args = {}
        self.refresh(conn)

    def refresh(self, conn):
        rows = conn.execute("""
            SELECT n.nspname, p.proname, coalesce(p.proargnames, '{}')
              FROM pg_catalog.pg_extension e
              JOIN pg_catalog.pg_depend d ON d.refobjid = e.oid
               AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
               AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
              JOIN pg_catalog.pg_proc p ON p.oid = d.objid
              JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE e.extname = 'idempotency'""").fetchall()
        self.args = {}
        for nsp, name, argnames in rows:
            self.schema = nsp
            self.args[name] = list(argnames)
        if not rows:
            self.schema = None

    def has(self, func, arg):
        return arg in self.args.get(func, [])

    def qname(self, func):
        if self.schema is None:
            return sql.SQL("public.{}").format(sql.Identifier(func))
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(func))


# ---------------------------------------------------------------- values

ODD_TEXT = [
    "'; DROP TABLE idem_keys; --",
    "\\", "\\\\", "\\x00", "\\u0000", "\\0", "E'\\n'", "%s", "%(x)s", "$1", "$$", "{}",
    "\"", "''", "\t\n\r", " ", "\u00a0", "\u200b", "\u202e\u202d", "\ufeff", "\ufffd",
    "\U0001F600\U0001F4A9", "e\u0301\u0301\u0301", "\U0010FFFF", "\u0130\u0131", "\u00df",
    "null", "NULL", "true", "0", "-1", "*", "%", "_", "public", "pg_catalog.", "a\x01b\x7f",
    "\u4e2d\u6587", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "k1 ", " k1", "K1",
]

INTERVALS = [
    "-infinity", "infinity", "178000000 years", "-178000000 years", "-1 second", "0",
    "1 microsecond", "-1 microsecond", "1 millisecond", "10 milliseconds", "50 milliseconds",
    "1 second", "30 seconds", "1 hour", "1 day", "1 mon -30 days", "-1 mon 31 days",
    "2147483647 days", "-2147483648 days", "2147483647 mons", "1 mon", "100 years",
    "00:00:00.000001", "9223372036854775807 microseconds", "@ 1 year ago", "P1Y2M3DT4H5M6S",
    "2562047788 hours", "1.5 seconds", "not an interval",
]

ATTEMPTS = [0, -1, 1, 1, 2, 3, 2147483647, -2147483648, 100]


class Gen:
    """Random values, from one session's generator."""

    def __init__(self, rng, huge_max):
        self.r = rng
        self.huge_max = huge_max

    def chance(self, p):
        return self.r.random() < p

    def big_text(self):
        n = self.r.choice([256, 257, 1000, 8192, 70000, 300000,
                           self.r.randint(1, self.huge_max)])
        unit = self.r.choice(["x", "\u00e9", "\U0001F600", "ab'\\", "\u4e2d"])
        return (unit * (n // len(unit) + 1))[:n]

    def text(self, shared=None):
        c = self.r.random()
        if shared and c < 0.55:
            return self.r.choice(shared)
        if c < 0.62:
            return None
        if c < 0.68:
            return ""
        if c < 0.85:
            s = self.r.choice(ODD_TEXT)
            if self.chance(0.3):
                s = s + self.r.choice(ODD_TEXT)
            return s
        if c < 0.93:
            return "r%d" % self.r.randint(0, 1000)
        if self.chance(0.15):
            return self.big_text()
        return "x" * self.r.choice([255, 256, 64, 1])

    def key(self):
        return self.text(SHARED_KEYS)

    def scope(self):
        return self.text(SHARED_SCOPES)

    def interval(self):
        if self.chance(0.25):
            return None
        return self.r.choice(INTERVALS)

    def lease(self):
        if self.chance(0.45):
            return None
        if self.chance(0.5):
            return self.r.choice(["1 millisecond", "20 milliseconds", "1 second", "30 seconds"])
        return self.r.choice(INTERVALS)

    def ttl(self):
        if self.chance(0.5):
            return None
        if self.chance(0.4):
            return self.r.choice(["1 millisecond", "50 milliseconds", "1 hour"])
        return self.r.choice(INTERVALS)

    def attempt(self):
        if self.chance(0.4):
            return None
        return self.r.choice(ATTEMPTS)

    def boolean(self):
        return self.r.choice([None, True, True, False, False])

    def json_text(self):
        r = self.r
        c = r.random()
        if c < 0.15:
            return None
        if c < 0.4:
            return r.choice(['null', '{}', '[]', '"s"', '0', '-0', '1e1000', '-1e-1000', 'true',
                             '{"status": 201, "body": {"id": 981}}', '{"a": 1, "a": 2}',
                             '"\\u00e9\\ud83d\\ude00"', '"\\u0000"', '{"": ""}', '[null]',
                             '1.0', '1', '{"b": 1, "a": [1.0, 2.00]}', '"' + "'" * 10 + '"',
                             '{"\\\\": "\\""}', 'not json', '{', '123456789012345678901234567890'])
        if c < 0.55:
            depth = r.choice([10, 100, 1000, 5000, 20000])
            if r.random() < 0.5:
                return "[" * depth + "]" * depth
            return '{"a":' * depth + "1" + "}" * depth
        if c < 0.7:
            n = r.choice([100, 1000, 20000, 100000])
            return "{" + ",".join('"k%d": %d' % (i, i) for i in range(n)) + "}"
        if c < 0.85:
            n = r.randint(1, self.huge_max)
            return '{"blob": "' + "y" * n + '"}'
        n = r.choice([10, 1000, 50000])
        return "[" + ",".join(r.choice(['1', '"x"', 'null', '{"a":[]}', '1.5e3'])
                              for _ in range(n)) + "]"

    def wait_timeout(self):
        if self.chance(0.5):
            return None
        return self.r.choice(["0", "1 millisecond", "20 milliseconds", "-1 second",
                              "1 month -30 days", "200 years"] + INTERVALS)

    def body(self):
        c = self.r.random()
        if c < 0.3:
            return None
        if c < 0.6:
            return bytes(self.r.randrange(256) for _ in range(self.r.choice([0, 1, 7, 300])))
        if c < 0.8:
            return b"\x00\xff" * self.r.choice([1, 1000, 300000])
        return self.r.choice([b"", b"{}", "\u00e9".encode()])

    def key_array(self):
        c = self.r.random()
        if c < 0.05:
            return None
        n = self.r.choice([0, 1, 2, 5, 50, 500, 3000])
        return [self.key() for _ in range(n)]

    def offset(self):
        return self.r.choice([None, -1, 0, 1, 5, 1000, 2 ** 31, 2 ** 63 - 1, -2 ** 63])

    def partition(self):
        return self.r.choice([None, -1, 0, 1, 7, 2 ** 31 - 1])

    def max_rows(self):
        return self.r.choice([None, None, 0, -1, 1, 5, 100, 2147483647, -2147483648])


# ---------------------------------------------------------------- sessions

class Session(threading.Thread):
    """One connection calling the API at random."""

    def __init__(self, shared, name, role, seed, owners, setrole):
        super().__init__(name=name, daemon=True)
        self.s = shared
        self.args = shared.args
        self.role = role
        self.seed = seed
        self.rng = random.Random(seed)
        self.g = Gen(self.rng, self.args.huge_max)
        self.owners = owners
        self.setrole = setrole
        self.conn = None
        self.api = None
        self.in_xact = False
        self.savepoints = []
        self.ops = 0
        self.history = collections.deque(maxlen=30)
        shared.history[name] = self.history

    # -- plumbing

    def open(self):
        self.conn = connect(self.args, self.role, "idem_fuzz " + self.name)
        pid = self.conn.info.backend_pid
        with self.s.lock:
            self.s.worker_pids[self.name] = pid
        self.conn.execute("SET statement_timeout = %d" % (self.args.statement_timeout * 1000))
        self.conn.execute("SET lock_timeout = '%dms'" % self.rng.choice([100, 500, 2000]))
        self.api = Api(self.conn)
        self.in_xact = False
        self.savepoints = []

    def run_sql(self, sqltext, params=None, fetch=True, keep_row=False):
        """Run one statement; True if it succeeded.  Counts errors."""
        if isinstance(sqltext, sql.Composable):
            sqltext = sqltext.as_string(self.conn)
        self.history.append((time.time(), self.conn.info.backend_pid, sqltext,
                             [abbrev(p) for p in (params or [])]))
        self.s.log_trace(self.name, sqltext, params)
        with self.s.lock:
            self.s.worker_state[self.name] = (time.time(), sqltext, params)
            self.s.ops += 1
        try:
            cur = self.conn.execute(sqltext, params, prepare=self.rng.random() < 0.2)
            if keep_row and cur.description is not None:
                self._row = cur.fetchone()
                cur.fetchall()
            elif fetch and cur.description is not None:
                cur.fetchall()
            with self.s.lock:
                self.s.ok[sqltext.split("(")[0][:60]] += 1
            return True
        except psycopg.Error as e:
            state = e.sqlstate
            msg = str(e)
            if self.conn.broken or self.conn.closed or state in ("57P01", "57P02", "57P03"):
                self.lost(sqltext, params, state, msg)
                return False
            self.s.count(state or "?????", sqltext, params, msg)
            if state == "42883" and self.conn.info.transaction_status == 0:
                # the extension was recreated, perhaps at another version:
                # learn its functions' arguments again
                try:
                    self.api.refresh(self.conn)
                except psycopg.Error:
                    pass
            if state is None:
                # not a server error: a client-side one (encoding, ...)
                return False
            if self.in_xact and state not in ("25P02",):
                # the transaction is aborted now; statements after a
                # failed COMMIT or ROLLBACK leave it
                pass
            return False
        finally:
            with self.s.lock:
                self.s.worker_state.pop(self.name, None)

    def lost(self, sqltext, params, state, msg):
        pid = self.s.worker_pids.get(self.name)
        with self.s.lock:
            ours = pid in self.s.terminated
        self.s.count(state or "CONN", sqltext, params, msg)
        if not ours or state == "57P02" or is_crash_message(msg) and not ours:
            self.s.fail("session %s (pid %s) lost its connection: %s\n  during: %s %s"
                        % (self.name, pid, msg.strip(), sqltext, [abbrev(p) for p in (params or [])]))
        try:
            self.conn.close()
        except Exception:
            pass
        self.conn = None
        if not self.s.stop.is_set():
            for _ in range(60):
                try:
                    self.open()
                    return
                except psycopg.Error:
                    time.sleep(0.5)
            self.s.fail("session %s could not reconnect" % self.name)
            self.s.stop.set()

    # -- calls of the API

    def call(self, func, argvals, positional=False, form=None):
        """SELECT from func with the given named args (those it has)."""
        if self.api.schema is None or func not in self.api.args:
            if self.rng.random() < 0.3:
                self.api.refresh(self.conn)
            if func not in self.api.args:
                return self.run_sql(sql.SQL("SELECT 1"))
        names = [a for a in argvals if self.api.has(func, a)]
        params = [argvals[a][0] for a in names]
        types = [argvals[a][1] for a in names]
        order = self.api.args[func]
        n = self.rng.randint(2 if func == "idem_checkpoint" else 1, len(order)) if order else 0
        if positional and all(a in argvals for a in order[:n]):
            # positional: a prefix of the declared order
            names = order[:n]
            params = [argvals[a][0] for a in names]
            types = [argvals[a][1] for a in names]
            arglist = sql.SQL(", ").join(
                sql.SQL("%s::" + t) for t in types)
        else:
            arglist = sql.SQL(", ").join(
                sql.SQL("{} => %s::" + t).format(sql.Identifier(a)) for a, t in zip(names, types))
        fn = self.api.qname(func)
        form = form or self.rng.choice(["from", "from", "select", "expand"])
        if form == "from":
            q = sql.SQL("SELECT * FROM {}({})").format(fn, arglist)
        elif form == "select":
            q = sql.SQL("SELECT {}({})").format(fn, arglist)
        else:
            q = sql.SQL("SELECT ({}({})).*").format(fn, arglist) \
                if func in ("idem_claim", "idem_lookup") else \
                sql.SQL("SELECT {}({}) IS NULL").format(fn, arglist)
        ok = self.run_sql(q, params)
        return ok

    def owner_arg(self, d):
        if self.rng.random() < 0.5:
            d["owner"] = (self.rng.choice(self.owners), "name")

    def op_claim(self):
        g = self.g
        d = {"key": (g.key(), "text")}
        if g.chance(0.5):
            d["fingerprint"] = (g.r.choice([None, "fp1", "fp2", g.text()]), "text")
        if g.chance(0.6):
            d["ttl"] = (g.ttl(), "interval")
        if g.chance(0.6):
            d["scope"] = (g.scope(), "text")
        if g.chance(0.5):
            d["wait"] = (g.boolean(), "boolean")
        if g.chance(0.5):
            d["lease"] = (g.lease(), "interval")
        if g.chance(0.3):
            d["wait_timeout"] = (g.wait_timeout(), "interval")
        self.owner_arg(d)
        return self.call("idem_claim", d, positional=g.chance(0.15))

    def op_claim_many(self):
        g = self.g
        keys = g.key_array()
        d = {"keys": (keys, "text[]")}
        if g.chance(0.4):
            n = len(keys) if keys is not None and g.chance(0.8) else g.r.choice([0, 1, 3])
            d["fingerprints"] = (g.r.choice([None, [g.r.choice([None, "fp1", "fp2"]) for _ in range(n)]]),
                                 "text[]")
        if g.chance(0.5):
            d["ttl"] = (g.ttl(), "interval")
        if g.chance(0.5):
            d["scope"] = (g.scope(), "text")
        if g.chance(0.4):
            d["wait"] = (g.boolean(), "boolean")
        if g.chance(0.3):
            d["lease"] = (g.lease(), "interval")
        if g.chance(0.3):
            d["wait_timeout"] = (g.wait_timeout(), "interval")
        self.owner_arg(d)
        return self.call("idem_claim_many", d, positional=g.chance(0.1))

    def op_complete_many(self):
        g = self.g
        keys = g.key_array()
        d = {"keys": (keys, "text[]")}
        if g.chance(0.6):
            n = len(keys) if keys is not None and g.chance(0.8) else g.r.choice([0, 2])
            d["responses"] = ([g.r.choice([None, '{}', '{"n": 1}', '[1]']) for _ in range(n)], "jsonb[]")
        if g.chance(0.5):
            d["scope"] = (g.scope(), "text")
        self.owner_arg(d)
        return self.call("idem_complete_many", d)

    def op_renew(self):
        g = self.g
        d = {"key": (g.key(), "text"), "attempt": (g.attempt(), "integer")}
        if g.chance(0.5):
            d["scope"] = (g.scope(), "text")
        if g.chance(0.5):
            d["lease"] = (g.lease(), "interval")
        self.owner_arg(d)
        return self.call("idem_renew", d, positional=g.chance(0.15))

    def op_offsets(self):
        g = self.g
        group = g.r.choice([g.text(["g1", "g2"]), "g1"])
        stream = g.r.choice([g.text(["orders"]), "orders"])
        c = g.r.random()
        if c < 0.6:
            d = {"consumer_group": (group, "text"), "stream": (stream, "text"),
                 "partition": (g.partition(), "integer"), "message_offset": (g.offset(), "bigint")}
            self.owner_arg(d)
            return self.call("idem_offset_advance", d, positional=g.chance(0.3))
        if c < 0.9:
            d = {"consumer_group": (group, "text"), "stream": (stream, "text"),
                 "partition": (g.partition(), "integer")}
            self.owner_arg(d)
            return self.call("idem_offset_get", d, positional=g.chance(0.3))
        d = {"consumer_group": (group, "text")}
        self.owner_arg(d)
        return self.call("idem_offset_forget", d)

    def op_current(self):
        fn = self.api.qname
        if self.rng.random() < 0.5:
            return self.run_sql(sql.SQL("SELECT {}()").format(fn("idem_current_key")))
        return self.run_sql(sql.SQL("SELECT * FROM {}()").format(fn("idem_current_keys")))

    def op_complete(self):
        g = self.g
        d = {"key": (g.key(), "text")}
        if g.chance(0.8):
            d["response"] = (g.json_text(), "jsonb")
        if g.chance(0.6):
            d["scope"] = (g.scope(), "text")
        if g.chance(0.6):
            d["attempt"] = (g.attempt(), "integer")
        if g.chance(0.3):
            d["body"] = (g.body(), "bytea")
        self.owner_arg(d)
        return self.call("idem_complete", d, positional=g.chance(0.15))

    def op_release(self):
        g = self.g
        d = {"key": (g.key(), "text")}
        if g.chance(0.6):
            d["scope"] = (g.scope(), "text")
        if g.chance(0.6):
            d["attempt"] = (g.attempt(), "integer")
        self.owner_arg(d)
        return self.call("idem_release", d, positional=g.chance(0.15))

    def op_checkpoint(self):
        g = self.g
        d = {"key": (g.key(), "text"), "recovery_point": (g.text(["step-1", "step-2"]), "text")}
        if g.chance(0.6):
            d["scope"] = (g.scope(), "text")
        if g.chance(0.7):
            d["attempt"] = (g.attempt(), "integer")
        self.owner_arg(d)
        return self.call("idem_checkpoint", d, positional=g.chance(0.15))

    def op_lookup(self):
        g = self.g
        d = {"key": (g.key(), "text")}
        if g.chance(0.6):
            d["scope"] = (g.scope(), "text")
        self.owner_arg(d)
        return self.call("idem_lookup", d)

    def op_forget(self):
        g = self.g
        d = {"key": (g.key(), "text")}
        if g.chance(0.6):
            d["scope"] = (g.scope(), "text")
        self.owner_arg(d)
        return self.call("idem_forget", d)

    def op_sweep(self):
        d = {}
        if self.g.chance(0.8):
            d["max_rows"] = (self.g.max_rows(), "integer")
        return self.call("idem_sweep", d)

    def op_fingerprint(self):
        return self.call("idem_fingerprint", {"request": (self.g.json_text(), "jsonb")},
                         form="select")

    def op_flow(self):
        """A well-behaved client: claim, checkpoint, complete or release with
        the attempt the claim returned, so that the API's paths past its
        argument checks are exercised too."""
        g = self.g
        k = g.r.choice(SHARED_KEYS)
        sc = g.r.choice(SHARED_SCOPES)
        lease = g.r.choice([None, "1 millisecond", "20 milliseconds", "1 second", "1 hour"])
        d = {"key": (k, "text"), "scope": (sc, "text"), "lease": (lease, "interval"),
             "fingerprint": (g.r.choice([None, "fp1", "fp2"]), "text"),
             "wait": (g.r.random() < 0.7, "boolean")}
        self.owner_arg(d)
        names = [a for a in d if self.api.has("idem_claim", a)]
        if not names:
            return self.run_sql("SELECT 1")
        q = sql.SQL("SELECT outcome::text, attempt FROM {}({})").format(
            self.api.qname("idem_claim"),
            sql.SQL(", ").join(sql.SQL("{} => %s::" + d[a][1]).format(sql.Identifier(a)) for a in names))
        try:
            row = None
            ok = self.run_sql_row(q, [d[a][0] for a in names])
            if not ok:
                return
            outcome, attempt = ok
        except TypeError:
            return
        if outcome != "claimed":
            return
        base = {"key": (k, "text"), "scope": (sc, "text"), "attempt": (attempt, "integer")}
        if "owner" in d:
            base["owner"] = d["owner"]
        if lease and g.chance(0.5):
            cp = dict(base)
            cp["recovery_point"] = (g.r.choice(["step-1", "step-2", None]), "text")
            self.call("idem_checkpoint", cp, form="from")
        if g.chance(0.2):
            time.sleep(g.r.choice([0.001, 0.02]))
        if g.chance(0.75):
            cm = dict(base)
            cm["response"] = (g.r.choice(['{"status": 201}', None, '[1, 2, 3]']), "jsonb")
            self.call("idem_complete", cm, form="from")
        else:
            self.call("idem_release", base, form="from")

    def run_sql_row(self, q, params):
        """run_sql for one row: the row, or None."""
        self._row = None
        orig = self.conn.execute
        ok = self.run_sql(q, params, fetch=False, keep_row=True)
        return self._row if ok else None

    def op_misc(self):
        r = self.rng
        fn = lambda f: self.api.qname(f)
        c = r.randrange(14)
        k = self.g.key() or "k1"
        if c == 0:
            return self.run_sql("SELECT * FROM %s" % (
                '"%s".idem_stats' % self.api.schema if self.api.schema else "idem_stats"))
        if c == 1:
            return self.run_sql(sql.SQL("SELECT {}()").format(fn("idem_start_worker")))
        if c == 2:
            # many keys in one statement: the pending claims' hash table
            n = r.choice([17, 50, 500, 3000])
            m = r.choice([3, 20, 1000])
            return self.run_sql(sql.SQL(
                "SELECT count(*), count(DISTINCT c.outcome) FROM pg_catalog.generate_series(1, %s) g, "
                "LATERAL {}(key => 'bulk-' || (g %% %s), lease => %s::interval) c").format(fn("idem_claim")),
                [n, m, r.choice([None, None, "1 millisecond", "1 hour"])])
        if c == 3:
            # claim, then fail, inside a PL/pgSQL exception block
            body = sql.SQL(
                "DO $fz$ BEGIN "
                "PERFORM {c}(key => {k}, lease => {l}); "
                "PERFORM {m}(key => {k}, response => '{{\"in\": \"block\"}}'); "
                "IF {f} THEN RAISE EXCEPTION 'fuzz'; END IF; "
                "EXCEPTION WHEN OTHERS THEN PERFORM {m}(key => {k}); END $fz$").format(
                c=fn("idem_claim"), m=fn("idem_complete"), k=sql.Literal(k),
                l=sql.Literal(r.choice([None, "1 second"])), f=sql.Literal(r.random() < 0.7))
            return self.run_sql(body)
        if c == 4:
            return self.run_sql(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM {}(key => %s)").format(
                fn("idem_claim")), [k])
        if c == 5:
            # the same key several times in one statement
            return self.run_sql(sql.SQL(
                "SELECT c.* FROM (VALUES (%s), (%s), (%s)) v(k), LATERAL {}(key => v.k, wait => false) c").format(
                fn("idem_claim")), [k, k, self.g.key()])
        if c == 6:
            return self.run_sql("SET idempotency.max_key_length = %d" % r.choice([1, 2, 64, 255, 100000, 0, -1]))
        if c == 7:
            return self.run_sql("SET idempotency.max_response_size = %d" % r.choice([0, 1, 100, 1000000, 2147483647]))
        if c == 8:
            return self.run_sql("SET idempotency.default_ttl = %s" % r.choice(["'1ms'", "'1s'", "0", "-1", "'100 years'", "2147483647"]))
        if c == 9:
            return self.run_sql("RESET ALL")      # the database's timeouts stay
        if c == 10:
            return self.run_sql("SET lock_timeout = '%dms'" % r.choice([1, 50, 500, 2000]))
        if c == 11:
            return self.run_sql(sql.SQL("SELECT {}(key => %s) FROM pg_catalog.generate_series(1, 3)").format(
                fn("idem_lookup")), [k])
        if c == 12 and self.setrole:
            return self.run_sql(sql.SQL("SET ROLE {}").format(sql.Identifier(r.choice(self.setrole))))
        if c == 13:
            return self.run_sql("RESET ROLE")
        return self.run_sql("SELECT 1")

    def op_xact(self):
        """Transaction control: begin, savepoints, commit, rollback, prepare."""
        r = self.rng
        if not self.in_xact:
            iso = r.choice(["", "", " ISOLATION LEVEL REPEATABLE READ", " ISOLATION LEVEL SERIALIZABLE",
                            " ISOLATION LEVEL READ COMMITTED", " READ ONLY"])
            self.run_sql("BEGIN" + iso)
            self.in_xact = True
            self.savepoints = []
            return
        c = r.random()
        if c < 0.3:
            name = "sp%d" % len(self.savepoints)
            if self.run_sql("SAVEPOINT " + name):
                self.savepoints.append(name)
        elif c < 0.5 and self.savepoints:
            i = r.randrange(len(self.savepoints))
            self.run_sql("ROLLBACK TO SAVEPOINT " + self.savepoints[i])
            del self.savepoints[i + 1:]
        elif c < 0.58 and self.savepoints:
            i = r.randrange(len(self.savepoints))
            self.run_sql("RELEASE SAVEPOINT " + self.savepoints[i])
            del self.savepoints[i:]
        elif c < 0.62:
            self.run_sql("SET LOCAL statement_timeout = '%dms'" % r.choice([1, 5, 50]))
        elif c < 0.67:
            self.run_sql(sql.SQL("DECLARE c{} CURSOR WITH HOLD FOR SELECT * FROM {}(key => %s)").format(
                sql.SQL(str(len(self.savepoints))), self.api.qname("idem_lookup")), [self.g.key()])
        elif c < 0.72 and self.s.max_prepared > 0:
            gid = "fuzz-%s-%d" % (self.name, self.ops)
            if self.run_sql("PREPARE TRANSACTION '%s'" % gid):
                with self.s.lock:
                    self.s.prepared.append(gid)
            self.end_xact()
        elif c < 0.86:
            self.run_sql("COMMIT")
            self.end_xact()
        else:
            self.run_sql("ROLLBACK")
            self.end_xact()

    def end_xact(self):
        self.in_xact = False
        self.savepoints = []
        if self.conn is not None and self.conn.info.transaction_status != 0:
            # a failed PREPARE or COMMIT can leave us in a block
            try:
                self.conn.execute("ROLLBACK")
            except psycopg.Error:
                pass

    def op_prepared(self):
        """Finish a prepared transaction of any session."""
        with self.s.lock:
            if not self.s.prepared:
                return
            gid = self.s.prepared.pop(self.rng.randrange(len(self.s.prepared)))
        self.run_sql("%s PREPARED '%s'" % (self.rng.choice(["COMMIT", "ROLLBACK"]), gid))

    def op_ddl_in_xact(self):
        """Superuser only: DDL on the keys table in the middle of claims."""
        stmt = self.rng.choice(DDL_IN_XACT)
        self.run_sql(stmt.replace("@", self.api.schema or "public"))

    OPS = [
        ("claim", 26), ("flow", 12), ("complete", 10), ("release", 6), ("checkpoint", 6), ("lookup", 8),
        ("forget", 4), ("sweep", 3), ("fingerprint", 3), ("misc", 8), ("xact", 14),
        ("prepared", 1), ("claim_many", 8), ("complete_many", 3), ("renew", 4), ("offsets", 5),
        ("current", 2),
    ]

    def step(self):
        if self.conn is None:
            self.open()
        # an aborted transaction: leave it, most of the time
        if self.in_xact and self.conn.info.transaction_status == 3:   # INERROR
            if self.savepoints and self.rng.random() < 0.6:
                i = self.rng.randrange(len(self.savepoints))
                self.run_sql("ROLLBACK TO SAVEPOINT " + self.savepoints[i])
                del self.savepoints[i + 1:]
            elif self.rng.random() < 0.9:
                self.run_sql("ROLLBACK")
                self.end_xact()
        if self.conn is not None and self.conn.info.transaction_status == 0 and self.in_xact:
            self.in_xact = False
            self.savepoints = []
        ops = self.OPS + ([("ddl_in_xact", 2)] if self.role_is_super and self.args.ddl else [])
        total = sum(w for _, w in ops)
        x = self.rng.uniform(0, total)
        for name, w in ops:
            x -= w
            if x <= 0:
                break
        getattr(self, "op_" + name)()
        self.ops += 1

    def run(self):
        deadline = time.time() + self.args.seconds if self.args.seconds else None
        try:
            while not self.s.stop.is_set():
                if deadline and time.time() >= deadline:
                    break
                if self.args.ops and self.ops >= self.args.ops:
                    break
                try:
                    self.step()
                except psycopg.Error as e:
                    # a failure outside run_sql (connect, ...)
                    if self.conn is not None and (self.conn.broken or self.conn.closed):
                        self.lost("(session plumbing)", None, e.sqlstate, str(e))
                    else:
                        self.s.count(e.sqlstate or "?????", "(session plumbing)", None, str(e))
            if self.conn is not None:
                try:
                    self.conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass
                self.conn.close()
        except Exception:
            self.s.fail("session %s: fuzzer error\n%s" % (self.name, traceback.format_exc()))


# Allowed in a transaction block; "@" is the extension's schema
DDL_IN_XACT = [
    "TRUNCATE @.idem_keys",
    "ALTER TABLE @.idem_keys ADD COLUMN IF NOT EXISTS x int",
    "ALTER TABLE @.idem_keys ADD COLUMN IF NOT EXISTS y text DEFAULT 'y'",
    "ALTER TABLE @.idem_keys DROP COLUMN IF EXISTS x",
    "ALTER TABLE @.idem_keys DROP COLUMN IF EXISTS y",
    "CREATE INDEX IF NOT EXISTS idem_fuzz_fp ON @.idem_keys (fingerprint)",
    "DROP INDEX IF EXISTS @.idem_fuzz_fp",
    "REINDEX TABLE @.idem_keys",
    "CLUSTER @.idem_keys USING idem_keys_pkey",
    "LOCK TABLE @.idem_keys IN ACCESS EXCLUSIVE MODE",
    "DROP EXTENSION idempotency",
    "ALTER TABLE @.idem_keys SET (fillfactor = 10)",
    "ALTER TABLE @.idem_keys ALTER COLUMN response SET STORAGE EXTERNAL",
    "ANALYZE @.idem_keys",
]

# Run by the DDL session, in autocommit; "@" is the extension's schema
DDL = [
    "TRUNCATE @.idem_keys",
    "VACUUM FULL @.idem_keys",
    "VACUUM @.idem_keys",
    "VACUUM (FREEZE, ANALYZE) @.idem_keys",
    "CLUSTER @.idem_keys USING idem_keys_pkey",
    "CLUSTER @.idem_keys USING idem_keys_expires_at_idx",
    "ALTER TABLE @.idem_keys ADD COLUMN IF NOT EXISTS x int",
    "ALTER TABLE @.idem_keys DROP COLUMN IF EXISTS x",
    "ALTER TABLE @.idem_keys ADD COLUMN IF NOT EXISTS z jsonb NOT NULL DEFAULT '{}'",
    "ALTER TABLE @.idem_keys DROP COLUMN IF EXISTS z",
    "CREATE INDEX IF NOT EXISTS idem_fuzz_fp ON @.idem_keys (fingerprint)",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS idem_fuzz_resp ON @.idem_keys USING gin (response)",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS idem_fuzz_uk ON @.idem_keys (key, scope)",
    "DROP INDEX IF EXISTS @.idem_fuzz_fp",
    "DROP INDEX CONCURRENTLY IF EXISTS @.idem_fuzz_resp",
    "DROP INDEX IF EXISTS @.idem_fuzz_uk",
    "CREATE UNIQUE INDEX IF NOT EXISTS idem_fuzz_uk2 ON @.idem_keys (scope, key, attempt, created_at)",
    "DROP INDEX IF EXISTS @.idem_fuzz_uk2",
    "REINDEX TABLE @.idem_keys",
    "REINDEX TABLE CONCURRENTLY @.idem_keys",
    "REINDEX INDEX @.idem_keys_expires_at_idx",
    "ANALYZE @.idem_keys",
    "ALTER EXTENSION idempotency UPDATE",
    "DROP EXTENSION idempotency",
    "DROP EXTENSION idempotency CASCADE",
    "CREATE EXTENSION IF NOT EXISTS idempotency",
    "CREATE EXTENSION IF NOT EXISTS idempotency",
    "CHECKPOINT",
]

# Changes that break what the C code expects of its objects: each must be a
# clear error at the next call, never a crash.  Repaired by recreating the
# extension.
HOSTILE_DDL = [
    "ALTER TABLE @.idem_keys ALTER COLUMN status TYPE text",
    "ALTER TABLE @.idem_keys ALTER COLUMN attempt TYPE bigint",
    "ALTER TABLE @.idem_keys ALTER COLUMN attempt TYPE text",
    "ALTER TABLE @.idem_keys ALTER COLUMN response TYPE text",
    "ALTER TABLE @.idem_keys ALTER COLUMN response TYPE json",
    "ALTER TABLE @.idem_keys ALTER COLUMN expires_at TYPE timestamp",
    "ALTER TABLE @.idem_keys ALTER COLUMN expires_at TYPE text",
    "ALTER TABLE @.idem_keys ALTER COLUMN created_at TYPE int USING 0",
    "ALTER TABLE @.idem_keys ALTER COLUMN lease TYPE text",
    "ALTER TABLE @.idem_keys ALTER COLUMN locked_until TYPE bigint USING 0",
    "ALTER TABLE @.idem_keys ALTER COLUMN key TYPE varchar(10)",
    "ALTER TABLE @.idem_keys ALTER COLUMN key TYPE bytea USING key::bytea",
    "ALTER TABLE @.idem_keys ALTER COLUMN scope TYPE name",
    "ALTER TABLE @.idem_keys ALTER COLUMN fingerprint TYPE int USING 0",
    "ALTER TABLE @.idem_keys ALTER COLUMN recovery_point TYPE jsonb USING NULL",
    "ALTER TABLE @.idem_keys ALTER COLUMN fingerprint SET NOT NULL",
    "ALTER TABLE @.idem_keys ALTER COLUMN scope DROP NOT NULL",
    "ALTER TABLE @.idem_keys ALTER COLUMN key SET DEFAULT 'd'",
    "ALTER TABLE @.idem_keys RENAME COLUMN attempt TO attempt2",
    "ALTER TABLE @.idem_keys DROP COLUMN lease",
    "ALTER TABLE @.idem_keys DROP COLUMN recovery_point",
    "ALTER TABLE @.idem_keys DROP CONSTRAINT idem_keys_pkey",
    "ALTER TABLE @.idem_keys DROP CONSTRAINT idem_keys_pkey, ADD PRIMARY KEY (key, scope)",
    "ALTER TABLE @.idem_keys DROP CONSTRAINT idem_keys_pkey, ADD PRIMARY KEY (scope, key, attempt)",
    "ALTER TABLE @.idem_keys DROP CONSTRAINT idem_keys_pkey, ADD PRIMARY KEY (key)",
    "ALTER TABLE @.idem_keys DROP CONSTRAINT idem_keys_pkey; "
    "CREATE UNIQUE INDEX idem_fuzz_pk2 ON @.idem_keys (scope COLLATE \"POSIX\" text_pattern_ops, key); "
    "ALTER TABLE @.idem_keys ADD PRIMARY KEY USING INDEX idem_fuzz_pk2",
    "DROP INDEX @.idem_keys_expires_at_idx",
    "DROP INDEX @.idem_keys_expires_at_idx; CREATE INDEX idem_fuzz_exp_hash ON @.idem_keys USING hash (expires_at)",
    "DROP INDEX @.idem_keys_expires_at_idx; CREATE INDEX idem_fuzz_exp_brin ON @.idem_keys USING brin (expires_at)",
    "DROP INDEX @.idem_keys_expires_at_idx; CREATE INDEX idem_fuzz_exp_desc ON @.idem_keys (expires_at DESC)",
    "CREATE INDEX idem_fuzz_exp_part ON @.idem_keys (expires_at) WHERE attempt > 1",
    "ALTER TABLE @.idem_keys ADD CONSTRAINT idem_fuzz_chk CHECK (attempt < 3) NOT VALID",
    "ALTER TABLE @.idem_keys ADD CONSTRAINT idem_fuzz_excl EXCLUDE USING btree (fingerprint WITH =)",
    "ALTER TABLE @.idem_keys ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE @.idem_keys ENABLE ROW LEVEL SECURITY; ALTER TABLE @.idem_keys FORCE ROW LEVEL SECURITY",
    "ALTER TABLE @.idem_keys SET UNLOGGED",
    "ALTER TABLE @.idem_keys RENAME TO idem_keys_old; CREATE TABLE @.idem_keys (scope text, key text)",
    "ALTER TABLE @.idem_keys SET SCHEMA pg_temp",
    "CREATE FUNCTION @.idem_fuzz_trig() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'trigger'; END$$; "
    "CREATE TRIGGER idem_fuzz_trig BEFORE INSERT OR UPDATE OR DELETE ON @.idem_keys "
    "FOR EACH ROW EXECUTE FUNCTION @.idem_fuzz_trig()",
    "ALTER TYPE @.idem_outcome ADD VALUE 'other'",
    "ALTER TYPE @.idem_outcome RENAME VALUE 'replay' TO 'replayed'",
    "ALTER TYPE @.idem_status RENAME VALUE 'completed' TO 'done'",
    "ALTER TYPE @.idem_status ADD VALUE 'aborted' BEFORE 'in_progress'",
    "ALTER TYPE @.idem_claim_result ADD ATTRIBUTE extra int",
    "ALTER TYPE @.idem_claim_result DROP ATTRIBUTE expires_at",
    "ALTER TYPE @.idem_claim_result ALTER ATTRIBUTE attempt TYPE text",
    "ALTER TYPE @.idem_claim_result ALTER ATTRIBUTE outcome TYPE text",
    "ALTER TYPE @.idem_claim_result RENAME ATTRIBUTE response TO resp",
    "ALTER EXTENSION idempotency DROP TABLE @.idem_keys",
    "CREATE TABLE @.idem_fuzz_child () INHERITS (@.idem_keys)",
    "INSERT INTO @.idem_keys (scope, key, status, attempt, created_at, expires_at, locked_until) "
    "VALUES ('', 'k1', 'in_progress', -5, now(), 'infinity', '-infinity') ON CONFLICT DO NOTHING",
    "INSERT INTO @.idem_keys (scope, key, status, attempt, created_at, expires_at, response) "
    "VALUES ('', 'k2', 'completed', 2147483647, 'infinity', '-infinity', '[[[[1]]]]') ON CONFLICT DO NOTHING",
    "INSERT INTO @.idem_keys (scope, key, status, attempt, created_at, expires_at, lease, locked_until) "
    "VALUES ('', 'k3', 'in_progress', 0, '-infinity', 'infinity', '-1 day', 'infinity') ON CONFLICT DO NOTHING",
    "UPDATE @.idem_keys SET attempt = 2147483647, locked_until = '-infinity', lease = '0'",
    "UPDATE @.idem_keys SET expires_at = '-infinity', created_at = 'infinity', completed_at = NULL",
    "ALTER TABLE @.idem_keys ALTER COLUMN body TYPE text",
    "ALTER TABLE @.idem_keys DROP COLUMN body",
    "ALTER TABLE @.idem_keys ALTER COLUMN released_attempt TYPE bigint",
    "ALTER TABLE @.idem_keys ALTER COLUMN owner TYPE oid",
    "UPDATE @.idem_keys SET released_attempt = attempt, locked_until = '-infinity'",
    "ALTER TYPE @.idem_claim_result DROP ATTRIBUTE body",
    "ALTER TYPE @.idem_claim_result ALTER ATTRIBUTE body TYPE text",
    "ALTER TABLE @.idem_offsets ALTER COLUMN committed_offset TYPE text",
    "ALTER TABLE @.idem_offsets DROP CONSTRAINT idem_offsets_pkey",
    "ALTER TABLE @.idem_offsets RENAME TO idem_offsets_old",
    "DROP TABLE @.idem_offsets",
    "ALTER TABLE @.idem_offsets ADD CONSTRAINT idem_fuzz_ochk CHECK (committed_offset < 5)",
]


class DdlSession(threading.Thread):
    """Concurrent DDL on the keys table and the extension, and cancels."""

    def __init__(self, shared, seed, superuser):
        super().__init__(name="ddl", daemon=True)
        self.s = shared
        self.args = shared.args
        self.rng = random.Random(seed)
        self.superuser = superuser
        self.conn = None
        self.broken = False
        self.history = collections.deque(maxlen=30)
        shared.history["ddl"] = self.history
        # every statement comes once per round, in a seeded order
        self.deck = []

    def open(self):
        self.conn = connect(self.args, self.superuser, "idem_fuzz ddl")
        self.conn.execute("SET statement_timeout = '60s'")
        with self.s.lock:
            self.s.worker_pids["ddl"] = self.conn.info.backend_pid

    def run_sql(self, stmt):
        if self.conn is None or self.conn.closed:
            try:
                self.open()
            except psycopg.Error:
                time.sleep(0.5)
                return False
        self.history.append((time.time(), self.conn.info.backend_pid, stmt, []))
        self.s.log_trace("ddl", stmt, None)
        with self.s.lock:
            self.s.worker_state["ddl"] = (time.time(), stmt, None)
            self.s.ops += 1
        try:
            self.conn.execute(stmt)
            with self.s.lock:
                self.s.ok["ddl: " + stmt[:50]] += 1
            return True
        except psycopg.Error as e:
            msg = str(e)
            if self.conn.broken or self.conn.closed:
                self.s.count(e.sqlstate or "CONN", stmt, None, msg)
                self.s.fail("ddl session lost its connection: %s\n  during: %s" % (msg.strip(), stmt))
                try:
                    self.conn.close()
                except Exception:
                    pass
                for _ in range(60):
                    try:
                        self.open()
                        break
                    except psycopg.Error:
                        time.sleep(0.5)
                return False
            self.s.count(e.sqlstate or "?????", stmt, None, msg)
            return False
        finally:
            with self.s.lock:
                self.s.worker_state.pop("ddl", None)

    def schema(self):
        row = self.conn.execute("""SELECT n.nspname FROM pg_extension e JOIN pg_namespace n
                                     ON n.oid = e.extnamespace WHERE e.extname = 'idempotency'""").fetchone()
        return row[0] if row else "public"

    def repair(self):
        """Recreate the extension and its grants."""
        nsp = self.schema()
        self.run_sql("DROP EXTENSION IF EXISTS idempotency CASCADE")
        for n in {nsp, "public"}:
            for stmt in ("DROP TABLE IF EXISTS @.idem_keys, @.idem_keys_old, @.idem_fuzz_child CASCADE",
                         "DROP FUNCTION IF EXISTS @.idem_fuzz_trig() CASCADE"):
                self.run_sql(stmt.replace("@", n))
        self.run_sql("DROP TABLE IF EXISTS pg_temp.idem_keys CASCADE")
        self.create_extension()
        with self.s.lock:
            self.s.altered = None

    def create_extension(self):
        versions = [v for (v,) in self.conn.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'idempotency'").fetchall()]
        if len(versions) > 1 and self.rng.random() < 0.3:
            # an older version, then ALTER EXTENSION UPDATE
            old = sorted(versions)[0]
            self.run_sql("CREATE EXTENSION IF NOT EXISTS idempotency VERSION '%s'" % old)
            grant(self.conn, quiet=True)
            time.sleep(self.rng.uniform(0, 0.3))
            self.run_sql("ALTER EXTENSION idempotency UPDATE")
        else:
            self.run_sql("CREATE EXTENSION IF NOT EXISTS idempotency")
        grant(self.conn, quiet=True)

    def next_ddl(self):
        if not self.deck:
            self.deck = list(DDL)
            if self.args.hostile_ddl:
                self.deck += HOSTILE_DDL
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    def run(self):
        try:
            self.open()
            broken = False
            deadline = time.time() + self.args.seconds if self.args.seconds else None
            while not self.s.stop.is_set() and (not deadline or time.time() < deadline):
                time.sleep(self.rng.uniform(0.05, self.args.ddl_pause))
                try:
                    self.conn.execute("SET lock_timeout = '%dms'" % self.rng.choice([200, 1000, 3000]))
                except psycopg.Error:
                    # the server went away (a crash, with --keep-going): again
                    if not self.run_sql("SELECT 1"):
                        continue
                c = self.rng.random()
                if c < 0.08:
                    self.cancel_someone()
                    continue
                if c < 0.12 and self.s.prepared:
                    with self.s.lock:
                        gid = self.s.prepared.pop(0) if self.s.prepared else None
                    if gid:
                        self.run_sql("ROLLBACK PREPARED '%s'" % gid)
                    continue
                if broken and self.rng.random() < 0.6:
                    self.repair()
                    broken = False
                    continue
                # a session's DROP EXTENSION in a transaction: create it again
                try:
                    missing = self.conn.execute(
                        "SELECT NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'idempotency')").fetchone()[0]
                except psycopg.Error:
                    missing = False
                if missing and self.rng.random() < 0.7:
                    self.create_extension()
                    continue
                stmt = self.next_ddl()
                ok = self.run_sql(stmt.replace("@", self.schema()))
                if stmt in HOSTILE_DDL and ok:
                    broken = True
                    with self.s.lock:
                        self.s.altered = stmt
                if stmt.startswith("DROP EXTENSION") and ok:
                    with self.s.lock:
                        self.s.altered = None
                    broken = False
                if stmt.startswith("DROP EXTENSION") and ok:
                    time.sleep(self.rng.uniform(0, 0.3))
                    self.create_extension()
                if stmt.startswith("CREATE EXTENSION") and ok:
                    grant(self.conn, quiet=True)
            try:
                self.conn.execute("SET lock_timeout = 0")
            except psycopg.Error:
                self.run_sql("SELECT 1")
            # a prepared transaction holds its lock on the keys table until
            # it is finished: finish the workers' before the repair waits on them
            try:
                for gid, in self.conn.execute(
                        "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'fuzz-%'").fetchall():
                    self.run_sql("ROLLBACK PREPARED '%s'" % gid)
            except psycopg.Error:
                pass
            # end with a working extension; keep its keys for the final
            # checks unless a hostile change broke it
            if broken:
                self.repair()
            elif not self.run_sql("SELECT 1 FROM idem_keys LIMIT 0") or \
                    self.conn.execute(
                        "SELECT NOT EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
                        " WHERE e.extname = 'idempotency' AND d.deptype = 'e' "
                        "   AND d.classid = 'pg_class'::regclass "
                        "   AND d.objid = to_regclass(%s))",
                        (self.schema() + ".idem_keys",)).fetchone()[0]:
                # no extension, or a table in its table's place
                self.repair()
            self.conn.close()
        except Exception:
            self.s.fail("ddl session: fuzzer error\n%s" % traceback.format_exc())

    def cancel_someone(self):
        with self.s.lock:
            pids = [p for n, p in self.s.worker_pids.items() if n != "ddl"]
        if not pids:
            return
        pid = self.rng.choice(pids)
        if self.rng.random() < 0.2:
            with self.s.lock:
                self.s.terminated.add(pid)
            self.run_sql("SELECT pg_terminate_backend(%d)" % pid)
        else:
            self.run_sql("SELECT pg_cancel_backend(%d)" % pid)


class Watchdog(threading.Thread):
    """Reports a statement running far beyond its timeout: a hang."""

    def __init__(self, shared, superuser):
        super().__init__(name="watchdog", daemon=True)
        self.s = shared
        self.superuser = superuser
        self.reported = set()

    def run(self):
        limit = self.s.args.hang_seconds
        while not self.s.stop.is_set():
            time.sleep(1)
            now = time.time()
            with self.s.lock:
                states = list(self.s.worker_state.items())
                pids = dict(self.s.worker_pids)
            for name, (start, stmt, params) in states:
                if now - start > limit and (name, start) not in self.reported:
                    self.reported.add((name, start))
                    info = ""
                    try:
                        with connect(self.s.args, self.superuser, "idem_fuzz watchdog") as c:
                            info = "\n".join("    " + str(r) for r in c.execute(
                                "SELECT pid, pg_blocking_pids(pid), state, wait_event_type, wait_event, "
                                "backend_type, xact_start, left(query, 200) "
                                "FROM pg_stat_activity WHERE datname IS NOT NULL OR backend_type <> 'client backend' "
                                "ORDER BY pid").fetchall())
                            info += "\n  locks not granted and their holders:\n" + "\n".join(
                                "    " + str(r) for r in c.execute(
                                    "SELECT l.pid, l.locktype, l.relation::regclass, l.classid, l.objid, "
                                    "l.objsubid, l.mode, l.granted, l.virtualtransaction FROM pg_locks l "
                                    "WHERE (l.locktype, l.database, l.relation, l.classid, l.objid, l.objsubid) "
                                    "IN (SELECT locktype, database, relation, classid, objid, objsubid "
                                    "FROM pg_locks WHERE NOT granted) ORDER BY l.granted, l.pid").fetchall())
                            info += "\n  prepared transactions: " + str(c.execute(
                                "SELECT gid, prepared FROM pg_prepared_xacts").fetchall())
                            c.execute("SELECT pg_cancel_backend(%s)", [pids.get(name)])
                    except psycopg.Error as e:
                        info = "(could not look: %s)" % e
                    self.s.fail("hang: session %s (pid %s) has run one statement for %.0f s: %s %s\n"
                                "  sessions (pid, blocked by, state, wait, backend, since, query):\n%s"
                                % (name, pids.get(name), now - start, " ".join(stmt.split())[:300],
                                   [abbrev(p) for p in (params or [])], info))


def grant(conn, quiet=False):
    """The roles' privileges on the extension's operator functions."""
    try:
        nsp = conn.execute("""SELECT n.nspname FROM pg_extension e JOIN pg_namespace n
                                ON n.oid = e.extnamespace WHERE e.extname = 'idempotency'""").fetchone()
        if not nsp:
            return
        s = sql.Identifier(nsp[0])
        for stmt in (
            "GRANT EXECUTE ON FUNCTION {s}.idem_forget, {s}.idem_sweep, {s}.idem_start_worker TO fuzz_admin",
            "GRANT SELECT ON {s}.idem_stats TO fuzz_admin",
            "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC",
            "GRANT EXECUTE ON FUNCTION {s}.idem_claim, {s}.idem_complete, {s}.idem_release, "
            "{s}.idem_checkpoint, {s}.idem_lookup, {s}.idem_fingerprint "
            "TO fuzz_app, fuzz_group, fuzz_member, fuzz_admin",
        ):
            conn.execute(sql.SQL(stmt).format(s=s))
        # the functions of 0.2 (the extension may be at 0.1)
        for func in ("idem_claim_many", "idem_complete_many", "idem_renew", "idem_current_key",
                     "idem_current_keys", "idem_offset_advance", "idem_offset_get",
                     "idem_offset_forget", "idem_notify_token"):
            try:
                conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {s}.{f} "
                                     "TO fuzz_app, fuzz_group, fuzz_member, fuzz_admin").format(
                                         s=s, f=sql.Identifier(func)))
            except psycopg.Error:
                pass
    except psycopg.Error:
        if not quiet:
            raise


def setup(args, conn):
    """Roles, the extension, and keys in every state."""
    for stmt in (
        "DO $$BEGIN CREATE ROLE fuzz_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        "DO $$BEGIN CREATE ROLE fuzz_group NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        "DO $$BEGIN CREATE ROLE fuzz_member LOGIN IN ROLE fuzz_group; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        "DO $$BEGIN CREATE ROLE fuzz_admin LOGIN IN ROLE pg_monitor; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        "DO $$BEGIN CREATE ROLE fuzz_nopriv LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        # a fresh extension, and nothing that an earlier run may have left
        "DROP EXTENSION IF EXISTS idempotency CASCADE",
        "DROP TABLE IF EXISTS public.idem_keys, public.idem_keys_old, public.idem_fuzz_child CASCADE",
        "DROP FUNCTION IF EXISTS public.idem_fuzz_trig() CASCADE",
        "CREATE EXTENSION idempotency",
    ):
        conn.execute(stmt)
    grant(conn)
    # the sessions' timeouts, also after RESET ALL: a claim waits for a
    # prepared transaction's key until lock_timeout, by design
    conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
        sql.Identifier(args.dbname), sql.Literal("%ds" % args.statement_timeout)))
    conn.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '2s'").format(sql.Identifier(args.dbname)))
    api = Api(conn)
    claim = api.qname("idem_claim")
    complete = api.qname("idem_complete")
    users = [args.superuser, "fuzz_app", "fuzz_member", "fuzz_admin"]
    for u in users:
        c = connect(args, u, "idem_fuzz setup")
        for i in range(20):
            k = "seed-%s-%d" % (u, i)
            if i % 4 == 0:      # completed, with a response
                with c.transaction():
                    c.execute(sql.SQL("SELECT * FROM {}(key => %s, fingerprint => 'fp1')").format(claim), [k])
                    c.execute(sql.SQL("SELECT {}(key => %s, response => %s::jsonb)").format(complete),
                              [k, '{"status": 201, "i": %d}' % i])
            elif i % 4 == 1:    # leased, in progress
                c.execute(sql.SQL("SELECT * FROM {}(key => %s, lease => '1 hour')").format(claim), [k])
            elif i % 4 == 2:    # a lease already over
                c.execute(sql.SQL("SELECT * FROM {}(key => %s, lease => '1 millisecond')").format(claim), [k])
            else:               # expired
                c.execute(sql.SQL("SELECT * FROM {}(key => %s, ttl => '1 millisecond')").format(claim), [k])
        for k in SHARED_KEYS[:4]:
            c.execute(sql.SQL("SELECT * FROM {}(key => %s, scope => 's1')").format(claim), [k])
        c.close()
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}.idem_keys").format(
        sql.Identifier(api.schema))).fetchone()[0]
    print("setup: roles fuzz_app, fuzz_group, fuzz_member, fuzz_admin, fuzz_nopriv; %d keys" % n)


# What each hostile change is met with: every function, in its own session
BATTERY = [
    "SELECT * FROM idem_claim('h-new')",
    "SELECT * FROM idem_claim('h-lease', lease => '1 hour')",
    "BEGIN; SELECT * FROM idem_claim('h-tx'); SELECT idem_complete('h-tx', '{\"a\": 1}'); COMMIT",
    "SELECT idem_complete('h-lease', '{\"a\": 1}', attempt => 1)",
    "SELECT * FROM idem_claim('h-lease2', lease => '1 hour')",
    "SELECT idem_checkpoint('h-lease2', 'step', attempt => 1)",
    "SELECT idem_release('h-lease2', attempt => 1)",
    "SELECT * FROM idem_claim('h-lease2', lease => '1 millisecond')",
    "SELECT * FROM idem_claim('h-lease2')",
    "SELECT * FROM idem_claim('h-done')",
    "SELECT * FROM idem_claim('h-over')",
    "SELECT * FROM idem_claim('h-gone')",
    "SELECT * FROM idem_lookup('h-done')",
    "SELECT * FROM idem_lookup('h-tx')",
    "BEGIN; SELECT * FROM idem_claim('h-tx2'); SELECT * FROM idem_lookup('h-tx2'); "
    "SELECT idem_release('h-tx2'); COMMIT",
    "SELECT idem_forget('h-done')",
    "SELECT * FROM idem_claim_many(ARRAY['h-m1', 'h-done', 'h-m1', 'h-over'])",
    "BEGIN; SELECT * FROM idem_claim_many(ARRAY['h-m2', 'h-m3']); "
    "SELECT idem_complete_many(ARRAY['h-m2', 'h-m3'], ARRAY['1', '2']::jsonb[]); "
    "SELECT * FROM idem_current_keys(); SELECT idem_current_key(); COMMIT",
    "BEGIN; SELECT * FROM idem_claim('h-b'); SELECT idem_complete('h-b', body => '\\x00ff'); COMMIT",
    "SELECT * FROM idem_claim('h-b')",
    "SELECT * FROM idem_claim('h-lease', wait_timeout => '10 ms')",
    "SELECT idem_renew('h-lease', 1)",
    "SELECT idem_release('h-lease', attempt => 1)",
    "SELECT idem_renew('h-lease', 1)",
    "SELECT idem_offset_advance('g', 's', 0, 5)",
    "SELECT idem_offset_get('g', 's', 0)",
    "SELECT idem_offset_forget('g')",
    "SELECT idem_sweep()",
    "SELECT * FROM idem_stats",
]


def hostile_check(args, shared):
    """Each hostile change to the extension's objects, then every function.

    Run in a database of its own (dropped at the end), the extension created
    afresh for each change.  A crash is a failure (the rest of that change's
    calls are skipped); an internal error is reported."""
    db = "idem_fuzz_hostile"

    def conn_to(dbname):
        for _ in range(100):
            try:
                c = psycopg.connect(host=args.host, port=args.port, dbname=dbname,
                                    user=args.superuser, autocommit=True, connect_timeout=20)
                c.add_notice_handler(lambda d: None)
                c.execute("SET statement_timeout = '30s'")
                return c
            except psycopg.OperationalError:
                time.sleep(0.3)
        raise RuntimeError("the server does not come back")

    admin = conn_to(args.dbname)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    admin.close()
    crashes = 0
    for ddl in HOSTILE_DDL:
        c = conn_to(db)
        for stmt in ("DROP EXTENSION IF EXISTS idempotency CASCADE",
                     "DROP TABLE IF EXISTS idem_keys, idem_keys_old, idem_fuzz_child CASCADE",
                     "DROP FUNCTION IF EXISTS idem_fuzz_trig() CASCADE",
                     "CREATE EXTENSION idempotency",
                     "BEGIN; SELECT * FROM idem_claim('h-done'); "
                     "SELECT idem_complete('h-done', '{\"r\": 1}'); COMMIT",
                     "SELECT * FROM idem_claim('h-over', lease => '1 millisecond')",
                     "SELECT * FROM idem_claim('h-gone', ttl => '1 millisecond')"):
            c.execute(stmt)
        time.sleep(0.01)
        try:
            c.execute(ddl.replace("@", "public"))
        except psycopg.Error as e:
            print("hostile: %-70.70s  (refused: %s)" % (ddl, e.sqlstate))
            c.close()
            continue
        c.close()
        with shared.lock:
            shared.altered = ddl.replace("@", "public")
        answers = collections.Counter()
        s = conn_to(db)
        for stmt in BATTERY:
            off = log_size(args.server_log)
            try:
                s.execute(stmt)
                answers["ok"] += 1
            except psycopg.Error as e:
                msg = str(e)
                state = e.sqlstate
                if s.broken or state in ("57P01", "57P02"):
                    state = "CRASH"
                if s.info.transaction_status != 0 and not s.broken:
                    s.execute("ROLLBACK")
                shared.count(state or "CONN", stmt, None, msg)
                answers[state or "CONN"] += 1
                if state == "CRASH":
                    crashes += 1
                    time.sleep(1)
                    shared.fail("hostile: the server crashed\n  after: %s\n  at:    %s\n%s" % (
                        ddl.replace("@", "public"), stmt,
                        "\n".join("  log: " + l for l in check_log(args.server_log, off))))
                    break
        try:
            s.close()
        except Exception:
            pass
        with shared.lock:
            shared.altered = None
        print("hostile: %-70.70s  %s" % (ddl, " ".join("%s=%d" % kv for kv in sorted(answers.items()))))
    admin = conn_to(args.dbname)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
    admin.close()
    print("hostile: %d changes checked, %d crashes" % (len(HOSTILE_DDL), crashes))


def check_log(path, offset):
    """Lines of the server log after offset that show a crash or assertion."""
    found = []
    if not path:
        return found
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            for line in f:
                if any(p.search(line) for p in LOG_PATTERNS):
                    found.append(line.rstrip())
    except OSError as e:
        found.append("cannot read the server log %s: %s" % (path, e))
    return found


def log_size(path):
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def final_checks(args, shared):
    """The database still answers and the keys' primary key holds."""
    try:
        conn = connect(args, args.superuser, "idem_fuzz final")
    except psycopg.Error as e:
        shared.fail("final: cannot connect: %s" % e)
        return
    try:
        for gid, in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'fuzz-%'").fetchall():
            conn.execute("ROLLBACK PREPARED '%s'" % gid)
        nsp = conn.execute("""SELECT n.nspname FROM pg_extension e JOIN pg_namespace n
                               ON n.oid = e.extnamespace WHERE e.extname = 'idempotency'""").fetchone()
        if not nsp:
            conn.execute("CREATE EXTENSION idempotency")
            nsp = ("public",)
        t = sql.SQL("{}.idem_keys").format(sql.Identifier(nsp[0]))
        conn.execute("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off")
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()[0]
        # every btree index of the table finds each row once (an index
        # built beside uncommitted writes can point twice at one row)
        conn.execute("SET enable_seqscan = off; SET enable_indexscan = on; SET enable_indexonlyscan = on")
        for idx, col in conn.execute(sql.SQL("""
                SELECT i.indexrelid::regclass::text, a.attname
                  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                  JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = '{}'::regclass AND i.indisvalid AND i.indpred IS NULL""").format(
                sql.SQL(t.as_string(conn).replace("'", "''")))).fetchall():
            c = sql.Identifier(col)
            via = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {t} WHERE {c} IS NULL) + "
                                       "(SELECT count(*) FROM {t} WHERE {c} IS NOT NULL)").format(t=t, c=c)).fetchone()[0]
            if via != n:
                shared.fail("final: index %s finds %d rows, the table has %d: the index is corrupt" % (idx, via, n))
        conn.execute("RESET ALL")
        conn.execute(sql.SQL("REINDEX TABLE {}").format(t))
        # the API still works after all that
        claim = sql.SQL("{}.idem_claim").format(sql.Identifier(nsp[0]))
        out = conn.execute(sql.SQL("SELECT outcome::text FROM {}(key => 'fuzz-final-' || pg_backend_pid())").format(
            claim)).fetchone()[0]
        print("final: %d keys in idem_keys, REINDEX TABLE idem_keys succeeded, a new claim answered %s" % (n, out))
        if out != "claimed":
            shared.fail("final: a new key's claim answered %s" % out)
    except psycopg.Error as e:
        shared.fail("final check failed: %s" % e)
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser(description="Fuzz the idempotency extension's SQL API.")
    p.add_argument("--host", default=os.environ.get("PGHOST", "/tmp"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    p.add_argument("--dbname", default=os.environ.get("PGDATABASE", "postgres"))
    p.add_argument("--superuser", default="postgres")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--ops", type=int, default=None, help="operations per session")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--no-ddl", dest="ddl", action="store_false")
    p.add_argument("--ddl-pause", type=float, default=0.6, help="longest pause between DDL statements (s)")
    p.add_argument("--huge-max", type=int, default=4 * 1024 * 1024, help="longest huge text (chars)")
    p.add_argument("--statement-timeout", type=int, default=10, help="seconds")
    p.add_argument("--hang-seconds", type=int, default=90)
    p.add_argument("--server-log", default=None)
    p.add_argument("--setup", action="store_true")
    p.add_argument("--setup-only", action="store_true")
    p.add_argument("--fail-on-internal", action="store_true")
    p.add_argument("--hostile-ddl", dest="hostile_ddl", action="store_true",
                   help="the DDL session also breaks the table's expected shape (then repairs it)")
    p.add_argument("--hostile-check", action="store_true",
                   help="instead of the random run: each hostile change, then every function")
    p.add_argument("--keep-going", action="store_true", help="go on after a crash")
    p.add_argument("--trace", default=None)
    args = p.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big") % 1000000
    if not args.seconds and not args.ops:
        args.seconds = 30

    log_start = log_size(args.server_log)
    admin = connect(args, args.superuser, "idem_fuzz main")
    if args.setup or args.setup_only:
        setup(args, admin)
    if args.setup_only:
        admin.close()
        return 0
    shared = Shared(args)
    shared.max_prepared = int(admin.execute("SHOW max_prepared_transactions").fetchone()[0])
    version = admin.execute("SHOW server_version").fetchone()[0]
    api = Api(admin)
    print("idem_fuzz: seed=%d workers=%d %s ddl=%s hostile_ddl=%s server=%s extension schema=%s owner argument: %s"
          % (args.seed, args.workers,
             ("seconds=%g" % args.seconds) if args.seconds else ("ops=%d per session" % args.ops),
             args.ddl, args.hostile_ddl, version, api.schema,
             "(no extension yet)" if api.schema is None else
             "yes" if api.has("idem_claim", "owner") else "no (0.1 API)"), flush=True)
    admin.close()
    if args.hostile_check:
        t0 = time.time()
        hostile_check(args, shared)
        elapsed = time.time() - t0
        return report(args, shared, elapsed, log_start)

    all_roles = ["fuzz_app", "fuzz_group", "fuzz_member", "fuzz_admin", "fuzz_nopriv", args.superuser]
    owners = [None, "fuzz_app", "fuzz_group", "fuzz_member", "fuzz_admin", "fuzz_nopriv", args.superuser,
              "no_such_role", "public", "PUBLIC", "", "pg_monitor", "pg_database_owner", "r\u00f4le \"x\"",
              "x" * 100, "pg_signal_backend", "current_user", "session_user"]
    kinds = [
        (args.superuser, all_roles),
        ("fuzz_app", None),
        ("fuzz_member", ["fuzz_group"]),
        ("fuzz_admin", ["pg_monitor"]),
        ("fuzz_nopriv", None),
    ]
    sessions = []
    for i in range(args.workers):
        role, setrole = kinds[i % len(kinds)]
        s = Session(shared, "w%d-%s" % (i, role), role, args.seed * 1000 + i, owners, setrole)
        s.role_is_super = role == args.superuser
        sessions.append(s)
    threads = list(sessions)
    if args.ddl:
        threads.append(DdlSession(shared, args.seed * 1000 + 999, args.superuser))
    wd = Watchdog(shared, args.superuser)
    t0 = time.time()
    for t in threads:
        t.start()
    wd.start()
    try:
        for t in sessions:
            while t.is_alive():
                t.join(1)
                if not args.keep_going and any("lost its connection" in f for f in shared.failures):
                    shared.stop.set()
        shared.stop.set()
        for t in threads:
            t.join(120)
            if t.is_alive():
                shared.fail("thread %s did not stop: a hang" % t.name)
    except KeyboardInterrupt:
        shared.stop.set()
    elapsed = time.time() - t0
    return report(args, shared, elapsed, log_start)


def report(args, shared, elapsed, log_start):
    time.sleep(1)   # let the server write its log
    final_checks(args, shared)
    for line in check_log(args.server_log, log_start):
        shared.fail("server log: " + line)

    # the report
    print("\nidem_fuzz: %d operations in %.0f s, seed %d" % (shared.ops, elapsed, args.seed))
    print("SQLSTATEs seen (count, state, first message, first statement):")
    for state, n in shared.sqlstates.most_common():
        msg, stmt = shared.examples.get(state, ("", ""))
        print("  %7d  %s  %s\n                %s" % (n, state, msg[:150], " ".join(stmt.split())[:150]))
    print("successful statements: %d" % sum(shared.ok.values()))
    if shared.internal:
        print("\nINTERNAL ERRORS (XX000), distinct messages:")
        seen = set()
        for stmt, params, msg, altered in shared.internal:
            first = re.sub(r"\d+", "N", msg.splitlines()[0] if msg else "")
            if (first, altered) in seen:
                continue
            seen.add((first, altered))
            print("  XX000: %s\n    SQL: %s\n    params: %s\n    %s" % (
                msg.splitlines()[0] if msg else "", " ".join(stmt.split())[:500], params,
                "while the keys table was altered by: " + altered if altered else "(no hostile DDL in effect)"))
    for state in sorted(shared.notable):
        if state == "XX000":
            continue
        print("\nexamples of %s:" % state)
        for stmt, params, msg, altered in shared.notable[state][:8]:
            print("  %s: %s\n    SQL: %s\n    params: %s\n    %s" % (
                state, msg.splitlines()[0] if msg else "", " ".join(stmt.split())[:300], params,
                "while the keys table was altered by: " + altered if altered else "(no hostile DDL in effect)"))
    if shared.failures:
        print("\nFAILURES:")
        for f in shared.failures:
            print("  " + f)
        crashed = [n for n, h in shared.history.items()]
        print("\nlast statements of each session (time, backend pid, sql, params):")
        for name in crashed:
            print("  -- " + name)
            for ts, pid, stmt, params in list(shared.history[name])[-12:]:
                print("    %.3f %s %s %s" % (ts, pid, " ".join(stmt.split())[:400], params))
    if shared.trace:
        shared.trace.close()
    bad = bool(shared.failures) or (args.fail_on_internal and shared.internal)
    print("\nidem_fuzz: %s (seed %d; replay: --seed %d --workers %d %s%s)" % (
        "FAILED" if bad else "passed", args.seed, args.seed, args.workers,
        ("--seconds %g" % args.seconds) if args.seconds else ("--ops %d" % args.ops),
        " --hostile-ddl" if args.hostile_ddl else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
