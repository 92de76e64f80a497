// The worker a team would write instead of the notifier, for `bench/fanout.py --peer`: ioredis
// subscribes to the channel, pg reads the talk and its audience with the notifier's own queries
// (config/notifier.toml), and firebase-admin sends one FCM message per device with sendEach, in
// batches of 500 as its documentation advises (one batch awaited at a time, unless
// PEER_BATCHES_IN_FLIGHT says more). FCM only: firebase-admin does not speak APNs.
//
// firebase-admin always sends to https://fcm.googleapis.com and fetches its access token from
// https://oauth2.googleapis.com/token (google-auth-library ignores the service account's
// token_uri), so the benchmark resolves both names to loopback for the run, serves the stand-in on
// 127.0.0.1:443 with a certificate for them, and trusts its CA through NODE_EXTRA_CA_CERTS.
//
// Environment: DATABASE_URL (PostgreSQL), REDIS_URL, NOTIFIER_CHANNEL, GOOGLE_APPLICATION_CREDENTIALS.
// It prints one JSON line per event, {"event": "Event processed.", ...}, as the notifier logs one.
'use strict';

const fs = require('fs');
const http2 = require('http2');
const path = require('path');
const Redis = require('ioredis');
const { Client } = require('pg');
const admin = require('firebase-admin');
const { getMessaging } = require('firebase-admin/messaging');

// firebase-admin 13 sends `:scheme: https:` (Node's URL protocol, colon included). Google's front
// ends take it; the stand-in's HTTP/2 server (the h2 crate) refuses it as malformed, as RFC 9113
// allows, so the one header is put right before it leaves. It costs a property write per request.
const connect = http2.connect;
http2.connect = function (...args) {
  const session = connect.apply(this, args);
  const request = session.request;
  session.request = function (headers, ...rest) {
    if (headers[':scheme'] === 'https:') headers[':scheme'] = 'https';
    return request.call(this, headers, ...rest);
  };
  return session;
};

const BATCH = 500; // sendEach's limit
const IN_FLIGHT = Math.max(1, parseInt(process.env.PEER_BATCHES_IN_FLIGHT || '1', 10));

// The notifier's default queries, read from its config so both run the same SQL.
function queries() {
  const toml = fs.readFileSync(path.join(__dirname, '..', '..', 'config', 'notifier.toml'), 'utf8');
  const take = (name) => {
    const m = toml.match(new RegExp(`^${name} = """([\\s\\S]*?)"""`, 'm'));
    if (!m) throw new Error(`no ${name} query in config/notifier.toml`);
    return m[1];
  };
  return { content: take('content'), audience: take('audience') };
}

// `:name` parameters as PostgreSQL's $1, $2, … (the same name, the same number), typed, since
// PostgreSQL cannot tell the type of one only compared with NULL (`:author_id IS NULL`).
function bind(sql, values) {
  const names = [];
  const text = sql.replace(/(?<!:):([a-z_]+)/g, (_, name) => {
    if (!(name in values)) throw new Error(`no value for :${name}`);
    let i = names.indexOf(name);
    if (i < 0) i = names.push(name) - 1;
    return `$${i + 1}::${name.endsWith('_id') ? 'bigint' : 'text'}`;
  });
  return { text, values: names.map((n) => values[n]) };
}

async function sendAll(messaging, messages) {
  let sent = 0;
  let failed = 0;
  let firstError;
  const batches = [];
  for (let i = 0; i < messages.length; i += BATCH) batches.push(messages.slice(i, i + BATCH));
  let next = 0;
  async function lane() {
    while (next < batches.length) {
      const batch = batches[next++];
      const result = await messaging.sendEach(batch);
      sent += result.successCount;
      failed += result.failureCount;
      const error = result.responses.find((r) => !r.success);
      if (error && !firstError) firstError = String(error.error && (error.error.stack || error.error));
    }
  }
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, batches.length) }, lane));
  return { sent, failed, firstError };
}

async function handle(db, messaging, sql, raw) {
  const started = Date.now();
  const event = JSON.parse(raw);
  const talk = await db.query(bind(sql.content, { talk_id: event.talk_id, program_id: event.program_id ?? null }));
  if (talk.rows.length === 0) throw new Error(`no talk ${event.talk_id}`);
  const t = talk.rows[0];
  const audience = await db.query(bind(sql.audience, {
    talk_id: event.talk_id, program_id: t.program_id, author_id: t.author_id, after_id: 0, provider: 'fcm',
  }));
  const data = {
    type: 'talk_posted', talk_id: String(event.talk_id), program_id: String(t.program_id),
    url: `notifier-demo://talks/${event.talk_id}`,
  };
  // The notifier's collapse id: the event's id, so a repeat replaces the notification shown.
  const collapse = String(event.event_id ?? `talk_posted:${event.talk_id}`);
  const messages = audience.rows.map((d) => ({
    token: d.token,
    notification: { title: `New talk on ${t.program_title}`, body: t.talk_title },
    data,
    android: { priority: 'high', ttl: 86400 * 1000, collapseKey: collapse, notification: { tag: collapse } },
  }));
  const { sent, failed, firstError } = await sendAll(messaging, messages);
  console.log(JSON.stringify({
    event: 'Event processed.', event_id: event.event_id, recipients: messages.length, sent, failed,
    ms: Date.now() - started, ...(firstError ? { first_error: firstError } : {}),
  }));
}

async function main() {
  admin.initializeApp({ credential: admin.credential.cert(process.env.GOOGLE_APPLICATION_CREDENTIALS) });
  const messaging = getMessaging();
  const sql = queries();
  const db = new Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
  const channel = process.env.NOTIFIER_CHANNEL || 'talk_posted';
  // One event at a time, in order, as a simple worker does.
  let queue = Promise.resolve();
  redis.on('message', (_, raw) => {
    queue = queue.then(() => handle(db, messaging, sql, raw)).catch((e) => {
      console.log(JSON.stringify({ event: 'Event failed.', error: String(e && e.stack || e) }));
    });
  });
  await redis.subscribe(channel);
  // The benchmark stops it once the event is done; an event still running is abandoned.
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
