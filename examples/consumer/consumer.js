'use strict';
// An idempotent consumer of a NATS JetStream stream.
//
// The broker delivers at least once: a message whose ack never arrived (the
// consumer died, the connection dropped, the broker restarted) is delivered
// again.  The consumer makes that harmless: it applies a batch of messages in
// one PostgreSQL transaction, asks the idempotency extension in the same
// transaction which messages are new, applies only those, and acks the batch
// only after COMMIT.  A crash before COMMIT rolls everything back (the
// redelivery runs again); a crash after COMMIT and before the ack makes the
// redelivery a duplicate, which the extension recognises.
//
// Two modes (MODE):
//   keys     a durable pull consumer shared by every worker; each message's id
//            is an idempotency key, claimed with idem_claim_many.
//   offsets  one worker per partition (a subject of the stream), reading in
//            order from the stream sequence stored in PostgreSQL; a message is
//            new if idem_offset_advance says its sequence is above the stored
//            one.  The broker keeps no position: the database is the cursor.
//
// Settings (environment): PGHOST, PGPORT, PGUSER, PGDATABASE as for psql;
// NATS_URL; MODE; PARTITION (offsets mode); BATCH (messages per transaction);
// WORKER (a name for the logs); DELIVERY_LOG (a file to which the id of every
// message is appended when it is received, for the test to count
// redeliveries); CRASH_AFTER_COMMIT (a probability: kill this process with
// SIGKILL after COMMIT and before the acks, the worst moment to die).
const fs = require('fs');
const { connect, DeliverPolicy } = require('nats');
const { Client } = require('pg');

const MODE = process.env.MODE || 'keys';
const NATS_URL = process.env.NATS_URL || 'nats://127.0.0.1:4222';
const STREAM = process.env.STREAM || 'EVENTS';
const DURABLE = 'workers';              // the durable consumer of keys mode
const GROUP = 'workers';                // the consumer group of offsets mode
const SCOPE = 'events';                 // the idempotency keys' scope
const BATCH = Number(process.env.BATCH || 200);
const PARTITION = Number(process.env.PARTITION || 0);
const WORKER = process.env.WORKER || `${MODE}-${process.pid}`;
const CRASH_AFTER_COMMIT = Number(process.env.CRASH_AFTER_COMMIT || 0);
const deliveryLog = process.env.DELIVERY_LOG ? fs.openSync(process.env.DELIVERY_LOG, 'a') : null;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.log(new Date().toISOString(), WORKER, ...args);

// Which of these keys are new?  One row per key, in input order: 'claimed'
// means apply the effect, 'replay' means it was applied before.  The claims
// are part of the caller's transaction: they commit with the effects.
const CLAIM_SQL =
  'SELECT key, outcome::text AS outcome FROM idem_claim_many(keys => $1::text[], scope => $2)';

async function claimKeys(pg, keys) {
  const { rows } = await pg.query(CLAIM_SQL, [keys, SCOPE]);
  return rows.map((r) => r.outcome);
}

// Which of these offsets (in increasing order) are new?  Each call stores the
// offset in the caller's transaction if it is above the stored one.
async function advanceOffsets(pg, seqs) {
  const { rows } = await pg.query(
    `SELECT idem_offset_advance(consumer_group => $1, stream => $2, partition => $3,
                                message_offset => s.seq) AS new
       FROM unnest($4::bigint[]) WITH ORDINALITY AS s(seq, n)
      ORDER BY s.n`,
    [GROUP, STREAM, PARTITION, seqs]);
  return rows.map((r) => r.new);
}

// The business effect of new events: one row each, and the balances they move
async function applyEffects(pg, events) {
  if (events.length === 0) return;
  // the accounts' row locks in one order for every worker: no deadlock
  await pg.query('SELECT id FROM accounts WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE',
    [[...new Set(events.map((e) => e.account))]]);
  await pg.query(
    `WITH e AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) AS e(msg_id, account, amount)),
          ins AS (INSERT INTO effects (msg_id, account, amount, worker)
                  SELECT msg_id, account, amount, $4 FROM e)
     UPDATE accounts a SET balance = a.balance + s.total
       FROM (SELECT account, sum(amount) AS total FROM e GROUP BY account) s
      WHERE a.id = s.account`,
    [events.map((e) => e.id), events.map((e) => e.account), events.map((e) => e.amount), WORKER]);
}

// One transaction for the whole batch: which messages are new, their effects,
// and a line of statistics.  Returns [applied, duplicates].
async function applyBatch(pg, msgs) {
  let events = msgs.map((m) => ({ ...m.json(), seq: m.seq, redelivered: m.redelivered }));
  const redelivered = events.filter((e) => e.redelivered).length;
  await pg.query('BEGIN');
  let fresh;
  if (MODE === 'keys') {
    // One claim per id, even if the broker handed this batch the same message
    // twice: a second claim of a key in the same transaction answers
    // 'claimed' again.  (Two workers given overlapping batches cannot
    // deadlock: idem_claim_many locks keys in one global order.)
    events = [...new Map(events.map((e) => [e.id, e])).values()];
    const outcomes = await claimKeys(pg, events.map((e) => e.id));
    for (const o of outcomes) {
      // without a lease or a fingerprint a waiting claim answers only these
      if (o !== 'claimed' && o !== 'replay') throw new Error(`unexpected claim outcome ${o}`);
    }
    fresh = events.filter((e, i) => outcomes[i] === 'claimed');
  } else {
    events.sort((a, b) => a.seq - b.seq);
    const isNew = await advanceOffsets(pg, events.map((e) => e.seq));
    fresh = events.filter((e, i) => isNew[i]);
  }
  await applyEffects(pg, fresh);
  const duplicates = msgs.length - fresh.length;
  await pg.query(
    `INSERT INTO consumer_batches (worker, mode, messages, applied, duplicates, redelivered)
     VALUES ($1, $2, $3, $4, $5, $6)`,
    [WORKER, MODE, msgs.length, fresh.length, duplicates, redelivered]);
  await pg.query('COMMIT');
  return [fresh.length, duplicates];
}

let pg = null;

async function connectPg() {
  const client = new Client();
  client.on('error', () => {});         // a dropped connection fails the next query instead
  await client.connect();
  return client;
}

function dropPg() {
  if (pg) {
    const old = pg;
    pg = null;
    old.end().catch(() => {});
  }
}

// Apply a batch until it commits.  A failure (PostgreSQL restarting, a
// deadlock between two workers given the same messages) rolls the batch back,
// and the same messages are tried again on a new connection.  If COMMIT
// itself was cut off, the retry finds the batch's keys (or offsets) already
// done: nothing is applied twice either way.
async function applyUntilCommitted(msgs) {
  for (let attempt = 1; ; attempt++) {
    try {
      if (!pg) pg = await connectPg();
      return await applyBatch(pg, msgs);
    } catch (err) {
      log(`batch failed (attempt ${attempt}): ${err.code || ''} ${err.message}`);
      dropPg();
      await sleep(Math.min(100 * attempt, 1000));
    }
  }
}

// The broker side: a durable consumer shared by all workers (keys), or an
// ordered consumer of one partition from the offset stored in PostgreSQL
async function openConsumer(js) {
  if (MODE === 'keys') return js.consumers.get(STREAM, DURABLE);
  let r;
  try {
    if (!pg) pg = await connectPg();
    ({ rows: [r] } = await pg.query(
      'SELECT idem_offset_get(consumer_group => $1, stream => $2, partition => $3) AS next',
      [GROUP, STREAM, PARTITION]));
  } catch (err) {
    dropPg();
    throw err;
  }
  const start = r.next === null ? 1 : Number(r.next);
  log(`partition ${PARTITION}: resuming at stream sequence ${start}`);
  return js.consumers.get(STREAM, {
    filterSubjects: `events.${PARTITION}`,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: start,
  });
}

async function main() {
  const nc = await connect({
    servers: NATS_URL, name: WORKER,
    maxReconnectAttempts: -1, reconnectTimeWait: 200, waitOnFirstConnect: true,
  });
  const js = nc.jetstream();
  let consumer = null;
  let idle = 0;
  for (;;) {
    let msgs = [];
    try {
      if (!consumer) consumer = await openConsumer(js);
      const batch = await consumer.fetch({ max_messages: BATCH, expires: 2000 });
      for await (const m of batch) msgs.push(m);
    } catch (err) {
      // the broker went away, or PostgreSQL did while reading the offset:
      // start again from the broker's (keys) or the database's (offsets) position
      log(`fetch failed: ${err.message}`);
      consumer = null;
      if (msgs.length === 0) {
        await sleep(300);
        continue;
      }
    }
    if (msgs.length === 0) {
      // nothing for a while: open the consumer again, in case the broker lost it
      if (++idle >= 3) { consumer = null; idle = 0; }
      continue;
    }
    idle = 0;
    if (deliveryLog !== null) {
      fs.writeSync(deliveryLog, msgs.map((m) => `${m.json().id}\t${m.seq}\t${WORKER}\n`).join(''));
    }
    const [applied, duplicates] = await applyUntilCommitted(msgs);
    if (CRASH_AFTER_COMMIT > 0 && Math.random() < CRASH_AFTER_COMMIT) {
      log(`committed ${applied} effects, dying before the ack`);
      process.kill(process.pid, 'SIGKILL');
    }
    if (MODE === 'keys') {
      // only now: a message acked before COMMIT could be lost by a crash
      for (const m of msgs) m.ack();
    }
    if (duplicates > 0) log(`batch of ${msgs.length}: ${applied} applied, ${duplicates} duplicates`);
  }
}

if (require.main === module) {
  process.on('SIGTERM', () => process.exit(0));
  main().catch((err) => { log(err.stack || err.message); process.exit(1); });
}

module.exports = { CLAIM_SQL, applyBatch };
