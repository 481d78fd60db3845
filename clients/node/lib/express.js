'use strict';
// Express adapter: wrap a route handler.
//
//   app.post('/payments', idem.express(async (req, res) => {
//     await req.idempotency.client.query('INSERT ...');   // same transaction
//     res.status(201).json({ id: 1 });
//   }));
//
// The handler answers through `res` as usual; the response is buffered until
// it ends, recorded, committed, and only then sent.

// The raw request body: express.raw()'s Buffer, req.rawBody (set it in
// express.json({ verify: (req, res, buf) => { req.rawBody = buf; } })), or
// the stream itself when no body parser read it (JSON bodies are then parsed
// into req.body).
async function rawBody(req) {
  if (Buffer.isBuffer(req.rawBody)) return req.rawBody;
  if (Buffer.isBuffer(req.body)) return req.body;
  if (req.body !== undefined || req.readableEnded || req.complete) {
    return req.body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(req.body));
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const buf = Buffer.concat(chunks);
  req.rawBody = buf;
  if (buf.length && /^application\/([a-z.+-]*\+)?json\b/i.test(req.headers['content-type'] || '')) {
    req.body = JSON.parse(buf.toString('utf8'));
  }
  return buf;
}

// Run fn(req, res, next) and resolve with its buffered response, without
// sending anything; reject if it throws or calls next(err).
function capture(req, res, fn) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const add = (chunk, encoding) => {
      if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
      chunks.push(Buffer.isBuffer(chunk) ? chunk
        : Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8'));
    };
    res.writeHead = function writeHead(status, reason, headers) {
      res.statusCode = status;
      const h = typeof reason === 'object' ? reason : headers;
      if (h) for (const [k, v] of Object.entries(h)) res.setHeader(k, v);
      return res;
    };
    res.write = function write(chunk, encoding, cb) {
      add(chunk, encoding);
      if (typeof encoding === 'function') encoding();
      else if (typeof cb === 'function') cb();
      return true;
    };
    res.end = function end(chunk, encoding, cb) {
      add(chunk, encoding);
      const done = [chunk, encoding, cb].find((a) => typeof a === 'function');
      resolve({
        status: res.statusCode, headers: res.getHeaders(), body: Buffer.concat(chunks), fromHandler: true,
      });
      if (done) process.nextTick(done);
      return res;
    };
    const next = (err) => reject(err || new Error('the idempotent handler called next() without answering'));
    Promise.resolve().then(() => fn(req, res, next)).catch(reject);
  });
}

function restore(res) {
  delete res.writeHead;
  delete res.write;
  delete res.end;
}

function send(res, out) {
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.statusCode = out.status;
  for (const [k, v] of Object.entries(out.headers)) res.setHeader(k, v);
  res.end(out.body);
}

function expressAdapter(idem) {
  return function express(fn, overrides) {
    const core = overrides ? idem.with(overrides) : idem;
    return async function idempotent(req, res, next) {
      let body;
      try {
        body = await rawBody(req);
      } catch (err) {
        next(err);
        return;
      }
      const request = {
        method: req.method,
        target: req.originalUrl,
        route: `${req.baseUrl || ''}${req.route ? req.route.path : req.path}`,
        headers: req.headers,
        body,
      };
      let out;
      try {
        out = await core.handle(request, async (client) => {
          req.idempotency = { client };
          try {
            return await capture(req, res, fn);
          } finally {
            restore(res);
          }
        });
      } catch (err) {
        next(err); // the transaction was rolled back: the key is free again
        return;
      }
      if (out.fromHandler) {
        res.end(out.body); // its status and headers are already set on res
      } else {
        send(res, out);
      }
    };
  };
}

module.exports = { expressAdapter, rawBody };
