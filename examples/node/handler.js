// A request handler that creates a payment at most once per idempotency key.
//
// pg (node-postgres); `client` is a pg.Client, or a client checked out of a
// pg.Pool, used by one request at a time.  The tables are in ../schema.sql.
'use strict';

async function createPayment(client, key, body) {
  if (!key) return { status: 400, body: { error: 'Idempotency-Key header required' } };
  await client.query('BEGIN');                      // one transaction: claim, write, complete
  try {
    const { rows: [c] } = await client.query(
      `SELECT outcome::text, response
         FROM idem_claim(key => $1, fingerprint => idem_fingerprint($2::jsonb), wait => false)`,
      [key, JSON.stringify(body)]);
    let result;
    if (c.outcome === 'replay') {
      result = c.response ?? { status: 204, body: null };  // NULL: done before, nothing kept
    } else if (c.outcome === 'in_progress') {
      result = { status: 409, body: { error: 'a request with this key is in progress' } };
    } else if (c.outcome === 'mismatch') {
      result = { status: 422, body: { error: 'this key was used with a different request' } };
    } else {
      const { rows: [p] } = await client.query(
        'INSERT INTO payments (amount, currency) VALUES ($1, $2) RETURNING id',
        [body.amount, body.currency]);
      result = { status: 201, body: { id: p.id } };
      await client.query('SELECT idem_complete(key => $1, response => $2::jsonb)',
        [key, JSON.stringify(result)]);
    }
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK');                 // leave the connection usable
    throw err;
  }
}

module.exports = { createPayment };
