'use strict';
// Create the stream EVENTS (subjects events.<partition>, on disk), the durable
// consumer that the workers of keys mode share, and publish N events:
//   event i (1..N): {"id": "ev-i", "account": i % 10, "amount": i % 100 + 1}
// on subject events.<i % PARTITIONS>.  Each publish carries the event id as
// its Nats-Msg-Id, so that a publish retried after a lost ack is stored once.
//
//   NATS_URL=nats://127.0.0.1:4222 node publish.js N PARTITIONS
const { connect, AckPolicy, DeliverPolicy, StorageType, nanos } = require('nats');

const STREAM = process.env.STREAM || 'EVENTS';
const WINDOW = 1000;                    // publishes awaiting their ack at once

async function publishOne(js, i, partitions) {
  const id = `ev-${i}`;
  const body = JSON.stringify({ id, account: i % 10, amount: (i % 100) + 1 });
  for (let attempt = 1; ; attempt++) {
    try {
      return await js.publish(`events.${i % partitions}`, body, { msgID: id });
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
}

async function main() {
  const n = Number(process.argv[2]);
  const partitions = Number(process.argv[3] || 1);
  const nc = await connect({ servers: process.env.NATS_URL || 'nats://127.0.0.1:4222' });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.delete(STREAM).catch(() => {});
  await jsm.streams.add({
    name: STREAM, subjects: ['events.*'], storage: StorageType.File,
    duplicate_window: nanos(10 * 60 * 1000),
  });
  await jsm.consumers.add(STREAM, {
    durable_name: 'workers',
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(3000),              // an unacked message is delivered again after 3 s
    max_deliver: -1,
    max_ack_pending: 20000,
  });
  const js = nc.jetstream();
  const started = Date.now();
  const inflight = new Set();
  for (let i = 1; i <= n; i++) {
    const p = publishOne(js, i, partitions).finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= WINDOW) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const info = await jsm.streams.info(STREAM);
  const secs = (Date.now() - started) / 1000;
  console.log(`published ${n} events in ${secs.toFixed(1)} s; the stream holds ${info.state.messages}`);
  await nc.drain();
  if (info.state.messages !== n) process.exit(1);
}

main().catch((err) => { console.error(err.stack || err.message); process.exit(1); });
