import { createRequire } from 'node:module'
import t, { type Test } from 'tap'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../config.js'
import { build, engine, register, send, testDb, until, type Registered, type TestApp } from '../helper.js'
import { openStream } from '../sse.js'
import { receiver } from '../webhook-receiver.js'

// GET /metrics, read the way Prometheus reads it: every figure comes out of the real exposition-format parser, never
// out of a regular expression over the text.
// Several apps, real servers, streams and webhook retries per test: generous on a busy machine and on PostgreSQL.
t.setTimeout(600_000)

// parse-prometheus-text-format is CommonJS without types: its module.exports is the parse function.
interface Sample { labels?: Record<string, string>, value?: string, buckets?: Record<string, string>, count?: string, sum?: string }
interface Family { name: string, help: string, type: string, metrics: Sample[] }
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[]

const ADMIN = 'admin-token-0123456789'
const METRICS = 'metrics-token-0123456789'
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
// The receivers of the webhook tests listen on 127.0.0.1, which webhooks may not reach by default.
const local = { BUS_WEBHOOK_ALLOW_PRIVATE: 'true' }

// One scrape, parsed.
class Scrape {
  readonly families: Map<string, Family>
  constructor (readonly text: string) {
    this.families = new Map(parsePrometheus(text).map((family) => [family.name, family]))
  }

  family (name: string): Family {
    const family = this.families.get(name)
    if (family === undefined) throw new Error(`no metric family ${name} in the scrape`)
    return family
  }

  // The samples of a family whose labels include these.
  samples (name: string, labels: Record<string, string> = {}): Sample[] {
    return this.family(name).metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  }

  // The value of the one sample with these labels.
  value (name: string, labels: Record<string, string> = {}): number {
    const found = this.samples(name, labels)
    if (found.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples, expected one`)
    return Number(found[0].value)
  }

  // The count and sum of the one histogram sample with these labels.
  histogram (name: string, labels: Record<string, string> = {}): { count: number, sum: number } {
    const found = this.samples(name, labels)
    if (found.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples, expected one`)
    return { count: Number(found[0].count), sum: Number(found[0].sum) }
  }

  // The series of a histogram with labels, each with its labels and count. parse-prometheus-text-format folds every
  // series of a histogram into one sample of buckets, dropping their labels, counts and sums (its flattenMetrics),
  // which suits only unlabelled histograms. Read without its TYPE line, the same parser answers each _count line as
  // a sample of its own, with its labels.
  series (name: string): Array<{ labels: Record<string, string>, count: number }> {
    const typeLine = `# TYPE ${name} histogram`
    const lines = this.text.split('\n')
    if (!lines.includes(typeLine)) throw new Error(`${name} is not a histogram of the scrape`)
    return parsePrometheus(lines.filter((line) => line !== typeLine).join('\n'))
      .filter((family) => family.name === `${name}_count`)
      .flatMap((family) => family.metrics.map((m) => ({ labels: m.labels ?? {}, count: Number(m.value) })))
  }

  // A labelled family as { label value: value }, e.g. messages_stored_total by kind.
  by (name: string, label: string): Record<string, number> {
    return Object.fromEntries(this.family(name).metrics.map((m) => [m.labels?.[label] ?? '', Number(m.value)]))
  }
}

// What changed between two scrapes of a labelled family (labels seen in either).
function minus (after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys({ ...before, ...after }).sort().map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]))
}

async function scrape (app: TestApp, headers: Record<string, string> = {}): Promise<Scrape> {
  const res = await app.inject({ url: '/metrics', headers })
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode} ${res.body}`)
  return new Scrape(res.body)
}

// Scrapes until the scrape satisfies `check`, and answers that scrape.
async function scrapeUntil (app: TestApp, what: string, check: (s: Scrape) => boolean, headers: Record<string, string> = {}): Promise<Scrape> {
  let last: Scrape | undefined
  await until(what, async () => check(last = await scrape(app, headers)))
  return last as Scrape
}

async function ok<T = any> (res: { statusCode: number, body: string, json: () => any }, status = 200): Promise<T> {
  if (res.statusCode !== status) throw new Error(`expected ${status}, got ${res.statusCode}: ${res.body}`)
  return res.json() as T
}

const post = (app: TestApp, who: Registered, url: string, payload: Record<string, unknown>) =>
  app.inject({ method: 'POST', url, headers: who.auth, payload })

async function serve (t: Test, env: Record<string, string> = {}) {
  const app = await build(t, env)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, base }
}

const COUNTERS = ['agent_bus_messages_stored_total', 'agent_bus_deliveries_total', 'agent_bus_acks_total', 'agent_bus_webhook_attempts_total']
const POSTGRES_ONLY = ['agent_bus_notifications_received_total', 'agent_bus_db_pool_connections', 'agent_bus_db_pool_waiting']
const FAMILIES: Record<string, string> = {
  agent_bus_messages_stored_total: 'COUNTER',
  agent_bus_deliveries_total: 'COUNTER',
  agent_bus_acks_total: 'COUNTER',
  agent_bus_webhook_attempts_total: 'COUNTER',
  agent_bus_open_readers: 'GAUGE',
  agent_bus_commit_batch_writes: 'HISTOGRAM',
  agent_bus_commit_duration_seconds: 'HISTOGRAM',
  agent_bus_http_request_duration_seconds: 'HISTOGRAM',
  agent_bus_database_up: 'GAUGE',
  agent_bus_info: 'GAUGE',
  agent_bus_agents: 'GAUGE',
  agent_bus_messages: 'GAUGE',
  agent_bus_unread_copies: 'GAUGE',
  agent_bus_archived_messages: 'GAUGE',
  agent_bus_database_size_bytes: 'GAUGE',
  agent_bus_webhook_pending: 'GAUGE',
  agent_bus_queue_messages: 'GAUGE',
  ...(engine === 'postgresql' && {
    agent_bus_notifications_received_total: 'COUNTER',
    agent_bus_db_pool_connections: 'GAUGE',
    agent_bus_db_pool_waiting: 'GAUGE'
  })
}

// Each app has a registry of its own (plugins/metrics.ts): several buses in one process, as the tests build them, must
// each boot, and each count only its own traffic.
t.test('two buses in one process each boot, and each counts only its own traffic', async (t) => {
  const one = await build(t)
  // (On SQLite testDb answers one file per test: the second bus keeps its database in memory.)
  const two = await build(t, { BUS_DB: ':memory:' })
  const alice = await register(one, 'alice')
  await register(one, 'bob')
  await ok(await send(one, alice, { to: 'bob', body: 'on one' }), 201)
  t.equal((await scrape(one)).value('agent_bus_messages_stored_total', { kind: 'direct' }), 1)
  t.equal((await scrape(two)).value('agent_bus_messages_stored_total', { kind: 'direct' }), 0)
  t.equal((await scrape(two)).value('agent_bus_agents', { state: 'registered' }), 0)
})

t.test('every agent_bus_ family has HELP and TYPE and follows the naming conventions, as Prometheus text', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  await ok(await send(app, alice, { to: 'bob', body: 'so that the request histogram has a sample' }), 201)

  const res = await app.inject({ url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8', 'the Prometheus text format, version 0.0.4')
  const s = new Scrape(res.body)
  const ours = [...s.families.values()].filter((f) => f.name.startsWith('agent_bus_'))
  t.strictSame(ours.map((f) => f.name).sort(), Object.keys(FAMILIES).sort(), `exactly the families expected on ${engine}`)
  for (const family of ours) {
    t.not(family.help.trim(), '', `${family.name} has a HELP line`)
    t.not(family.type, 'UNTYPED', `${family.name} has a TYPE line`)
    t.equal(family.type, FAMILIES[family.name], `${family.name} is a ${FAMILIES[family.name]}`)
    t.match(family.name, /^[a-z_][a-z0-9_]*$/, `${family.name}: lower snake case`)
    if (family.type === 'COUNTER') t.ok(family.name.endsWith('_total'), `counter ${family.name} ends in _total`)
    else t.notOk(family.name.endsWith('_total'), `${family.name} is no counter, so does not end in _total`)
    t.notOk(/_(ms|milliseconds|microseconds|minutes|hours|kb|kilobytes|mb|megabytes|percent)(_|$)/.test(family.name),
      `${family.name} is in base units (seconds, bytes)`)
    for (const m of family.metrics) {
      for (const label of Object.keys(m.labels ?? {})) t.notOk(label.startsWith('__'), `${family.name}: label ${label} is not reserved`)
    }
  }
  for (const name of ['agent_bus_commit_duration_seconds', 'agent_bus_http_request_duration_seconds']) {
    t.ok(name.endsWith('_seconds'), `${name}: durations in seconds`)
  }
  for (const family of POSTGRES_ONLY) t.equal(s.families.has(family), engine === 'postgresql', `${family} only on PostgreSQL`)

  // Every label a rate may be asked of exists at 0 from the start, so that rate() over it is 0 and not absent.
  t.strictSame(s.by('agent_bus_messages_stored_total', 'kind'), { direct: 1, broadcast: 0, topic: 0, queue: 0 })
  t.strictSame(s.by('agent_bus_deliveries_total', 'path'), { inbox: 0, stream: 0, claim: 0, webhook: 0 })
  t.strictSame(s.by('agent_bus_acks_total', 'kind'), { message: 0, queue: 0 })
  t.strictSame(s.by('agent_bus_open_readers', 'kind'), { stream: 0, poll: 0, claim: 0 })
  t.strictSame(s.by('agent_bus_messages', 'priority'), { normal: 1, high: 0, urgent: 0 })
  t.strictSame(s.by('agent_bus_agents', 'state'), { registered: 2, online: 1 })

  // The process and Node defaults are there too.
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    t.ok(s.families.has(name), `${name} is exported`)
  }
})

t.test('messages_stored_total counts each stored message once by kind; a replayed Idempotency-Key and a refused send do not count', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await register(app, 'carol')
  await ok(await post(app, alice, '/topics', { name: 'news' }), 201)
  await ok(await app.inject({ method: 'PUT', url: '/topics/news/subscription', headers: bob.auth }))
  await ok(await post(app, alice, '/queues', { name: 'jobs' }), 201)

  const before = await scrape(app)
  const batchBefore = before.histogram('agent_bus_commit_batch_writes')

  await ok(await send(app, alice, { to: 'bob', body: 'one recipient' }), 201)
  await ok(await send(app, alice, { to: ['bob', 'carol'], body: 'two recipients, one message' }), 201)
  await ok(await send(app, alice, { body: 'to everyone' }), 201)
  await ok(await send(app, alice, { body: 'to everyone, urgently', priority: 'urgent' }), 201)
  const published = await ok(await send(app, alice, { topic: 'news', body: 'to the subscribers' }), 201)
  t.equal(published.recipients, 1)
  await ok(await send(app, alice, { queue: 'jobs', body: 'work' }), 201)

  const first = await send(app, alice, { to: 'bob', body: 'once' }, { 'idempotency-key': 'job-1' })
  t.equal(first.statusCode, 201)
  const replay = await send(app, alice, { to: 'bob', body: 'once' }, { 'idempotency-key': 'job-1' })
  t.equal(replay.statusCode, 201)
  t.equal(replay.headers['idempotent-replayed'], 'true')
  t.equal(replay.json().id, first.json().id, 'the replay answers the first message')
  t.equal((await send(app, alice, { to: 'bob', body: 'other' }, { 'idempotency-key': 'job-1' })).statusCode, 422, 'the key with another request')
  t.equal((await send(app, alice, { to: 'nobody', body: 'x' })).statusCode, 404, 'an unknown recipient')
  t.equal((await send(app, alice, { topic: 'nope', body: 'x' })).statusCode, 404, 'an unknown topic')
  t.equal((await send(app, alice, { queue: 'nope', body: 'x' })).statusCode, 404, 'an unknown queue')

  const after = await scrape(app)
  t.strictSame(minus(after.by('agent_bus_messages_stored_total', 'kind'), before.by('agent_bus_messages_stored_total', 'kind')),
    { broadcast: 2, direct: 3, queue: 1, topic: 1 }, 'one per message stored, whatever its number of recipients')
  t.strictSame(minus(after.by('agent_bus_messages', 'priority'), before.by('agent_bus_messages', 'priority')),
    { high: 0, normal: 6, urgent: 1 }, 'and the database gauge agrees')

  // Every send is a write of its own here (one after the other), each in a group commit of at least one write.
  const batchAfter = after.histogram('agent_bus_commit_batch_writes')
  const durationAfter = after.histogram('agent_bus_commit_duration_seconds')
  t.ok(batchAfter.count - batchBefore.count >= 7, `at least one commit per stored send (${batchAfter.count - batchBefore.count})`)
  t.ok(batchAfter.sum - batchBefore.sum >= batchAfter.count - batchBefore.count, 'each commit held at least one write')
  t.equal(durationAfter.count, batchAfter.count, 'every commit is timed once')
  t.ok(durationAfter.sum > 0, 'commits take time')
  const buckets = after.samples('agent_bus_commit_batch_writes')[0].buckets ?? {}
  t.equal(Number(buckets['+Inf']), batchAfter.count, 'the +Inf bucket holds every observation')

  // Nothing else counts as stored: reading and acking store nothing.
  await ok(await app.inject({ url: '/inbox', headers: bob.auth }))
  t.strictSame(minus((await scrape(app)).by('agent_bus_messages_stored_total', 'kind'), after.by('agent_bus_messages_stored_total', 'kind')),
    { broadcast: 0, direct: 0, queue: 0, topic: 0 })
})

t.test('deliveries_total and acks_total: inbox pages, a real stream, queue claims and acks, by exactly what was handed over', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const ids: number[] = []
  for (const priority of ['normal', 'high', 'urgent']) ids.push((await ok(await send(app, alice, { to: 'bob', body: priority, priority }), 201)).id)
  const s0 = await scrape(app)
  const deliveries = (s: Scrape) => minus(s.by('agent_bus_deliveries_total', 'path'), s0.by('agent_bus_deliveries_total', 'path'))
  const acks = (s: Scrape) => minus(s.by('agent_bus_acks_total', 'kind'), s0.by('agent_bus_acks_total', 'kind'))

  // Inbox reads: what each page answers.
  t.equal((await ok(await app.inject({ url: '/inbox', headers: bob.auth }))).messages.length, 3)
  t.equal((await ok(await app.inject({ url: '/inbox?limit=2', headers: bob.auth }))).messages.length, 2)
  t.equal((await ok(await app.inject({ url: '/inbox', headers: alice.auth }))).messages.length, 0, 'an empty page hands nothing')
  const s1 = await scrape(app)
  t.strictSame(deliveries(s1), { claim: 0, inbox: 3, stream: 0, webhook: 0 }, 'one per message handed over the first time; the second page repeats two')
  t.strictSame(acks(s1), { message: 0, queue: 0 })

  // Acks: what is newly read; acking again, or an id not in the inbox, counts nothing.
  t.strictSame(await ok(await post(app, bob, '/ack', { ids: [ids[0], ids[1]] })), { acked: 2, already_read: 0, not_found: [] })
  t.strictSame(await ok(await post(app, bob, '/ack', { ids: [ids[0]] })), { acked: 0, already_read: 1, not_found: [] })
  t.strictSame(await ok(await post(app, bob, '/ack', { ids: [999_999] })), { acked: 0, already_read: 0, not_found: [999_999] })
  t.strictSame(await ok(await post(app, alice, '/ack', { ids: [ids[2]] })), { acked: 0, already_read: 0, not_found: [ids[2]] }, 'not alice\'s to ack')
  t.strictSame(acks(await scrape(app)), { message: 2, queue: 0 })

  // A real SSE stream: the unread backlog (one message), then a message sent while it is open.
  const stream = openStream(`${base}/stream`, bob.token)
  t.teardown(stream.close)
  await stream.opened
  await stream.until(1, 30_000)
  const live = (await ok(await send(app, alice, { to: 'bob', body: 'live' }), 201)).id
  await stream.until(2, 30_000)
  t.strictSame(stream.events.map((e) => e.data.id), [ids[2], live])
  // The backlog's message was already handed over by the inbox: only the live one is a first delivery.
  const s2 = await scrapeUntil(app, 'one stream delivery', (s) => deliveries(s).stream === 1)
  t.strictSame(deliveries(s2), { claim: 0, inbox: 3, stream: 1, webhook: 0 })
  stream.close()

  // Queues: a claim hands over what it leases; an ack of a lease counts as a queue ack, not a message ack.
  await ok(await post(app, alice, '/queues', { name: 'jobs' }), 201)
  for (const n of [1, 2, 3]) await ok(await send(app, alice, { queue: 'jobs', body: `job ${n}` }), 201)
  const claimed = await ok(await post(app, bob, '/queues/jobs/claim', { limit: 2 }))
  t.equal(claimed.messages.length, 2)
  t.equal((await ok(await post(app, bob, '/queues/jobs/claim', { limit: 5 }))).messages.length, 1)
  t.equal((await ok(await post(app, bob, '/queues/jobs/claim', { limit: 5 }))).messages.length, 0, 'nothing left to claim')
  const claimedIds = claimed.messages.map((m: { message: { id: number } }) => m.message.id)
  t.strictSame(await ok(await post(app, bob, '/queues/jobs/ack', { ids: claimedIds })), { acked: 2, already_acked: 0 })
  t.strictSame(await ok(await post(app, bob, '/queues/jobs/ack', { ids: claimedIds })), { acked: 0, already_acked: 2 })
  const s3 = await scrapeUntil(app, 'the stream closed', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 0)
  t.strictSame(deliveries(s3), { claim: 3, inbox: 3, stream: 1, webhook: 0 })
  t.strictSame(acks(s3), { message: 2, queue: 2 }, 'acking again counts nothing')
})

t.test('a webhook delivered to a real receiver counts as an attempt and a delivery; a failed attempt only as an attempt', async (t) => {
  const hook = await receiver((n) => n === 1 ? 500 : 204)
  t.teardown(hook.close)
  const app = await build(t, { ...local, BUS_WEBHOOK_RETRY_BASE_MS: '20' })
  const bob = await ok(await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } }), 201)
  const alice = await register(app, 'alice')
  const before = await scrape(app)
  t.equal(before.samples('agent_bus_webhook_attempts_total').length, 0, 'no attempt yet')

  const id = (await ok(await send(app, alice, { to: 'bob', body: 'pushed' }), 201)).id
  await until('two attempts reached the receiver', () => hook.hits.length >= 2)
  const after = await scrapeUntil(app, 'the delivered attempt counted',
    (s) => s.samples('agent_bus_webhook_attempts_total', { event: 'message', outcome: 'delivered' }).length === 1)
  t.equal(after.value('agent_bus_webhook_attempts_total', { event: 'message', outcome: 'failed' }), 1, 'the 500')
  t.equal(after.value('agent_bus_webhook_attempts_total', { event: 'message', outcome: 'delivered' }), 1, 'the 204')
  t.equal(after.samples('agent_bus_webhook_attempts_total').length, 2, 'no other outcome, no overdue event')
  t.strictSame(minus(after.by('agent_bus_deliveries_total', 'path'), before.by('agent_bus_deliveries_total', 'path')),
    { claim: 0, inbox: 0, stream: 0, webhook: 1 }, 'delivered once, though attempted twice')
  // A scrape reads the database before it writes out the counters: the scrape that first shows an attempt may have
  // read the backlog just before it. The attempt is written before it is counted, so any later scrape sees it.
  t.equal((await scrape(app)).value('agent_bus_webhook_pending'), 0, 'nothing left to attempt')
  t.equal(JSON.parse(hook.hits[1].body).id, id)
  t.equal(hook.hits.length, 2)
  t.ok(bob.webhook_secret)
})

t.test('a webhook that fails waits as pending; one past its age expires', async (t) => {
  const hook = await receiver(() => 500)
  t.teardown(hook.close)

  // The first retry is at least half an hour away: the attempt failed, the delivery is pending.
  const waiting = await build(t, { ...local, BUS_WEBHOOK_RETRY_BASE_MS: '3600000' })
  await ok(await waiting.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } }), 201)
  const alice = await register(waiting, 'alice')
  await ok(await send(waiting, alice, { to: 'bob', body: 'pushed' }), 201)
  const failed = await scrapeUntil(waiting, 'the failed attempt counted', (s) => s.samples('agent_bus_webhook_attempts_total').length > 0)
  t.strictSame(failed.samples('agent_bus_webhook_attempts_total').map((m) => [m.labels, Number(m.value)]),
    [[{ event: 'message', outcome: 'failed' }, 1]])
  t.equal((await scrape(waiting)).value('agent_bus_webhook_pending'), 1, 'waiting for its retry (read after the attempt was counted)')
  t.equal(failed.value('agent_bus_deliveries_total', { path: 'webhook' }), 0)

  // Messages older than a second are given up at their first failure.
  const expiring = await build(t, { ...local, BUS_WEBHOOK_RETRY_BASE_MS: '5000', BUS_WEBHOOK_MAX_AGE_S: '1' })
  await ok(await expiring.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } }), 201)
  const carol = await register(expiring, 'carol')
  await ok(await send(expiring, carol, { to: 'bob', body: 'pushed' }), 201)
  const expired = await scrapeUntil(expiring, 'the expired attempt counted', (s) => s.samples('agent_bus_webhook_attempts_total').length > 0)
  t.strictSame(expired.samples('agent_bus_webhook_attempts_total').map((m) => [m.labels, Number(m.value)]),
    [[{ event: 'message', outcome: 'expired' }, 1]])
  t.equal((await scrape(expiring)).value('agent_bus_webhook_pending'), 0, 'given up: nothing pending (read after the attempt was counted)')
  t.equal(expired.value('agent_bus_deliveries_total', { path: 'webhook' }), 0)
})

t.test('open_readers counts a waiting long-poll, stream and claim while they are open, and not after', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const readers = async () => (await scrape(app)).by('agent_bus_open_readers', 'kind')
  t.strictSame(await readers(), { stream: 0, poll: 0, claim: 0 })

  // A long-poll answered by a send.
  const polling = fetch(`${base}/inbox?wait=60`, { headers: bob.auth })
  await scrapeUntil(app, 'the long-poll open', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 1)
  t.strictSame(await readers(), { stream: 0, poll: 1, claim: 0 })
  const id = (await ok(await send(app, alice, { to: 'bob', body: 'wake up' }), 201)).id
  const answered = await polling
  t.equal(answered.status, 200)
  t.strictSame((await answered.json()).messages.map((m: { id: number }) => m.id), [id])
  const s1 = await scrapeUntil(app, 'the long-poll closed', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 0)
  t.equal(s1.value('agent_bus_deliveries_total', { path: 'inbox' }), 1, 'the long-poll handed the message over')
  await ok(await post(app, bob, '/ack', { ids: [id] }))

  // A long-poll its client gives up on.
  const gone = new AbortController()
  const abandoned = fetch(`${base}/inbox?unread=true&wait=60`, { headers: bob.auth, signal: gone.signal }).catch((err: Error) => err)
  await scrapeUntil(app, 'the second long-poll open', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 1)
  gone.abort()
  t.equal((await abandoned as Error).name, 'AbortError')
  await scrapeUntil(app, 'the abandoned long-poll closed', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 0)
  t.pass('an abandoned long-poll is no longer counted')

  // A stream, two streams, then none.
  const one = openStream(`${base}/stream`, bob.token)
  t.teardown(one.close)
  await one.opened
  await scrapeUntil(app, 'one stream open', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 1)
  const two = openStream(`${base}/stream`, alice.token)
  t.teardown(two.close)
  await two.opened
  await scrapeUntil(app, 'two streams open', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 2)
  one.close()
  await scrapeUntil(app, 'one stream left', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 1)
  two.close()
  await scrapeUntil(app, 'no stream left', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 0)
  t.pass('streams are counted while open')

  // A claim that waits for work, answered by a send to the queue.
  await ok(await post(app, alice, '/queues', { name: 'jobs' }), 201)
  const claiming = fetch(`${base}/queues/jobs/claim`, {
    method: 'POST', headers: { ...bob.auth, 'content-type': 'application/json' }, body: JSON.stringify({ wait_s: 60 })
  })
  await scrapeUntil(app, 'the claim waiting', (s) => s.value('agent_bus_open_readers', { kind: 'claim' }) === 1)
  const job = (await ok(await send(app, alice, { queue: 'jobs', body: 'work' }), 201)).id
  const claimed = await claiming
  t.equal(claimed.status, 200)
  t.strictSame((await claimed.json()).messages.map((m: { message: { id: number } }) => m.message.id), [job])
  const s2 = await scrapeUntil(app, 'the claim done', (s) => s.value('agent_bus_open_readers', { kind: 'claim' }) === 0)
  t.strictSame(s2.by('agent_bus_open_readers', 'kind'), { stream: 0, poll: 0, claim: 0 })
  t.equal(s2.value('agent_bus_deliveries_total', { path: 'claim' }), 1)
})

t.test('a long-poll whose time is up, and readers replaced past BUS_MAX_READERS_PER_AGENT, are no longer counted', async (t) => {
  const { app, base } = await serve(t, { BUS_MAX_READERS_PER_AGENT: '1' })
  const bob = await register(app, 'bob')
  const empty = await ok(await app.inject({ url: '/inbox?wait=1', headers: bob.auth }))
  t.strictSame(empty.messages, [], 'nothing arrived in its second')
  t.equal((await scrape(app)).value('agent_bus_open_readers', { kind: 'poll' }), 0)

  // A stream, then a long-poll of the same agent: the long-poll ends the stream (one reader per agent here).
  const stream = openStream(`${base}/stream`, bob.token)
  t.teardown(stream.close)
  await stream.opened
  await scrapeUntil(app, 'the stream open', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 1)
  const polling = fetch(`${base}/inbox?wait=60`, { headers: bob.auth })
  const s1 = await scrapeUntil(app, 'the stream replaced by the long-poll', (s) =>
    s.value('agent_bus_open_readers', { kind: 'stream' }) === 0 && s.value('agent_bus_open_readers', { kind: 'poll' }) === 1)
  t.strictSame(s1.by('agent_bus_open_readers', 'kind'), { stream: 0, poll: 1, claim: 0 })
  stream.close()

  // And a second long-poll ends the first, which answers empty.
  const second = fetch(`${base}/inbox?wait=60`, { headers: bob.auth })
  const first = await polling
  t.equal(first.status, 200)
  t.strictSame((await first.json()).messages, [])
  const s2 = await scrapeUntil(app, 'one long-poll left', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 1)
  t.strictSame(s2.by('agent_bus_open_readers', 'kind'), { stream: 0, poll: 1, claim: 0 })
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: bob.auth })).statusCode, 204)
  t.equal((await second).status, 401)
  await scrapeUntil(app, 'no reader left', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 0)
})

t.test('a long-poll ended by its agent\'s deregistration is no longer counted', async (t) => {
  const { app, base } = await serve(t)
  const bob = await register(app, 'bob')
  const polling = fetch(`${base}/inbox?wait=60`, { headers: bob.auth })
  await scrapeUntil(app, 'the long-poll open', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 1)
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: bob.auth })).statusCode, 204)
  t.equal((await polling).status, 401, 'the token was revoked while it waited')
  const s = await scrapeUntil(app, 'the long-poll closed', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 0)
  t.equal(s.value('agent_bus_deliveries_total', { path: 'inbox' }), 0)
})

t.test('database gauges: agents, messages by priority, unread copies, queues; they agree with GET /stats', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const urgent = (await ok(await send(app, alice, { to: 'bob', body: 'u', priority: 'urgent' }), 201)).id
  await ok(await send(app, alice, { to: ['bob', 'carol'], body: 'h', priority: 'high' }), 201)
  await ok(await send(app, alice, { body: 'everyone' }), 201)
  await ok(await app.inject({ url: '/inbox', headers: bob.auth }))

  const s1 = await scrape(app)
  t.strictSame(s1.by('agent_bus_agents', 'state'), { registered: 3, online: 2 }, 'carol has not called since she registered')
  t.strictSame(s1.by('agent_bus_messages', 'priority'), { normal: 1, high: 1, urgent: 1 })
  t.equal(s1.value('agent_bus_unread_copies'), 5, 'bob three, carol two (the broadcast\'s copies counted before they are made)')
  t.equal(s1.value('agent_bus_archived_messages'), 0)
  t.equal(s1.value('agent_bus_database_up'), 1)
  t.ok(s1.value('agent_bus_database_size_bytes') > 0, 'the database takes some bytes')
  t.equal(s1.value('agent_bus_webhook_pending'), 0)
  t.equal(s1.samples('agent_bus_queue_messages').length, 0, 'no queue, no series')
  const stats = (await ok(await app.inject({ url: '/stats', headers: alice.auth })))
  t.strictSame(s1.samples('agent_bus_info').map((m) => [m.labels, Number(m.value)]),
    [[{ engine: stats.database.engine, schema_version: stats.database.schema_version }, 1]], 'the engine and schema of GET /stats')
  t.equal(stats.database.engine, engine)
  t.strictSame(s1.by('agent_bus_messages', 'priority'), stats.messages.by_priority)
  t.equal(s1.value('agent_bus_unread_copies'), stats.messages.unread)
  t.strictSame(s1.by('agent_bus_agents', 'state'), { registered: stats.agents.total, online: stats.agents.online })

  await ok(await post(app, bob, '/ack', { ids: [urgent] }))
  await ok(await post(app, alice, '/queues', { name: 'jobs' }), 201)
  for (const n of [1, 2]) await ok(await send(app, alice, { queue: 'jobs', body: `job ${n}` }), 201)
  t.equal((await ok(await post(app, bob, '/queues/jobs/claim', { limit: 1 }))).messages.length, 1)
  const s2 = await scrape(app)
  t.equal(s2.value('agent_bus_unread_copies'), 4, 'bob acked one')
  t.strictSame(s2.by('agent_bus_messages', 'priority'), { normal: 3, high: 1, urgent: 1 }, 'queue messages are messages')
  t.strictSame(Object.fromEntries(s2.samples('agent_bus_queue_messages', { queue: 'jobs' }).map((m) => [m.labels?.state, Number(m.value)])),
    { available: 1, delayed: 0, leased: 1, dead: 0 })

  // carol deregisters: she leaves the registered agents, and her unread copies the unread count.
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/carol', headers: carol.auth })).statusCode, 204)
  const s3 = await scrape(app)
  t.equal(s3.value('agent_bus_agents', { state: 'registered' }), 2)
  t.ok(s3.value('agent_bus_agents', { state: 'online' }) <= 2, 'online ones are of the registered')
  t.equal(s3.value('agent_bus_unread_copies'), 2, 'bob\'s two left')
  t.strictSame(s3.by('agent_bus_messages', 'priority'), { normal: 3, high: 1, urgent: 1 }, 'her messages stay stored')
  const after = await ok(await app.inject({ url: '/stats', headers: alice.auth }))
  t.equal(s3.value('agent_bus_unread_copies'), after.messages.unread)
  t.equal(s3.value('agent_bus_agents', { state: 'registered' }), after.agents.total)
})

t.test('queue series: the 100 deepest queues have their own, the rest are summed as queue="_other"', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  // 100 queues of two messages, named after three of one message each: depth, not the name, picks the series.
  const deep = Array.from({ length: 100 }, (_, i) => `z${String(i).padStart(3, '0')}`)
  for (const name of ['a0', 'a1', 'a2', ...deep]) await ok(await post(app, alice, '/queues', { name }), 201)
  for (const name of deep) for (const n of [1, 2]) await ok(await send(app, alice, { queue: name, body: `${name} ${n}` }), 201)
  for (const name of ['a0', 'a1', 'a2']) await ok(await send(app, alice, { queue: name, body: name }), 201)
  t.equal((await ok(await post(app, bob, '/queues/a1/claim', { limit: 1 }))).messages.length, 1)

  const s = await scrape(app)
  const queues = new Set(s.samples('agent_bus_queue_messages').map((m) => m.labels?.queue))
  t.equal(queues.size, 101, '100 queues and _other')
  t.ok(deep.every((name) => queues.has(name)), 'the deepest 100 have their own series')
  t.notOk(queues.has('a0') || queues.has('a1') || queues.has('a2'), 'the shallower three do not')
  t.strictSame(Object.fromEntries(s.samples('agent_bus_queue_messages', { queue: '_other' }).map((m) => [m.labels?.state, Number(m.value)])),
    { available: 2, delayed: 0, leased: 1, dead: 0 }, 'the three summed by state')
  t.strictSame(Object.fromEntries(s.samples('agent_bus_queue_messages', { queue: 'z042' }).map((m) => [m.labels?.state, Number(m.value)])),
    { available: 2, delayed: 0, leased: 0, dead: 0 })
})

t.test('access: open without tokens; with tokens only the admin and metrics tokens read /metrics', async (t) => {
  t.test('no token configured: anyone reads it', async (t) => {
    const app = await build(t)
    const alice = await register(app, 'alice')
    t.equal((await app.inject({ url: '/metrics' })).statusCode, 200, 'no header')
    t.equal((await app.inject({ url: '/metrics', headers: alice.auth })).statusCode, 200, 'an agent\'s token is no reason to refuse')
  })

  t.test('BUS_ADMIN_TOKEN: no header 401, an agent\'s or a wrong token 403, the admin token 200', async (t) => {
    const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN })
    const alice = await register(app, 'alice', {}, bearer(ADMIN))
    const none = await app.inject({ url: '/metrics' })
    t.equal(none.statusCode, 401)
    t.equal(none.headers['www-authenticate'], 'Bearer')
    t.match(none.json(), { statusCode: 401 })
    const basic = await app.inject({ url: '/metrics', headers: { authorization: `Basic ${Buffer.from(`x:${ADMIN}`).toString('base64')}` } })
    t.equal(basic.statusCode, 401, 'not a bearer token')
    t.equal(basic.headers['www-authenticate'], 'Bearer')
    const agent = await app.inject({ url: '/metrics', headers: alice.auth })
    t.equal(agent.statusCode, 403, 'an agent\'s token')
    t.match(agent.json(), { statusCode: 403, message: /BUS_ADMIN_TOKEN/ })
    t.equal((await app.inject({ url: '/metrics', headers: bearer('not-the-admin-token-at-all') })).statusCode, 403, 'a wrong token')
    t.equal((await app.inject({ url: '/metrics', headers: bearer(METRICS) })).statusCode, 403, 'a metrics token the bus was not given')
    const admin = await scrape(app, bearer(ADMIN))
    t.equal(admin.value('agent_bus_agents', { state: 'registered' }), 1)
    t.strictSame(admin.series('agent_bus_http_request_duration_seconds').map((m) => m.labels.route), ['/agents'],
      'only the registration was timed: refused scrapes are not')
  })

  t.test('BUS_METRICS_TOKEN beside BUS_ADMIN_TOKEN: it reads /metrics and nothing else', async (t) => {
    const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN, BUS_METRICS_TOKEN: METRICS })
    const alice = await register(app, 'alice', {}, bearer(ADMIN))
    await ok(await send(app, alice, { body: 'hello' }), 201)
    t.equal((await app.inject({ url: '/metrics', headers: bearer(METRICS) })).statusCode, 200, 'the metrics token')
    t.equal((await app.inject({ url: '/metrics', headers: bearer(ADMIN) })).statusCode, 200, 'the admin token')
    t.equal((await app.inject({ url: '/metrics', headers: alice.auth })).statusCode, 403, 'an agent\'s token')
    t.equal((await app.inject({ url: '/metrics' })).statusCode, 401, 'no header')

    const refused = [
      await app.inject({ method: 'POST', url: '/agents', headers: bearer(METRICS), payload: { name: 'mallory' } }),
      await app.inject({ url: '/stats', headers: bearer(METRICS) }),
      await app.inject({ url: '/inbox', headers: bearer(METRICS) }),
      await app.inject({ url: '/agents', headers: bearer(METRICS) }),
      await app.inject({ method: 'POST', url: '/send', headers: bearer(METRICS), payload: { body: 'x' } }),
      await app.inject({ method: 'DELETE', url: '/agents/alice', headers: bearer(METRICS) }),
      await app.inject({ method: 'POST', url: '/agents/alice/token', headers: bearer(METRICS) })
    ]
    for (const res of refused) t.ok(res.statusCode === 401 || res.statusCode === 403, `${res.statusCode}: ${res.body}`)
    const s = await scrape(app, bearer(METRICS))
    t.equal(s.value('agent_bus_agents', { state: 'registered' }), 1, 'mallory was not registered, alice not deregistered')
    t.strictSame(s.by('agent_bus_messages', 'priority'), { normal: 1, high: 0, urgent: 0 }, 'nothing was sent')
    t.equal(s.value('agent_bus_messages_stored_total', { kind: 'broadcast' }), 1)
  })

  t.test('BUS_METRICS_TOKEN alone: it reads /metrics, no header is refused, and it is no agent', async (t) => {
    const app = await build(t, { BUS_METRICS_TOKEN: METRICS })
    const alice = await register(app, 'alice')
    t.equal((await app.inject({ url: '/metrics', headers: bearer(METRICS) })).statusCode, 200)
    const none = await app.inject({ url: '/metrics' })
    t.equal(none.statusCode, 401)
    t.equal(none.headers['www-authenticate'], 'Bearer')
    t.equal((await app.inject({ url: '/metrics', headers: alice.auth })).statusCode, 403)
    t.equal((await app.inject({ url: '/metrics', headers: bearer(ADMIN) })).statusCode, 403, 'no admin token is configured')
    for (const url of ['/stats', '/inbox', '/agents']) {
      t.equal((await app.inject({ url, headers: bearer(METRICS) })).statusCode, 401, `${url} with the metrics token`)
    }
  })

  t.test('BUS_METRICS=false: no /metrics at all, and the bus still works', async (t) => {
    const app = await build(t, { BUS_METRICS: 'false', BUS_ADMIN_TOKEN: ADMIN })
    t.equal((await app.inject({ url: '/metrics' })).statusCode, 404)
    t.equal((await app.inject({ url: '/metrics', headers: bearer(ADMIN) })).statusCode, 404)
    t.notOk(app.hasDecorator('telemetry'))
    const alice = await register(app, 'alice', {}, bearer(ADMIN))
    const bob = await register(app, 'bob', {}, bearer(ADMIN))
    const id = (await ok(await send(app, alice, { to: 'bob', body: 'unmeasured' }), 201)).id
    t.strictSame((await ok(await app.inject({ url: '/inbox', headers: bob.auth }))).messages.map((m: { id: number }) => m.id), [id])
    t.match(await ok(await post(app, bob, '/ack', { ids: [id] })), { acked: 1 })
  })
})

t.test('across a restart on the same database the per-node counters start at 0 and the database gauges keep their values', async (t) => {
  const db = await testDb(t)
  const env = { BUS_DB: db, BUS_MAX_EVENT_LOOP_DELAY_MS: '0' }
  const first = await buildApp(loadConfig(env), { loops: false })
  let closed = false
  t.teardown(async () => { if (!closed) await first.close() })
  await first.ready()
  const alice = await register(first, 'alice')
  const bob = await register(first, 'bob')
  const sent = (await ok(await send(first, alice, { to: 'bob', body: 'before', priority: 'high' }), 201)).id
  await ok(await send(first, alice, { body: 'everyone' }), 201)
  await ok(await send(first, alice, { to: 'bob', body: 'again' }), 201)
  await ok(await first.inject({ url: '/inbox', headers: bob.auth }))
  await ok(await post(first, bob, '/ack', { ids: [sent] }))
  const s1 = await scrape(first)
  t.strictSame(s1.by('agent_bus_messages_stored_total', 'kind'), { direct: 2, broadcast: 1, topic: 0, queue: 0 })
  t.equal(s1.value('agent_bus_deliveries_total', { path: 'inbox' }), 3)
  t.equal(s1.value('agent_bus_acks_total', { kind: 'message' }), 1)
  t.strictSame(s1.by('agent_bus_messages', 'priority'), { normal: 2, high: 1, urgent: 0 })
  t.equal(s1.value('agent_bus_agents', { state: 'registered' }), 2)
  t.equal(s1.value('agent_bus_unread_copies'), 2)
  await first.close()
  closed = true

  const second = await build(t, { BUS_DB: db })
  const s2 = await scrape(second)
  t.strictSame(s2.by('agent_bus_messages_stored_total', 'kind'), { direct: 0, broadcast: 0, topic: 0, queue: 0 }, 'a new node counts from 0')
  t.strictSame(s2.by('agent_bus_deliveries_total', 'path'), { inbox: 0, stream: 0, claim: 0, webhook: 0 })
  t.strictSame(s2.by('agent_bus_acks_total', 'kind'), { message: 0, queue: 0 })
  t.strictSame(s2.by('agent_bus_messages', 'priority'), { normal: 2, high: 1, urgent: 0 }, 'what the database holds is kept')
  t.equal(s2.value('agent_bus_agents', { state: 'registered' }), 2)
  t.equal(s2.value('agent_bus_unread_copies'), 2)
  t.equal(s2.value('agent_bus_database_up'), 1)

  // And the new node counts from there.
  await ok(await send(second, alice, { to: 'bob', body: 'after' }), 201)
  const s3 = await scrape(second)
  t.equal(s3.value('agent_bus_messages_stored_total', { kind: 'direct' }), 1)
  t.strictSame(s3.by('agent_bus_messages', 'priority'), { normal: 3, high: 1, urgent: 0 })
  t.equal(s3.value('agent_bus_unread_copies'), 3)
})

t.test('the request histogram times the API by route, method and status, but never /metrics itself', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  for (let i = 0; i < 3; i++) await scrape(app)
  await app.inject({ url: '/metrics?format=whatever' })
  for (let i = 0; i < 2; i++) t.equal((await app.inject({ url: '/health' })).statusCode, 200)
  t.equal((await app.inject({ url: '/inbox' })).statusCode, 401)
  await ok(await app.inject({ url: '/inbox', headers: alice.auth }))

  const timed = (s: Scrape) => Object.fromEntries(s.series('agent_bus_http_request_duration_seconds')
    .map((m) => [`${m.labels.method} ${m.labels.route} ${m.labels.status_code}`, m.count]))
  const expected = { 'POST /agents 201': 1, 'GET /health 200': 2, 'GET /inbox 401': 1, 'GET /inbox 200': 1 }
  const s = await scrapeUntil(app, 'the requests timed', (s) => Object.entries(expected).every(([k, n]) => (timed(s)[k] ?? 0) >= n))
  t.strictSame(timed(s), expected, 'each call of the API by route, method and status; no /metrics')
  t.equal(s.series('agent_bus_http_request_duration_seconds').filter((m) => m.labels.route === '/metrics').length, 0)
  // The folded view the parser gives of a labelled histogram still shows it is one: its +Inf bucket is there.
  t.ok(s.samples('agent_bus_http_request_duration_seconds')[0].buckets?.['+Inf'] !== undefined)
})

// A stream's time is how long a reader stayed, not how long the bus took: streams are left out of the request
// histogram (agent_bus_open_readers counts them), whoever ends them. fastify-metrics times in onResponse, which
// Fastify does not run for a request its client aborted, so a stream would otherwise be timed only when the bus ends
// it, and an abandoned long-poll is not timed at all (the README says so).
t.test('a bus on a network address without tokens keeps /metrics and the dashboard closed', async (t) => {
  const app = await build(t, { HOST: '0.0.0.0', BUS_OPEN_REGISTRATION: 'true' })
  for (const url of ['/metrics', '/dashboard/events']) {
    const res = await app.inject({ url, headers: { accept: 'text/event-stream' } })
    t.equal(res.statusCode, 403, url)
    t.match(res.json().message, /BUS_METRICS_TOKEN/)
  }
  t.equal((await app.inject({ url: '/dashboard' })).statusCode, 200, 'the page itself holds no data')
})

t.test('streams are not in the request histogram, however they end; an abandoned long-poll is not timed', async (t) => {
  const { app, base } = await serve(t)
  const bob = await register(app, 'bob')
  const stream = openStream(`${base}/stream`, bob.token)
  t.teardown(stream.close)
  await stream.opened
  await scrapeUntil(app, 'the stream open', (s) => s.value('agent_bus_open_readers', { kind: 'stream' }) === 1)
  stream.close()
  // One the bus ends itself.
  const ended = await fetch(`${base}/stream?close_after=1`, { headers: { ...bob.auth, accept: 'text/event-stream' } })
  await ended.text()
  const gone = new AbortController()
  const abandoned = fetch(`${base}/inbox?wait=60`, { headers: bob.auth, signal: gone.signal }).catch((err: Error) => err)
  await scrapeUntil(app, 'the long-poll open', (s) => s.value('agent_bus_open_readers', { kind: 'poll' }) === 1)
  gone.abort()
  await abandoned
  await scrapeUntil(app, 'all closed', (s) =>
    s.value('agent_bus_open_readers', { kind: 'stream' }) === 0 && s.value('agent_bus_open_readers', { kind: 'poll' }) === 0)
  // An answered request after them: once it is timed, anything recorded before it is too.
  await app.inject({ method: 'GET', url: '/health' })
  const s = await scrapeUntil(app, '/health timed', (s) => s.series('agent_bus_http_request_duration_seconds').some((m) => m.labels.route === '/health'))
  const routes = s.series('agent_bus_http_request_duration_seconds').map((m) => m.labels.route)
  t.notOk(routes.includes('/stream'), 'no stream is timed')
  t.notOk(routes.includes('/inbox'), 'the abandoned long-poll is not timed')
})
