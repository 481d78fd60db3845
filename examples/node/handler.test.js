// Runs handler.js against a real server.
//
// The connection comes from the libpq environment (PGHOST, PGPORT, PGUSER,
// PGDATABASE), in a database where ../schema.sql was loaded.
// Run: npm ci && npm test
'use strict';

const { test } = require('node:test');
const assert = require('node:assert');
const { Client } = require('pg');
const { createPayment } = require('./handler');

const BODY = { amount: 100, currency: 'EUR' };

async function connect() {
  const client = new Client();
  await client.connect();
  return client;
}

// a test with a connection of its own, closed at the end
function testWithClient(name, fn) {
  test(name, async () => {
    const client = await connect();
    try {
      await fn(client);
    } finally {
      await client.end();
    }
  });
}

async function count(client) {
  const { rows: [r] } = await client.query('SELECT count(*)::int AS n FROM payments');
  return r.n;
}

testWithClient('claimed, then replayed with the same response', async (client) => {
  const before = await count(client);
  const first = await createPayment(client, 'js-replay', BODY);
  assert.strictEqual(first.status, 201);
  assert.ok(first.body.id);
  assert.deepStrictEqual(await createPayment(client, 'js-replay', BODY), first);
  assert.strictEqual(await count(client), before + 1);
});

testWithClient('mismatch and missing key', async (client) => {
  await createPayment(client, 'js-mismatch', BODY);
  const r = await createPayment(client, 'js-mismatch', { amount: 999, currency: 'EUR' });
  assert.strictEqual(r.status, 422);
  assert.strictEqual((await createPayment(client, null, BODY)).status, 400);
});

testWithClient('replay of a NULL response', async (client) => {
  // a claim in autocommit mode is completed at once, with a NULL response
  await client.query("SELECT * FROM idem_claim(key => 'js-null')");
  assert.deepStrictEqual(await createPayment(client, 'js-null', BODY), { status: 204, body: null });
});

testWithClient('an error leaves the connection usable', async (client) => {
  await assert.rejects(createPayment(client, 'js-error', { amount: -1, currency: 'EUR' }),
    { code: '23514' });                             // check_violation
  const { rows: [r] } = await client.query('SELECT 1 AS one');
  assert.strictEqual(r.one, 1);
  // the claim rolled back with the failed write: a retry runs again
  const { rowCount } = await client.query("SELECT * FROM idem_lookup('js-error')");
  assert.strictEqual(rowCount, 0);
  assert.strictEqual((await createPayment(client, 'js-error', BODY)).status, 201);
});

testWithClient('a concurrent retry gets 409', async (client) => {
  const [first, retry, locker] = await Promise.all([connect(), connect(), connect()]);
  try {
    await retry.query("SET lock_timeout = '10s'");  // a retry that waits fails, not hangs
    // hold the first attempt between its claim and its INSERT
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE payments IN EXCLUSIVE MODE');
    const firstAttempt = createPayment(first, 'js-concurrent', BODY);
    let waiting = false;
    for (let i = 0; i < 500 && !waiting; i++) {
      const { rows: [r] } = await client.query(
        "SELECT wait_event_type = 'Lock' AS w FROM pg_stat_activity WHERE pid = $1",
        [first.processID]);
      waiting = r.w === true;
      if (!waiting) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(waiting, 'the first attempt never reached its INSERT');
    assert.strictEqual((await createPayment(retry, 'js-concurrent', BODY)).status, 409);
    await locker.query('COMMIT');
    const done = await firstAttempt;
    assert.strictEqual(done.status, 201);
    // once the first attempt committed, the retry replays its response
    assert.deepStrictEqual(await createPayment(retry, 'js-concurrent', BODY), done);
  } finally {
    await Promise.all([first.end(), retry.end(), locker.end()]);
  }
});
