import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import t, { type Test } from 'tap'
import { createAgent } from '../../db/agents.js'
import { hashToken } from '../../bus/tokens.js'
import auth from '../../plugins/auth.js'
import bus from '../../plugins/bus.js'
import db from '../../plugins/db.js'
import fanout from '../../plugins/fanout.js'
import dashboard from '../../routes/dashboard.js'
import messages from '../../routes/messages.js'
import { schemas } from '../../schemas/index.js'
import { build, engine, register, send, testDb, type Registered, type TestApp } from '../helper.js'
import { openStream } from '../sse.js'

// GET /dashboard and its files, and GET /dashboard/events, the SSE stream of snapshots the page renders: who may
// read it, what a snapshot says after known work on the bus, how it follows the bus live, and that closing the bus
// ends it. Streams are read over real HTTP (inject() never ends on an SSE route).
// Real servers, streams and webhook retries: generous on a busy machine and on PostgreSQL.
t.setTimeout(600_000)

const ADMIN = 'admin-token-for-the-dashboard-0123'
const METRICS = 'metrics-token-for-the-dashboard-0123'
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
// Waits are generous (the machine may be busy); how long anything took is never asserted.
const WAIT_MS = 60_000
// In every body and data sent: a snapshot is metadata only, so this must never appear in one.
const BODY = 'BODY-never-on-the-dashboard-7f3a9c'
const DATA = 'DATA-never-on-the-dashboard-51be02'

interface Snapshot {
  at: string
  bus: { engine: string, schema_version: string, size_bytes: number, uptime_s: number }
  totals: { agents: number, online: number, messages: number, unread: number, archived: number, webhooks_pending: number }
  agents: Array<{ name: string, status: string, last_seen_at: string | null, unread: number }>
  more_agents: boolean
  traffic: { minutes: number[], normal: number[], high: number[], urgent: number[] }
  latest: Array<{
    id: number, from: string, to: string[] | null, topic: string | null, queue: string | null, subject: string | null, priority: string,
    created_at: string, copies: number, delivered: number, read: number, acked: boolean
  }>
  failing_webhooks: Array<{ agent: string, host: string | null, pending: number, attempts: number, next_at: string | null }>
  topics: Array<{ name: string, subscribers: number }>
  queues: Array<{ name: string, available: number, delayed: number, leased: number, dead: number }>
}
type Stream = ReturnType<typeof openStream>

// A dashboard open on the bus at `base`, read with the eventsource package (which sends the token as a Bearer
// header), closed when the test ends.
async function openDashboard (t: Test, base: string, token: string): Promise<Stream> {
  const stream = openStream(`${base}/dashboard/events`, token, { kinds: ['snapshot'] })
  t.teardown(() => stream.close())
  await stream.opened
  return stream
}

// The newest snapshot received (from index `from` on) that passes `check`, waiting for one as long as it takes.
async function snapshotWhere (stream: Stream, what: string, check: (s: Snapshot) => boolean, from = 0): Promise<{ snapshot: Snapshot, index: number }> {
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    for (let i = stream.events.length - 1; i >= from; i--) {
      const snapshot = stream.events[i].data as Snapshot
      if (check(snapshot)) return { snapshot, index: i }
    }
    if (Date.now() > deadline) throw new Error(`no snapshot ${what}; the last: ${JSON.stringify(stream.events.at(-1)?.data)}`)
    await sleep(20)
  }
}

// A snapshot made after everything done so far. Reads, acks and claims publish no event (the dashboard shows them at
// its next refresh, every 5 s): the test publishes one, as any event of the bus would, so as not to wait for it.
async function fresh (app: TestApp, stream: Stream): Promise<Snapshot> {
  const after = Date.now()
  await sleep(2)
  app.fanout.publish({ kind: 'queue', queue: 'dashboard-test-nudge' })
  return (await snapshotWhere(stream, 'made after the last change', (s) => Date.parse(s.at) > after)).snapshot
}

async function ok<T = any> (res: { statusCode: number, body: string, json: () => any }, status = 200): Promise<T> {
  if (res.statusCode !== status) throw new Error(`expected ${status}, got ${res.statusCode}: ${res.body}`)
  return res.json() as T
}

const sent = async (app: TestApp, from: Registered, payload: Record<string, unknown>): Promise<number> =>
  (await ok<{ id: number }>(await send(app, from, { body: BODY, data: { note: DATA }, ...payload }), 201)).id

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0)
const agentsOf = (s: Snapshot) => s.agents.map((a) => [a.name, a.status, a.unread])
const latestOf = (s: Snapshot) => s.latest.map(({ id, from, to, topic, queue, subject, priority, copies, delivered, read, acked }) =>
  ({ id, from, to, topic, queue, subject, priority, copies, delivered, read, acked }))

t.test('the page and its files are served without a token, with their types; an unknown file is a JSON 404', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN, BUS_METRICS_TOKEN: METRICS })
  const page = await app.inject({ url: '/dashboard' })
  t.equal(page.statusCode, 200)
  t.equal(page.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(page.body, readFileSync(new URL('../../dashboard/index.html', import.meta.url), 'utf8'))
  for (const file of ['dashboard.js', 'dashboard.css', 'uPlot.js', 'uPlot.css']) t.match(page.body, `/dashboard/${file}`, `the page loads ${file}`)

  const require = createRequire(import.meta.url)
  const assets: Array<[string, string, string]> = [
    ['dashboard.js', 'text/javascript; charset=utf-8', new URL('../../dashboard/dashboard.js', import.meta.url).pathname],
    ['dashboard.css', 'text/css; charset=utf-8', new URL('../../dashboard/dashboard.css', import.meta.url).pathname],
    ['uPlot.js', 'text/javascript; charset=utf-8', require.resolve('uplot/dist/uPlot.iife.min.js')],
    ['uPlot.css', 'text/css; charset=utf-8', require.resolve('uplot/dist/uPlot.min.css')]
  ]
  for (const [file, type, path] of assets) {
    const res = await app.inject({ url: `/dashboard/${file}` })
    t.equal(res.statusCode, 200, file)
    t.equal(res.headers['content-type'], type, `${file} is ${type}`)
    t.equal(res.headers['cache-control'], 'no-cache', `${file} is revalidated`)
    t.equal(res.body, readFileSync(path, 'utf8'), `${file} is the file`)
  }

  for (const name of ['nope.js', 'index.html', 'DASHBOARD.JS', '__proto__', 'constructor', 'hasOwnProperty', '..%2Fpackage.json', '..%2F..%2Fetc%2Fpasswd']) {
    const res = await app.inject({ url: `/dashboard/${name}` })
    t.equal(res.statusCode, 404, `${name}: 404`)
    t.match(res.headers['content-type'], /^application\/json/, `${name}: JSON`)
    t.match(res.json(), { statusCode: 404, code: 'BUS_ROUTE_NOT_FOUND', error: 'Not Found', message: `no file ${decodeURIComponent(name)} in the dashboard` })
  }
})

t.test('with tokens set, the stream takes the admin and the metrics token only', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN, BUS_METRICS_TOKEN: METRICS })
  const alice = await register(app, 'alice', {}, bearer(ADMIN))

  // Refused before the stream starts: inject() is enough.
  const missing = await app.inject({ url: '/dashboard/events' })
  t.equal(missing.statusCode, 401, 'no header')
  t.equal(missing.headers['www-authenticate'], 'Bearer')
  t.match(missing.json(), { statusCode: 401, code: 'BUS_UNAUTHORIZED' })
  const basic = await app.inject({ url: '/dashboard/events', headers: { authorization: 'Basic YWRtaW46YWRtaW4=' } })
  t.equal(basic.statusCode, 401, 'not a bearer token')
  t.equal(basic.headers['www-authenticate'], 'Bearer')
  for (const [who, token] of [['an agent token', alice.token], ['a wrong token', 'not-a-token-of-this-bus'], ['the admin token with more', `${ADMIN}x`]]) {
    const res = await app.inject({ url: '/dashboard/events', headers: { ...bearer(token), accept: 'text/event-stream' } })
    t.equal(res.statusCode, 403, `${who}: 403`)
    t.match(res.json(), { statusCode: 403, code: 'BUS_FORBIDDEN', message: /BUS_ADMIN_TOKEN.*BUS_METRICS_TOKEN/ })
  }

  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  for (const [who, token] of [['the admin token', ADMIN], ['the metrics token', METRICS]]) {
    const stream = await openDashboard(t, base, token)
    const [first] = await stream.until(1, WAIT_MS)
    t.equal(first.type, 'snapshot', `${who} gets a snapshot`)
    t.match(first.data, { totals: { agents: 1 }, agents: [{ name: 'alice' }] })
    stream.close()
  }
  // A refused stream over HTTP is refused the same way, and gets no snapshot.
  const refused = openStream(`${base}/dashboard/events`, alice.token, { kinds: ['snapshot'] })
  t.teardown(() => refused.close())
  await t.rejects(refused.opened, /stream failed/, 'an agent token opens no stream')
  t.equal(refused.events.length, 0)
})

t.test('with no token set, anyone reads the stream, with or without a header', async (t) => {
  const app = await build(t)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  await register(app, 'solo')
  const stream = await openDashboard(t, base, 'whatever-anyone-sends')
  const [first] = await stream.until(1, WAIT_MS)
  t.match(first.data, { totals: { agents: 1, messages: 0 }, agents: [{ name: 'solo', status: 'offline', unread: 0 }] })

  const controller = new AbortController()
  t.teardown(() => controller.abort())
  const res = await fetch(`${base}/dashboard/events`, { signal: controller.signal })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'text/event-stream')
  const reader = res.body!.getReader()
  let text = ''
  while (!text.includes('\n\n')) {
    const { value, done } = await reader.read()
    if (done) break
    text += Buffer.from(value).toString()
  }
  t.match(text, /^event: snapshot\ndata: \{/m, 'a first snapshot, without any Authorization header')
  controller.abort()
})

t.test('a snapshot tells the totals, agents, latest messages, topics and queues as they are, and never a body', async (t) => {
  const app = await build(t)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const [alice, bob, carol, dave] = [await register(app, 'alice'), await register(app, 'bob'), await register(app, 'carol'), await register(app, 'dave')]
  await ok(await app.inject({ method: 'POST', url: '/topics', headers: alice.auth, payload: { name: 'builds' } }), 201)
  await ok(await app.inject({ method: 'PUT', url: '/topics/builds/subscription', headers: bob.auth }))
  await ok(await app.inject({ method: 'POST', url: '/queues', headers: alice.auth, payload: { name: 'jobs' } }), 201)
  await ok(await app.inject({ method: 'POST', url: '/queues', headers: alice.auth, payload: { name: 'flaky', max_deliveries: 1 } }), 201)
  const stream = await openDashboard(t, base, 'anyone')

  const direct = await sent(app, alice, { to: 'bob', subject: 'direct one', priority: 'high' })
  const everyone = await sent(app, alice, { subject: 'to all' })
  const build1 = await sent(app, alice, { topic: 'builds', subject: 'build 1', priority: 'urgent' })
  // carol subscribes after build 1: it is not hers.
  await ok(await app.inject({ method: 'PUT', url: '/topics/builds/subscription', headers: carol.auth }))
  const jobA = await sent(app, alice, { queue: 'jobs', subject: 'job a' })
  const jobB = await sent(app, alice, { queue: 'jobs', subject: 'job b' })
  const doomed = await sent(app, alice, { queue: 'flaky', subject: 'doomed' })
  const pair = await sent(app, bob, { to: ['carol', 'dave'], subject: 'pair' })

  const one = await fresh(app, stream)
  t.notMatch(JSON.stringify(one), BODY, 'no body in a snapshot')
  t.notMatch(JSON.stringify(one), DATA, 'no data in a snapshot')
  t.match(one.bus, { engine, schema_version: String, size_bytes: Number, uptime_s: Number })
  t.ok(one.bus.size_bytes > 0)
  t.strictSame(one.totals, { agents: 4, online: 3, messages: 7, unread: 7, archived: 0, webhooks_pending: 0 },
    'dave never called: offline; unread: bob 3, carol 2, dave 2')
  t.strictSame(agentsOf(one), [['alice', 'online', 0], ['bob', 'online', 3], ['carol', 'online', 2], ['dave', 'offline', 2]],
    'online first; unread counts the broadcast copies not yet made, and build 1 for bob only')
  t.equal(one.more_agents, false)
  t.equal(sum(one.agents.map((a) => a.unread)), one.totals.unread, 'the agents\' unread add up to the total')
  const message = (id: number, from: string, subject: string, fields: Record<string, unknown> = {}) => ({
    id, from, to: null, topic: null, queue: null, subject, priority: 'normal', copies: 0, delivered: 0, read: 0, acked: false, ...fields
  })
  t.strictSame(latestOf(one), [
    message(pair, 'bob', 'pair', { to: ['carol', 'dave'], copies: 2 }),
    message(doomed, 'alice', 'doomed', { queue: 'flaky' }),
    message(jobB, 'alice', 'job b', { queue: 'jobs' }),
    message(jobA, 'alice', 'job a', { queue: 'jobs' }),
    message(build1, 'alice', 'build 1', { topic: 'builds', priority: 'urgent' }),
    message(everyone, 'alice', 'to all'),
    message(direct, 'alice', 'direct one', { to: ['bob'], priority: 'high', copies: 1 })
  ], 'newest first; a broadcast and a topic message have no copies until read')
  for (const m of one.latest) t.ok(Number.isFinite(Date.parse(m.created_at)), `message ${m.id} has its time`)
  t.strictSame(one.topics, [{ name: 'builds', subscribers: 2 }])
  t.strictSame(one.queues, [
    { name: 'flaky', available: 1, delayed: 0, leased: 0, dead: 0 },
    { name: 'jobs', available: 2, delayed: 0, leased: 0, dead: 0 }
  ])
  t.strictSame(one.failing_webhooks, [])
  t.strictSame([sum(one.traffic.normal), sum(one.traffic.high), sum(one.traffic.urgent)], [5, 1, 1], 'the traffic of the last hour, by priority')

  // bob reads his inbox (three copies delivered: the direct one, the broadcast's and build 1's, made now) and acks
  // the direct one; carol finishes job a; dave claims job b; carol's claim of doomed, released, makes it dead.
  t.equal((await ok<{ messages: unknown[] }>(await app.inject({ url: '/inbox', headers: bob.auth }))).messages.length, 3)
  await ok(await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [direct] } }))
  const claim = async (who: Registered, queue: string) =>
    (await ok<{ messages: Array<{ message: { id: number } }> }>(await app.inject({ method: 'POST', url: `/queues/${queue}/claim`, headers: who.auth, payload: {} })))
      .messages.map((m) => m.message.id)
  t.strictSame(await claim(carol, 'jobs'), [jobA])
  t.match(await ok(await app.inject({ method: 'POST', url: '/queues/jobs/ack', headers: carol.auth, payload: { ids: [jobA] } })), { acked: 1 })
  t.strictSame(await claim(dave, 'jobs'), [jobB])
  t.strictSame(await claim(carol, 'flaky'), [doomed])
  t.match(await ok(await app.inject({ method: 'POST', url: '/queues/flaky/release', headers: carol.auth, payload: { ids: [doomed] } })), { dead: 1 })

  const two = await fresh(app, stream)
  t.notMatch(JSON.stringify(two), BODY, 'no body in a snapshot')
  t.match(two.totals, { agents: 4, online: 4, messages: 7, unread: 6 }, 'dave is online now; bob acked one')
  t.equal(sum(two.agents.map((a) => a.unread)), two.totals.unread, 'the agents\' unread add up to the total')
  t.strictSame(agentsOf(two), [['alice', 'online', 0], ['bob', 'online', 2], ['carol', 'online', 2], ['dave', 'online', 2]],
    'bob\'s ack dropped his unread by one; reading the inbox is no ack')
  t.strictSame(latestOf(two), [
    message(pair, 'bob', 'pair', { to: ['carol', 'dave'], copies: 2 }),
    message(doomed, 'alice', 'doomed', { queue: 'flaky' }),
    message(jobB, 'alice', 'job b', { queue: 'jobs' }),
    message(jobA, 'alice', 'job a', { queue: 'jobs', acked: true }),
    message(build1, 'alice', 'build 1', { topic: 'builds', priority: 'urgent', copies: 1, delivered: 1 }),
    message(everyone, 'alice', 'to all', { copies: 1, delivered: 1 }),
    message(direct, 'alice', 'direct one', { to: ['bob'], priority: 'high', copies: 1, delivered: 1, read: 1 })
  ], 'bob\'s copies delivered, the direct one read; job a acked')
  t.strictSame(two.queues, [
    { name: 'flaky', available: 0, delayed: 0, leased: 0, dead: 1 },
    { name: 'jobs', available: 0, delayed: 0, leased: 1, dead: 0 }
  ])

  // carol acks the pair and the broadcast without reading her inbox first: her broadcast copy is made and read at once.
  t.match(await ok(await app.inject({ method: 'POST', url: '/ack', headers: carol.auth, payload: { ids: [pair, everyone] } })), {})
  const three = await fresh(app, stream)
  t.equal(three.totals.unread, 4)
  t.equal(sum(three.agents.map((a) => a.unread)), three.totals.unread, 'the agents\' unread add up to the total')
  t.strictSame(agentsOf(three), [['alice', 'online', 0], ['bob', 'online', 2], ['carol', 'online', 0], ['dave', 'online', 2]])
  t.match(latestOf(three), [
    { id: pair, copies: 2, delivered: 0, read: 1 },
    {}, {}, {}, {},
    { id: everyone, copies: 2, delivered: 1, read: 1 }
  ], 'a copy acked unread counts as read, not as delivered')
  t.notMatch(JSON.stringify(three), BODY, 'no body in a snapshot')
})

// A port nothing listens on: the bus's attempts there fail at once.
async function closedPort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

t.test('an agent whose webhook fails is listed with its pending deliveries and attempts, by host only', async (t) => {
  const app = await build(t, { BUS_WEBHOOK_ALLOW_PRIVATE: 'true', BUS_WEBHOOK_RETRY_BASE_MS: '50' })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const port = await closedPort()
  const hooked = await register(app, 'hooked', { webhook_url: `http://127.0.0.1:${port}/private-path/hook?key=hunter2` })
  const alice = await register(app, 'alice')
  await sent(app, alice, { to: 'hooked', subject: 'knock knock' })
  await sent(app, alice, { subject: 'to all, hooked too' })

  // Wait until the bus has failed at least once for each, as the database says.
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    const rows = await app.db.selectFrom('deliveries as d').innerJoin('agents as a', 'a.id', 'd.recipient_id')
      .select(['d.webhook_attempts']).where('a.name', '=', 'hooked').execute()
    if (rows.length === 2 && rows.every((r) => r.webhook_attempts >= 1)) break
    if (Date.now() > deadline) throw new Error(`the webhook attempts did not fail: ${JSON.stringify(rows)}`)
    await sleep(20)
  }

  const stream = await openDashboard(t, base, 'anyone')
  const s = await fresh(app, stream)
  t.equal(s.failing_webhooks.length, 1, 'one agent failing')
  const [failing] = s.failing_webhooks
  t.match(failing, { agent: 'hooked', host: `127.0.0.1:${port}`, next_at: String })
  t.ok(failing.pending >= 1 && failing.pending <= 2, `its deliveries pending (${failing.pending})`)
  t.ok(failing.attempts >= 1, `with the attempts made (${failing.attempts})`)
  t.ok(s.totals.webhooks_pending >= 1)
  t.notMatch(JSON.stringify(s), /private-path|hunter2|key=/, 'neither the path nor the query of the URL')
  t.notMatch(JSON.stringify(s), BODY)
  t.match(s.agents.find((a) => a.name === 'hooked'), { unread: 2 }, 'its copies are unread: a webhook that fails delivers nothing')
  await app.inject({ method: 'PATCH', url: '/agents/hooked', headers: hooked.auth, payload: { webhook_url: null } })
  // An attempt under way when the webhook went may still end; the next snapshots settle without it.
  await snapshotWhere(stream, 'without the removed webhook', (x) => x.failing_webhooks.length === 0 && x.totals.webhooks_pending === 0)
  t.pass('gone once the webhook is removed')
})

// The dashboard alone on a bare Fastify, with its periodic refresh an hour away: every snapshot after the first is
// made because of an event of the bus.
async function bare (t: Test) {
  const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
  t.teardown(() => app.close())
  for (const schema of schemas) app.addSchema(schema)
  await app.register(db, { url: await testDb(t), sync: 'normal' })
  await app.register(fanout, { maxReadersPerAgent: 4 })
  await app.register(bus, { maxMessageBytes: 65536, recheckMs: 1000, sweepMs: 0 })
  await app.register(auth, { seenEveryMs: 1000 })
  await app.register(messages)
  await app.register(dashboard, { refreshMs: 3_600_000 })
  await app.ready()
  const now = new Date().toISOString()
  await createAgent(app.db, 'alice', {}, hashToken('alice-token-0123'), now)
  await createAgent(app.db, 'bob', {}, hashToken('bob-token-0123'), now)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, base }
}

t.test('live: a send brings a snapshot with it; a burst of sends brings far fewer snapshots, the last one with all of them', async (t) => {
  const { app, base } = await bare(t)
  const stream = await openDashboard(t, base, 'anyone')
  await stream.until(1, WAIT_MS)
  t.match(stream.events[0].data, { totals: { agents: 2, messages: 0 } })

  const live = await ok<{ id: number }>(await app.inject({ method: 'POST', url: '/send', headers: bearer('alice-token-0123'), payload: { to: 'bob', subject: 'live one', body: BODY } }), 201)
  const { snapshot: seen } = await snapshotWhere(stream, 'with the message sent', (s) => s.latest.some((m) => m.id === live.id))
  t.match(seen, { totals: { messages: 1, unread: 1 }, latest: [{ id: live.id, from: 'alice', to: ['bob'], subject: 'live one' }] })
  t.match(seen.agents.find((a) => a.name === 'bob'), { unread: 1 })

  // A burst: every send publishes an event, and snapshots are made at most one per 250 ms.
  const SENDS = 100
  const before = stream.events.length
  const started = Date.now()
  const ids = await Promise.all(Array.from({ length: SENDS }, async (_, i) => (await ok<{ id: number }>(await app.inject({
    method: 'POST', url: '/send', headers: bearer(i % 2 === 0 ? 'alice-token-0123' : 'bob-token-0123'), payload: { to: i % 2 === 0 ? 'bob' : 'alice', subject: `burst ${i}`, body: BODY, priority: i % 10 === 0 ? 'urgent' : 'normal' }
  }), 201)).id))
  const { snapshot: last, index } = await snapshotWhere(stream, `with all ${SENDS + 1} messages`, (s) => s.totals.messages === SENDS + 1, before)
  const elapsed = Date.now() - started
  const snapshots = index + 1 - before
  t.comment(`${SENDS} sends brought ${snapshots} snapshots in ${elapsed} ms`)
  t.ok(snapshots >= 1, 'at least one snapshot after the burst')
  t.ok(snapshots <= SENDS / 2, `far fewer snapshots (${snapshots}) than sends (${SENDS})`)
  // Made at most one per 250 ms, plus one that may have been under way when the burst began: a bound whatever the
  // machine's speed.
  t.ok(snapshots <= Math.floor(elapsed / 250) + 2, `at most one per 250 ms (${snapshots} in ${elapsed} ms)`)

  const newest = [...ids, live.id].sort((a, b) => b - a).slice(0, 25)
  t.strictSame(last.latest.map((m) => m.id), newest, 'the last snapshot shows the newest 25, newest first')
  t.match(last.totals, { messages: SENDS + 1, unread: SENDS + 1 })
  t.strictSame(agentsOf(last), [['alice', 'online', SENDS / 2], ['bob', 'online', SENDS / 2 + 1]])
  t.equal(sum(last.traffic.normal) + sum(last.traffic.high) + sum(last.traffic.urgent), SENDS + 1, 'every message in the traffic')
  t.equal(sum(last.traffic.urgent), SENDS / 10)
  t.notMatch(JSON.stringify(last), BODY)
})

t.test('live: every open dashboard gets the same snapshot, and one opened later starts from it', async (t) => {
  const { app, base } = await bare(t)
  const first = await openDashboard(t, base, 'anyone')
  await first.until(1, WAIT_MS)
  const second = await openDashboard(t, base, 'anyone')
  await second.until(1, WAIT_MS)
  t.strictSame(second.events[0].data, first.events.at(-1)?.data, 'the second starts from the snapshot the first has')
  const { id } = await ok<{ id: number }>(await app.inject({ method: 'POST', url: '/send', headers: bearer('bob-token-0123'), payload: { subject: 'for all', body: BODY } }), 201)
  const has = (s: Snapshot) => s.latest.some((m) => m.id === id)
  const [a, b] = await Promise.all([snapshotWhere(first, 'with the broadcast', has), snapshotWhere(second, 'with the broadcast', has)])
  t.strictSame(a.snapshot, b.snapshot, 'one snapshot for both')
  t.match(a.snapshot, { latest: [{ id, from: 'bob', to: null, subject: 'for all' }], agents: [{ name: 'bob', status: 'online', unread: 0 }, { name: 'alice', status: 'offline', unread: 1 }] })
})

t.test('a snapshot that fails leaves the dashboards open; the next one comes when the database serves again', async (t) => {
  const { app, base } = await bare(t)
  const stream = await openDashboard(t, base, 'anyone')
  await stream.until(1, WAIT_MS)
  const alice = bearer('alice-token-0123')
  // A table gone from under the bus (renamed: both engines then fail every query that names it): snapshots fail.
  await app.db.schema.alterTable('queue_entries').renameTo('queue_entries_gone').execute()
  const before = stream.events.length
  const lost = await ok<{ id: number }>(await app.inject({ method: 'POST', url: '/send', headers: alice, payload: { to: 'bob', subject: 'while broken', body: BODY } }), 201)
  // The snapshot that send asked for fails; wait for the bus to be past it (a later event makes another).
  await sleep(600)
  t.equal(stream.events.length, before, 'no snapshot while the database fails them')
  await app.db.schema.alterTable('queue_entries_gone').renameTo('queue_entries').execute()
  const next = await ok<{ id: number }>(await app.inject({ method: 'POST', url: '/send', headers: alice, payload: { to: 'bob', subject: 'repaired', body: BODY } }), 201)
  const { snapshot } = await snapshotWhere(stream, 'after the repair', (s) => s.latest.some((m) => m.id === next.id))
  t.strictSame(snapshot.latest.map((m) => m.id), [next.id, lost.id], 'the same stream goes on, with both messages')
})

t.test('closing the bus ends open dashboards; close() does not wait for them', async (t) => {
  const app = await build(t)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  await register(app, 'alice')
  const readers = await Promise.all([0, 1].map(async () => {
    const res = await fetch(`${base}/dashboard/events`)
    t.equal(res.status, 200)
    const reader = res.body!.getReader()
    let text = ''
    while (!text.includes('event: snapshot')) {
      const { value, done } = await reader.read()
      if (done) throw new Error('the stream ended before its first snapshot')
      text += Buffer.from(value).toString()
    }
    return reader
  }))
  const closing = app.close()
  for (const reader of readers) {
    for (;;) {
      const { done } = await reader.read()
      if (done) break
    }
  }
  t.pass('both streams ended')
  await closing
  t.pass('close() resolved with dashboards open')
})
