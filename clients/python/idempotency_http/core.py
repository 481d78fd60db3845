"""The framework-independent part: parse the header, claim, replay, store.

An adapter turns its framework's request into a ``Request``, calls
``Idempotency.handle`` (or ``AsyncIdempotency.handle``) with a function that
runs the route's handler on the connection it is given, and turns the
``Response`` it gets back into its framework's response.

One request with a key is one transaction on one connection:

    BEGIN
    idem_claim(...)          claimed: run the handler on this connection
    ... the handler's writes ...
    idem_complete(...)       the response is kept (2xx, 4xx by default)
      or idem_release(...)   it is not (5xx by default): a retry runs again
    COMMIT

An exception in the handler rolls the transaction back, which removes the
claim (it was never committed) and the handler's writes with it.
"""
import hashlib
import json
import logging

from psycopg import sql

log = logging.getLogger("idempotency_http")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

# Response headers that a replay sends again; all others are dropped
# (Set-Cookie, Date, Server, Content-Length and friends must not be replayed).
DEFAULT_REPLAY_HEADERS = (
    "content-type",
    "content-language",
    "content-location",
    "location",
    "etag",
    "last-modified",
    "link",
)

_PROBLEM = "application/problem+json"


class InvalidKey(ValueError):
    """The Idempotency-Key header is not a valid sf-string."""


def parse_key(value):
    """Parse an Idempotency-Key field value as a Structured Field string.

    RFC 8941, section 4.2.5: a string is DQUOTE *( unescaped / "\\" ( DQUOTE
    / "\\" ) ) DQUOTE, where unescaped is a printable ASCII character other
    than DQUOTE and backslash.  Leading and trailing spaces around the item
    are allowed; parameters, tokens, byte sequences and lists are not.
    Returns the unescaped key, or raises InvalidKey.
    """
    s = value.strip(" ")
    if len(s) < 2 or s[0] != '"':
        raise InvalidKey("the Idempotency-Key header must be a quoted string")
    out = []
    i = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in '"\\':
                raise InvalidKey("only \\\" and \\\\ may be escaped in the key")
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            if i != len(s) - 1:
                raise InvalidKey("unexpected characters after the key's closing quote")
            return "".join(out)
        if not 0x20 <= ord(c) <= 0x7E:
            raise InvalidKey("the key may hold printable ASCII characters only")
        out.append(c)
        i += 1
    raise InvalidKey("the key has no closing quote")


def default_fingerprint(request):
    """SHA-256 over the method, the target (path and query) and the body."""
    h = hashlib.sha256()
    h.update(request.method.upper().encode("ascii", "replace"))
    h.update(b" ")
    h.update(request.target.encode("utf-8", "surrogateescape"))
    h.update(b"\n")
    h.update(request.body or b"")
    return h.hexdigest()


def default_scope(request):
    """One scope per route: "POST /payments/<id>" (the route's pattern)."""
    return "%s %s" % (request.method.upper(), request.route)


def default_store(status):
    """Keep 2xx and 4xx responses (and 1xx/3xx); release on 5xx."""
    return status < 500


class Request:
    """What the middleware needs of an HTTP request."""

    __slots__ = ("method", "path", "target", "route", "headers", "body", "native")

    def __init__(self, method, path, route, headers, body, query="", native=None):
        self.method = method
        self.path = path
        self.target = path + ("?" + query if query else "")
        self.route = route if route is not None else path
        self.headers = headers  # a mapping with case-insensitive get()
        self.body = body or b""
        self.native = native  # the framework's own request object


class Response:
    """A buffered HTTP response: status, [(name, value)], body bytes."""

    __slots__ = ("status", "headers", "body", "native")

    def __init__(self, status, headers=(), body=b"", native=None):
        self.status = int(status)
        self.headers = list(headers)
        self.body = bytes(body or b"")
        self.native = native  # the framework's response, when there is one

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def problem(status, title, detail=None, headers=()):
    doc = {"type": "about:blank", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    return Response(status, [("Content-Type", _PROBLEM)] + list(headers),
                    json.dumps(doc).encode())


class _Config:
    """Settings shared by the sync and the async middleware."""

    def __init__(self, pool, *, required=True, fingerprint=default_fingerprint,
                 scope=default_scope, store=default_store,
                 replay_headers=DEFAULT_REPLAY_HEADERS, wait_timeout=2.0,
                 retry_after=1, ttl=None, schema="public", owner=None,
                 max_key_length=255, header=HEADER):
        self.pool = pool
        self.required = required
        self.fingerprint = fingerprint
        self.scope = scope
        self.store = store
        self.replay_headers = frozenset(h.lower() for h in replay_headers)
        self.wait_timeout = float(wait_timeout)
        self.retry_after = retry_after
        self.ttl = ttl
        self.owner = owner
        self.max_key_length = max_key_length
        self.header = header
        self.schema = schema
        s = sql.Identifier(schema)
        # Schema-qualified, parameterised, one statement each: no session
        # state, so they work behind a transaction-pooling PgBouncer.
        self.claim_sql = sql.SQL(
            "SELECT outcome::text, response, body FROM {}.idem_claim("
            "key => %s, fingerprint => %s, ttl => %s::interval, scope => %s,"
            " wait => true, owner => %s, wait_timeout => %s::interval)").format(s)
        self.complete_sql = sql.SQL(
            "SELECT {}.idem_complete(key => %s, response => %s::jsonb,"
            " scope => %s, owner => %s, body => %s::bytea)").format(s)
        self.release_sql = sql.SQL(
            "SELECT {}.idem_release(key => %s, scope => %s, owner => %s)").format(s)

    def with_options(self, **overrides):
        """A copy with some settings changed (for one route)."""
        options = {k: getattr(self, k) for k in (
            "required", "fingerprint", "scope", "store", "replay_headers",
            "wait_timeout", "retry_after", "ttl", "schema", "owner",
            "max_key_length", "header")}
        options.update(overrides)
        return type(self)(self.pool, **options)

    # -- steps that do no I/O ------------------------------------------------

    def check(self, request):
        """Return (key, None) or (None, error response) or (None, None) when
        the request has no key on a route that does not require one."""
        raw = request.headers.get(self.header)
        if raw is None:
            if self.required:
                return None, problem(400, "Idempotency-Key header required",
                                     "this operation needs an Idempotency-Key header")
            return None, None
        try:
            key = parse_key(raw)
        except InvalidKey as e:
            return None, problem(400, "Invalid Idempotency-Key header", str(e))
        if not key:
            return None, problem(400, "Invalid Idempotency-Key header", "the key is empty")
        if len(key) > self.max_key_length:
            return None, problem(400, "Invalid Idempotency-Key header",
                                 "the key is longer than %d characters" % self.max_key_length)
        return key, None

    def claim_params(self, key, request):
        ttl = None if self.ttl is None else "%s seconds" % float(self.ttl)
        return (key, self.fingerprint(request), ttl, self.scope(request), self.owner,
                "%s seconds" % self.wait_timeout)

    def answer(self, outcome, response, body):
        """The HTTP answer for an outcome other than 'claimed'."""
        if outcome == "replay":
            if response is None:  # completed without a response being kept
                resp = Response(204)
            else:
                headers = [(k, v) for k, v in (response.get("headers") or {}).items()]
                resp = Response(response.get("status", 200), headers,
                                bytes(body) if body is not None else b"")
            resp.headers.append((REPLAYED_HEADER, "true"))
            return resp
        if outcome == "in_progress":
            return problem(409, "Request in progress",
                           "a request with this Idempotency-Key is being processed",
                           [("Retry-After", str(self.retry_after))])
        if outcome == "mismatch":
            return problem(422, "Idempotency-Key reused",
                           "this Idempotency-Key was used with a different request")
        raise RuntimeError("unexpected outcome %r" % outcome)

    def stored(self, resp):
        headers = {}
        for k, v in resp.headers:
            k = k.lower()
            if k in self.replay_headers:
                headers[k] = headers[k] + ", " + v if k in headers else v
        return json.dumps({"status": resp.status, "headers": headers})

    def unavailable(self):
        return problem(503, "Idempotency store unavailable",
                       "the request could not be recorded; retry it with the same key",
                       [("Retry-After", str(self.retry_after))])


class Idempotency(_Config):
    """The middleware for synchronous frameworks (WSGI).

    ``pool`` has ``getconn()`` and ``putconn(conn)`` (``idempotency_http.Pool``
    or ``psycopg_pool.ConnectionPool``); its connections are not in
    autocommit mode.
    """

    def handle(self, request, handler):
        """Run ``handler(conn_or_None) -> Response`` at most once per key."""
        key, error = self.check(request)
        if error is not None:
            return error
        if key is None:
            return handler(None)
        pool = self.pool
        for retry in (True, False):
            try:
                conn = pool.getconn()
            except Exception:
                log.exception("no database connection")
                return self.unavailable()
            try:
                return self._run(conn, key, request, handler, retry)
            except _Retry:
                continue  # the connection was broken before the claim: nothing happened
            finally:
                _putconn(pool, conn)

    def _run(self, conn, key, request, handler, retry):
        scope = self.scope(request)
        try:
            outcome, response, body = conn.execute(
                self.claim_sql, self.claim_params(key, request)).fetchone()
        except Exception:
            if retry and conn.broken:
                raise _Retry()
            log.exception("idem_claim failed")
            _rollback(conn)
            return self.unavailable()
        if outcome != "claimed":
            _rollback(conn)  # nothing was written
            return self.answer(outcome, response, body)
        try:
            resp = handler(conn)
        except BaseException:
            _rollback(conn)  # the claim and the handler's writes go together
            raise
        try:
            if self.store(resp.status):
                conn.execute(self.complete_sql,
                             (key, self.stored(resp), scope, self.owner, resp.body))
            else:
                conn.execute(self.release_sql, (key, scope, self.owner))
            conn.commit()
        except Exception:
            log.exception("could not record the response")
            _rollback(conn)
            return self.unavailable()
        return resp


class AsyncIdempotency(_Config):
    """The middleware for asyncio frameworks (ASGI), on psycopg's
    AsyncConnection; ``pool`` has ``async getconn()`` and ``async putconn()``
    (``idempotency_http.AsyncPool`` or ``psycopg_pool.AsyncConnectionPool``)."""

    async def handle(self, request, handler):
        key, error = self.check(request)
        if error is not None:
            return error
        if key is None:
            return await handler(None)
        pool = self.pool
        for retry in (True, False):
            try:
                conn = await pool.getconn()
            except Exception:
                log.exception("no database connection")
                return self.unavailable()
            try:
                return await self._run(conn, key, request, handler, retry)
            except _Retry:
                continue  # the connection was broken before the claim: nothing happened
            finally:
                await _aputconn(pool, conn)

    async def _run(self, conn, key, request, handler, retry):
        scope = self.scope(request)
        try:
            cur = await conn.execute(self.claim_sql, self.claim_params(key, request))
            outcome, response, body = await cur.fetchone()
        except Exception:
            if retry and conn.broken:
                raise _Retry()
            log.exception("idem_claim failed")
            await _arollback(conn)
            return self.unavailable()
        if outcome != "claimed":
            await _arollback(conn)
            return self.answer(outcome, response, body)
        try:
            resp = await handler(conn)
        except BaseException:
            await _arollback(conn)
            raise
        try:
            if self.store(resp.status):
                await conn.execute(self.complete_sql,
                                   (key, self.stored(resp), scope, self.owner, resp.body))
            else:
                await conn.execute(self.release_sql, (key, scope, self.owner))
            await conn.commit()
        except Exception:
            log.exception("could not record the response")
            await _arollback(conn)
            return self.unavailable()
        return resp


class _Retry(Exception):
    """The claim met a connection that was already broken: try another."""


def _rollback(conn):
    try:
        conn.rollback()
    except Exception:
        pass  # a broken connection: the pool drops it


async def _arollback(conn):
    try:
        await conn.rollback()
    except Exception:
        pass


def _putconn(pool, conn):
    try:
        pool.putconn(conn)
    except Exception:
        log.exception("could not return a connection to the pool")


async def _aputconn(pool, conn):
    try:
        await pool.putconn(conn)
    except Exception:
        log.exception("could not return a connection to the pool")
