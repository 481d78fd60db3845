'use strict';
// The Express test app: the same routes as the Python apps (see common.py).
const path = require('node:path');

const nodeDir = path.join(__dirname, '..', '..', 'node');
const express = require(path.join(nodeDir, 'node_modules', 'express'));
const { Pool } = require(path.join(nodeDir, 'node_modules', 'pg'));
const { Idempotency } = require(nodeDir);

const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
const idem = new Idempotency(pool);
const app = express();

// Returns [status, headers, body] after one insert through client
async function create(req, client) {
  const doc = JSON.parse(req.rawBody.length ? req.rawBody.toString('utf8') : '{}');
  if (req.get('X-Status')) return [Number(req.get('X-Status')), {}, ''];
  const { rows: [p] } = await client.query(
    'INSERT INTO payments (ref, amount) VALUES ($1, $2) RETURNING id', [doc.ref, doc.amount ?? 0]);
  const sleep = Number(req.get('X-Sleep') || 0);
  if (sleep) await new Promise((r) => { setTimeout(r, sleep * 1000); });
  if (req.get('X-Fail') === '1') throw new Error('the handler failed');
  const headers = { Location: `/payments/${p.id}`, 'X-Secret': 'not replayed' };
  if (doc.bin !== undefined) {
    headers['Content-Type'] = 'application/octet-stream';
    return [201, headers, Buffer.from(doc.bin, 'hex')];
  }
  headers['Content-Type'] = 'application/json';
  return [201, headers, JSON.stringify({ id: Number(p.id), ref: doc.ref })];
}

function send(res, [status, headers, body]) {
  res.status(status).set(headers).send(body);
}

app.post('/payments', idem.express(async (req, res) => {
  send(res, await create(req, req.idempotency.client));
}));

// The same handler without the middleware, in a transaction of its own
app.post('/plain', express.raw({ type: '*/*' }), async (req, res) => {
  req.rawBody = req.body;
  const client = await pool.connect();
  let out;
  try {
    await client.query('BEGIN');
    out = await create(req, client);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
  send(res, out);
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  res.status(500).json({ error: err.message });
});

app.listen(Number(process.env.PORT), '127.0.0.1');
