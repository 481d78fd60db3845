"""Drive one test app over real HTTP and check the database's effects.

    driver.py NAME PORT DSN -- COMMAND...

Starts COMMAND (the app server, listening on 127.0.0.1:PORT, in a session
of its own so that kill -9 reaches all of its processes), runs the cases,
stops it.  DSN reaches the database directly, to count effects.  Prints
"ok NAME: CASE" or "FAILED NAME: CASE (why)" per case.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg

NAME, PORT, DSN = sys.argv[1], int(sys.argv[2]), sys.argv[3]
COMMAND = sys.argv[sys.argv.index("--") + 1:]
RUN = uuid.uuid4().hex[:8]  # keys and refs of this run
server = None


def start():
    global server
    server = subprocess.Popen(COMMAND, start_new_session=True,
                              stdout=open("server-%s.log" % NAME, "ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited with %s" % server.returncode)
        try:
            http.client.HTTPConnection("127.0.0.1", PORT, timeout=1).connect()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not listen on port %d" % PORT)


def kill():
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()
    # until the workers are gone too: one that still holds the listening socket
    # would accept the next connection, and reset it
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def stop():
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        kill()


def post(key, doc=None, headers=None, raw_key=False, body=None, path="/payments"):
    """POST and return (status, {lower-case header: value}, body bytes)."""
    h = {"Content-Type": "application/json"}
    if key is not None:
        h["Idempotency-Key"] = key if raw_key else '"%s"' % key
    h.update(headers or {})
    if body is None:
        body = json.dumps(doc).encode()
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    try:
        c.request("POST", path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def effects(ref):
    with psycopg.connect(DSN, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM payments WHERE ref = %s", (ref,)).fetchone()[0]


def db_one(query, *args):
    with psycopg.connect(DSN, autocommit=True) as conn:
        return conn.execute(query, args).fetchone()


passed = failed = 0


def case(name):
    def wrap(fn):
        global passed, failed
        try:
            fn()
            print("ok %s: %s" % (NAME, name), flush=True)
            passed += 1
        except Exception as e:  # AssertionError and the unexpected alike
            print("FAILED %s: %s (%s: %s)" % (NAME, name, type(e).__name__, e), flush=True)
            failed += 1
        return fn
    return wrap


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def k(name):
    return "%s-%s-%s" % (NAME, RUN, name)


def main():
    start()
    try:
        cases()
    finally:
        stop()
    print("RESULT %d %d" % (passed, failed))


def cases():
    @case("a retry replays the first response, and the effect happens once")
    def _():
        key = ref = k("replay")
        doc = {"ref": ref, "amount": 100}
        s1, h1, b1 = post(key, doc)
        eq(s1, 201, "first status")
        eq("idempotent-replayed" in h1, False, "replay header on the first answer")
        s2, h2, b2 = post(key, doc)
        eq(s2, 201, "replay status")
        eq(h2.get("idempotent-replayed"), "true", "Idempotent-Replayed")
        eq(b2, b1, "replayed body")
        eq(h2.get("location"), h1.get("location"), "replayed Location")
        eq(h2.get("content-type", "").split(";")[0], "application/json", "replayed Content-Type")
        eq("x-secret" in h2, False, "a header outside the allow-list replayed")
        eq(effects(ref), 1, "effects")
        eq(db_one("SELECT scope FROM idem_keys WHERE key = %s", key), ("POST /payments",), "scope")

    @case("the same key with another body is 422, with no effect")
    def _():
        key = k("mismatch")
        eq(post(key, {"ref": key, "amount": 1})[0], 201, "first status")
        s, h, _b = post(key, {"ref": key, "amount": 2})
        eq(s, 422, "status")
        eq(effects(key), 1, "effects")

    @case("a missing key is 400, with no effect")
    def _():
        ref = k("nokey")
        eq(post(None, {"ref": ref})[0], 400, "status")
        eq(effects(ref), 0, "effects")

    @case("keys that are not an sf-string are 400, with no effect")
    def _():
        ref = k("badkey")
        bad = ["abc", '"abc', 'abc"', '"a\\nb"', ":YWJj:", '"abc";p=1', '"a", "b"', '""',
               '"%s"' % ("x" * 256), "?1", "1"]
        for raw in bad:
            s = post(raw, {"ref": ref}, raw_key=True)[0]
            eq(s, 400, "status for %r" % raw)
        eq(effects(ref), 0, "effects")

    @case("an sf-string key is unescaped: \\\" and \\\\")
    def _():
        ref = k("escaped")
        raw = ' "%s-q\\"b\\\\s" ' % ref
        eq(post(raw, {"ref": ref}, raw_key=True)[0], 201, "status")
        s, h, _b = post(raw, {"ref": ref}, raw_key=True)
        eq((s, h.get("idempotent-replayed")), (201, "true"), "replay")
        eq(db_one("SELECT count(*) FROM idem_keys WHERE key = %s", ref + '-q"b\\s'), (1,),
           "stored key")
        eq(effects(ref), 1, "effects")

    @case("a binary body is replayed byte for byte")
    def _():
        key = k("bytes")
        blob = bytes(range(256)) + b"\xff\xfe\x00\x80\xc3\x28\r\n"
        doc = {"ref": key, "bin": blob.hex()}
        s1, h1, b1 = post(key, doc)
        eq((s1, b1), (201, blob), "first answer")
        s2, h2, b2 = post(key, doc)
        eq((s2, b2), (201, blob), "replay")
        eq(h2.get("content-type"), "application/octet-stream", "replayed Content-Type")
        eq(h2.get("idempotent-replayed"), "true", "Idempotent-Replayed")
        eq(effects(key), 1, "effects")

    @case("50 concurrent requests on one key: one effect, the others replay or get 409")
    def _():
        key = k("race")
        doc = {"ref": key}
        results = [None] * 50
        go = threading.Barrier(50)

        def one(i):
            go.wait()
            try:
                results[i] = post(key, doc, {"X-Sleep": "0.5"})
            except Exception as e:
                results[i] = (0, {}, repr(e).encode())

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fresh = [r for r in results if r[0] == 201 and "idempotent-replayed" not in r[1]]
        replayed = [r for r in results
                    if r[0] == 201 and r[1].get("idempotent-replayed") == "true"]
        busy = [r for r in results if r[0] == 409]
        others = [r[:1] + r[2:] for r in results if r[0] not in (201, 409)]
        eq(others, [], "answers other than 201 and 409")
        eq(len(fresh), 1, "first answers")
        eq(all(r[2] == fresh[0][2] for r in replayed), True, "replays equal the first answer")
        eq(all(r[1].get("retry-after") for r in busy), True, "Retry-After on every 409")
        eq(effects(key), 1, "effects")
        print("    %s: 1 first, %d replayed, %d 409" % (NAME, len(replayed), len(busy)))

    @case("a retry while the first attempt runs past the bounded wait gets 409, Retry-After")
    def _():
        key = k("busy")
        doc = {"ref": key}
        first = []
        t = threading.Thread(target=lambda: first.append(post(key, doc, {"X-Sleep": "3.5"})))
        t.start()
        wait_for_handler()
        t0 = time.time()
        s, h, _b = post(key, doc)
        waited = time.time() - t0
        eq((s, bool(h.get("retry-after"))), (409, True), "the retry's answer")
        eq(1.5 < waited < 3.4, True, "it waited about wait_timeout (%.2f s)" % waited)
        t.join()
        eq((first[0][0], "idempotent-replayed" in first[0][1]), (201, False), "the first answer")
        eq(post(key, doc)[1].get("idempotent-replayed"), "true", "then a replay")
        eq(effects(key), 1, "effects")

    @case("a handler that raises releases the key; the retry runs once")
    def _():
        key = k("raise")
        doc = {"ref": key}
        s = post(key, doc, {"X-Fail": "1"})[0]
        eq(s >= 500, True, "status of the failure (%d)" % s)
        eq(effects(key), 0, "effects after the failure")
        s, h, _b = post(key, doc)
        eq((s, "idempotent-replayed" in h), (201, False), "the retry runs")
        s, h, _b = post(key, doc)
        eq((s, h.get("idempotent-replayed")), (201, "true"), "then replays")
        eq(effects(key), 1, "effects")

    @case("a 5xx answer is not kept: the retry runs again")
    def _():
        key = k("status503")
        doc = {"ref": key}
        eq(post(key, doc, {"X-Status": "503"})[0], 503, "first status")
        s, h, _b = post(key, doc)
        eq((s, "idempotent-replayed" in h), (201, False), "the retry runs")
        eq(effects(key), 1, "effects")

    @case("a 4xx answer is kept and replayed")
    def _():
        key = k("status404")
        doc = {"ref": key}
        eq(post(key, doc, {"X-Status": "404"})[0], 404, "first status")
        s, h, _b = post(key, doc)
        eq((s, h.get("idempotent-replayed")), (404, "true"), "the replay")
        eq(effects(key), 0, "effects")

    @case("the database drops the app's connections: the app survives, a retry succeeds")
    def _():
        key = k("dropped")
        doc = {"ref": key}
        eq(post(k("warm"), {"ref": k("warm")})[0], 201, "a request that fills the pool")
        db_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
               " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        time.sleep(0.3)
        answers = []
        for _i in range(5):
            s, h, _b = post(key, doc)
            answers.append(s)
            if s == 201:
                break
            time.sleep(0.2)
        eq(server.poll(), None, "the server process is alive")
        eq(answers[-1], 201, "answers %r" % answers)
        eq(set(answers[:-1]) <= {503}, True, "answers before the success %r" % answers)
        eq(effects(key), 1, "effects")

    @case("the database drops the connection mid-request: 503, the app survives, one effect")
    def _():
        key = k("cut")
        doc = {"ref": key}
        first = []
        t = threading.Thread(target=lambda: first.append(_try(post, key, doc, {"X-Sleep": "1.5"})))
        t.start()
        wait_for_handler()
        db_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
               " WHERE state = 'idle in transaction' AND query LIKE 'INSERT INTO payments%%'")
        t.join()
        eq(first[0][0] if isinstance(first[0], tuple) else first[0], 503, "the first answer")
        eq(server.poll(), None, "the server process is alive")
        eq(effects(key), 0, "effects after the cut")
        s, h, _b = post(key, doc)
        eq((s, "idempotent-replayed" in h), (201, False), "the retry runs")
        eq(effects(key), 1, "effects")

    @case("kill -9 of the server mid-request, then a retry: one effect")
    def _():
        key = k("kill")
        doc = {"ref": key}
        first = []
        t = threading.Thread(target=lambda: first.append(_try(post, key, doc, {"X-Sleep": "5"})))
        t.start()
        wait_for_handler()
        kill()
        t.join()
        eq(isinstance(first[0], Exception), True, "the first request failed")
        start()
        deadline = time.time() + 20
        while True:  # as a client would: again on 409, or on a refused connection
            answer = _try(post, key, doc)
            if isinstance(answer, OSError) and time.time() < deadline:
                time.sleep(0.2)
                continue
            s, h, _b = answer
            if s != 409 or time.time() > deadline:
                break
            time.sleep(float(h.get("retry-after", "1")) / 4)
        eq((s, "idempotent-replayed" in h), (201, False), "the retry runs")
        eq(post(key, doc)[1].get("idempotent-replayed"), "true", "then replays")
        eq(effects(key), 1, "effects")


def wait_for_handler():
    """Until a handler has written its row and sleeps, uncommitted."""
    deadline = time.time() + 10
    while time.time() < deadline:
        if db_one("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                  " AND query LIKE 'INSERT INTO payments%%'")[0]:
            return
        time.sleep(0.05)
    raise AssertionError("no handler started")


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return e


if __name__ == "__main__":
    main()
