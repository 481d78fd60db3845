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

async function create(req, res, client) {
  const doc = JSON.parse(req.rawBody.length ? req.rawBody.toString('utf8') : '{}');
  if (req.get('X-Status')) {
    res.status(Number(req.get('X-Status'))).end();
    return;
  }
  const { rows: [p] } = await client.query(
    'INSERT INTO payments (ref, amount) VALUES ($1, $2) RETURNING id', [doc.ref, doc.amount ?? 0]);
  const sleep = Number(req.get('X-Sleep') || 0);
  if (sleep) await new Promise((r) => { setTimeout(r, sleep * 1000); });
  if (req.get('X-Fail') === '1') throw new Error('the handler failed');
  res.status(201).set({ Location: `/payments/${p.id}`, 'X-Secret': 'not replayed' });
  if (doc.bin !== undefined) {
    res.type('application/octet-stream').send(Buffer.from(doc.bin, 'hex'));
  } else {
    res.json({ id: Number(p.id), ref: doc.ref });
  }
}

app.post('/payments', idem.express((req, res) => create(req, res, req.idempotency.client)));

app.post('/plain', express.raw({ type: '*/*' }), async (req, res) => {
  req.rawBody = req.body;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await create(req, res, client);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  res.status(500).json({ error: err.message });
});

app.listen(Number(process.env.PORT), '127.0.0.1');
