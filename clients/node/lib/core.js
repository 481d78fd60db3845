'use strict';
// The framework-independent part: parse the header, claim, replay, store.
//
// One request with a key is one transaction on one pool client:
//   BEGIN; idem_claim(...); the handler's writes; idem_complete(...) or
//   idem_release(...); COMMIT
// An exception in the handler rolls the transaction back, which removes the
// claim (it was never committed) and the handler's writes with it.

const crypto = require('node:crypto');

const HEADER = 'idempotency-key';
const REPLAYED_HEADER = 'Idempotent-Replayed';
const DEFAULT_REPLAY_HEADERS = [
  'content-type', 'content-language', 'content-location', 'location', 'etag',
  'last-modified', 'link',
];

class InvalidKey extends Error {}

// RFC 8941, 4.2.5: DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE,
// unescaped being printable ASCII other than DQUOTE and "\".  Spaces around
// the item are allowed; parameters, tokens, byte sequences and lists are not.
function parseKey(value) {
  const s = String(value).replace(/^ +| +$/g, '');
  if (s.length < 2 || s[0] !== '"') {
    throw new InvalidKey('the Idempotency-Key header must be a quoted string');
  }
  let out = '';
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') {
      if (i + 1 >= s.length || (s[i + 1] !== '"' && s[i + 1] !== '\\')) {
        throw new InvalidKey('only \\" and \\\\ may be escaped in the key');
      }
      out += s[++i];
    } else if (c === '"') {
      if (i !== s.length - 1) throw new InvalidKey("unexpected characters after the key's closing quote");
      return out;
    } else {
      const code = c.charCodeAt(0);
      if (code < 0x20 || code > 0x7e) throw new InvalidKey('the key may hold printable ASCII characters only');
      out += c;
    }
  }
  throw new InvalidKey('the key has no closing quote');
}

// SHA-256 over the method, the target (path and query) and the body
function defaultFingerprint(request) {
  return crypto.createHash('sha256')
    .update(`${request.method.toUpperCase()} ${request.target}\n`)
    .update(request.body || Buffer.alloc(0))
    .digest('hex');
}

// One scope per route: "POST /payments/:id"
function defaultScope(request) {
  return `${request.method.toUpperCase()} ${request.route}`;
}

// Keep 2xx and 4xx responses (and 1xx/3xx); release on 5xx
function defaultStore(status) {
  return status < 500;
}

function problem(status, title, detail, headers = {}) {
  const doc = { type: 'about:blank', title, status };
  if (detail) doc.detail = detail;
  return {
    status,
    headers: { 'content-type': 'application/problem+json', ...headers },
    body: Buffer.from(JSON.stringify(doc)),
  };
}

function quoteIdent(name) {
  return `"${String(name).replace(/"/g, '""')}"`;
}

const OPTIONS = ['required', 'fingerprint', 'scope', 'store', 'replayHeaders', 'waitTimeout',
  'retryAfter', 'ttl', 'schema', 'owner', 'maxKeyLength', 'onError'];

class Idempotency {
  // pool: a pg.Pool.  Every option is optional.
  constructor(pool, {
    required = true, fingerprint = defaultFingerprint, scope = defaultScope, store = defaultStore,
    replayHeaders = DEFAULT_REPLAY_HEADERS, waitTimeout = 2, retryAfter = 1, ttl = null,
    schema = 'public', owner = null, maxKeyLength = 255,
    onError = (err) => console.error('idempotency:', err.message),
  } = {}) {
    this.pool = pool;
    Object.assign(this, {
      required, fingerprint, scope, store, waitTimeout, retryAfter, ttl, schema, owner,
      maxKeyLength, onError,
    });
    this.replayHeaders = replayHeaders.map((h) => h.toLowerCase());
    const s = quoteIdent(schema);
    // Schema-qualified, parameterised, unnamed statements: no session state,
    // so they work behind a transaction-pooling PgBouncer.
    this.claimSql = `SELECT outcome::text AS outcome, response, body FROM ${s}.idem_claim(`
      + 'key => $1, fingerprint => $2, ttl => $3::interval, scope => $4, wait => true,'
      + ' owner => $5::name, wait_timeout => $6::interval)';
    this.completeSql = `SELECT ${s}.idem_complete(key => $1, response => $2::jsonb, scope => $3,`
      + ' owner => $4::name, body => $5::bytea)';
    this.releaseSql = `SELECT ${s}.idem_release(key => $1, scope => $2, owner => $3::name)`;
    // An idle client whose connection breaks emits 'error' on the pool; with
    // no listener that would end the process.
    if (pool && typeof pool.on === 'function' && !pool.__idempotencyListening) {
      pool.on('error', (err) => this.onError(err));
      pool.__idempotencyListening = true;
    }
  }

  // A copy with some settings changed (for one route)
  with(overrides) {
    const options = {};
    for (const k of OPTIONS) options[k] = this[k];
    return new this.constructor(this.pool, { ...options, ...overrides });
  }

  // Returns { key } or { error: response } or {} (no key, not required)
  check(request) {
    const raw = request.headers[HEADER];
    if (raw === undefined) {
      if (this.required) {
        return {
          error: problem(400, 'Idempotency-Key header required',
            'this operation needs an Idempotency-Key header'),
        };
      }
      return {};
    }
    let key;
    try {
      key = parseKey(Array.isArray(raw) ? raw.join(', ') : raw);
    } catch (err) {
      if (err instanceof InvalidKey) return { error: problem(400, 'Invalid Idempotency-Key header', err.message) };
      throw err;
    }
    if (key === '') return { error: problem(400, 'Invalid Idempotency-Key header', 'the key is empty') };
    if (key.length > this.maxKeyLength) {
      return {
        error: problem(400, 'Invalid Idempotency-Key header',
          `the key is longer than ${this.maxKeyLength} characters`),
      };
    }
    return { key };
  }

  answer(outcome, response, body) {
    if (outcome === 'replay') {
      const out = response === null
        ? { status: 204, headers: {}, body: Buffer.alloc(0) } // completed, nothing kept
        : {
          status: response.status ?? 200,
          headers: { ...(response.headers || {}) },
          body: body ?? Buffer.alloc(0),
        };
      out.headers[REPLAYED_HEADER] = 'true';
      return out;
    }
    if (outcome === 'in_progress') {
      return problem(409, 'Request in progress', 'a request with this Idempotency-Key is being processed',
        { 'retry-after': String(this.retryAfter) });
    }
    if (outcome === 'mismatch') {
      return problem(422, 'Idempotency-Key reused', 'this Idempotency-Key was used with a different request');
    }
    throw new Error(`unexpected outcome ${outcome}`);
  }

  unavailable() {
    return problem(503, 'Idempotency store unavailable',
      'the request could not be recorded; retry it with the same key',
      { 'retry-after': String(this.retryAfter) });
  }

  stored(response) {
    const headers = {};
    for (const [name, value] of Object.entries(response.headers || {})) {
      const k = name.toLowerCase();
      if (!this.replayHeaders.includes(k) || value === undefined) continue;
      const v = Array.isArray(value) ? value.join(', ') : String(value);
      headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
    }
    return JSON.stringify({ status: response.status, headers });
  }

  // request: { method, target, route, headers (lower-case names), body: Buffer }
  // handler(client or null) -> Promise<{ status, headers, body: Buffer }>
  // Resolves to the response to send; rejects with the handler's error.
  async handle(request, handler) {
    const { key, error } = this.check(request);
    if (error) return error;
    if (key === undefined) return handler(null);
    let client;
    try {
      client = await this.pool.connect();
    } catch (err) {
      this.onError(err);
      return this.unavailable();
    }
    // A checked-out client whose connection breaks emits 'error': without a
    // listener the process would crash.  The query in flight rejects too.
    const state = { broken: null };
    const onClientError = (err) => { state.broken = err; this.onError(err); };
    client.on('error', onClientError);
    try {
      return await this.run(client, key, request, handler, state);
    } finally {
      client.removeListener('error', onClientError);
      client.release(state.broken || undefined); // a broken client is destroyed
    }
  }

  async run(client, key, request, handler, state) {
    const scope = this.scope(request);
    let claim;
    try {
      await client.query('BEGIN');
      const ttl = this.ttl === null ? null : `${Number(this.ttl)} seconds`;
      ({ rows: [claim] } = await client.query(this.claimSql, [
        key, this.fingerprint(request), ttl, scope, this.owner, `${Number(this.waitTimeout)} seconds`]));
    } catch (err) {
      this.onError(err);
      await rollback(client, state);
      return this.unavailable();
    }
    if (claim.outcome !== 'claimed') {
      await rollback(client, state); // nothing was written
      return this.answer(claim.outcome, claim.response, claim.body);
    }
    let response;
    try {
      response = await handler(client);
    } catch (err) {
      await rollback(client, state); // the claim and the handler's writes go together
      throw err;
    }
    try {
      if (this.store(response.status)) {
        await client.query(this.completeSql, [key, this.stored(response), scope, this.owner, response.body]);
      } else {
        await client.query(this.releaseSql, [key, scope, this.owner]);
      }
      await client.query('COMMIT');
    } catch (err) {
      this.onError(err);
      await rollback(client, state);
      return this.unavailable();
    }
    return response;
  }
}

async function rollback(client, state) {
  try {
    await client.query('ROLLBACK');
  } catch (err) {
    state.broken = state.broken || err; // do not reuse this client
  }
}

module.exports = {
  Idempotency, InvalidKey, parseKey, defaultFingerprint, defaultScope, defaultStore,
  DEFAULT_REPLAY_HEADERS, REPLAYED_HEADER,
};
