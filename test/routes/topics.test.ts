import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { build, register, send, until, type Env, type Registered, type TestApp } from '../helper.js'
import { openStream } from '../sse.js'
import { receiver, verify } from '../webhook-receiver.js'

// Registering and subscribing 200 agents over HTTP, and reading 200 inboxes and histories, takes longer than tap's
// default of 120 s on a busy machine (and on PostgreSQL).
t.setTimeout(600_000)

// The webhook receivers listen on 127.0.0.1, which webhooks may not reach by default (as in test/plugins/webhooks.test.ts).
const local = { BUS_WEBHOOK_ALLOW_PRIVATE: 'true' }

interface Item {
  id: number
  from: string
  to: string[]
  broadcast: boolean
  topic: string | null
  body: string
  priority: string
  delivered_at: string | null
  read_at: string | null
}
interface Receipt { agent: string, delivered_at: string | null, read_at: string | null }

async function serve (t: Parameters<typeof build>[0], env: Env = {}) {
  const app = await build(t, env)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, base }
}

// PUT and DELETE go without a body and without a content-type, as a client that has nothing to send sends them.
const subscribe = (app: TestApp, who: Registered, topic: string) =>
  app.inject({ method: 'PUT', url: `/topics/${topic}/subscription`, headers: who.auth })
const unsubscribe = (app: TestApp, who: Registered, topic: string) =>
  app.inject({ method: 'DELETE', url: `/topics/${topic}/subscription`, headers: who.auth })
const createTopic = (app: TestApp, who: Registered, payload: Record<string, unknown>) =>
  app.inject({ method: 'POST', url: '/topics', headers: who.auth, payload })

async function ok<T = any> (res: { statusCode: number, body: string, json: () => any }, status = 200): Promise<T> {
  if (res.statusCode !== status) throw new Error(`expected ${status}, got ${res.statusCode}: ${res.body}`)
  return res.json() as T
}

const topicsSeenBy = async (app: TestApp, who: Registered) =>
  (await ok<{ topics: Array<Record<string, unknown>> }>(await app.inject({ url: '/topics', headers: who.auth }))).topics
const inbox = async (app: TestApp, who: Registered, query = ''): Promise<Item[]> =>
  (await ok(await app.inject({ url: `/inbox${query}`, headers: who.auth }))).messages
const history = async (app: TestApp, who: Registered, query = ''): Promise<Item[]> =>
  (await ok(await app.inject({ url: `/history${query}`, headers: who.auth }))).messages
const receiptsOf = async (app: TestApp, sender: Registered, id: number): Promise<Receipt[]> =>
  (await ok(await app.inject({ url: `/messages/${id}`, headers: sender.auth }))).receipts
const ack = async (app: TestApp, who: Registered, ids: number[]) =>
  ok(await app.inject({ method: 'POST', url: '/ack', headers: who.auth, payload: { ids } }))
const statsOf = async (app: TestApp, who: Registered) =>
  (await ok(await app.inject({ url: '/stats', headers: who.auth }))).messages as { total: number, unread: number, by_priority: Record<string, number> }
const unreadOf = async (app: TestApp, who: Registered): Promise<number> =>
  (await ok(await app.inject({ method: 'POST', url: '/heartbeat', headers: who.auth }))).unread

async function publish (app: TestApp, from: Registered, topic: string, body: string, priority = 'normal') {
  return ok<{ id: number, recipients: number, topic: string, broadcast: boolean, to: string[] }>(await send(app, from, { topic, body, priority }), 201)
}

// The delivery rows an agent has (its copies made so far), from the database.
async function rowsOf (app: TestApp, name: string): Promise<number> {
  const row = await app.db.selectFrom('deliveries as d').innerJoin('agents as a', 'a.id', 'd.recipient_id')
    .select((eb) => eb.fn.countAll().as('n')).where('a.name', '=', name).executeTakeFirstOrThrow()
  return Number(row.n)
}

// Runs fn over the items, `size` at a time.
async function inChunks<T, R> (items: T[], size: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = []
  for (let from = 0; from < items.length; from += size) {
    out.push(...await Promise.all(items.slice(from, from + size).map((item, k) => fn(item, from + k))))
  }
  return out
}

const ids = (items: Array<{ id: number }>) => items.map((m) => m.id)

t.test('topics: create, list, subscribe and unsubscribe idempotently', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')

  t.strictSame(await topicsSeenBy(app, alice), [], 'no topics yet')
  const created = await createTopic(app, alice, { name: 'reviews', description: 'PRs that want a review' })
  t.equal(created.statusCode, 201)
  t.match(created.json(), { name: 'reviews', description: 'PRs that want a review', created_by: 'alice', created_at: String, subscribers: 0, subscribed: false })
  t.match(await ok(await createTopic(app, bob, { name: 'alerts' }), 201), { name: 'alerts', description: null, created_by: 'bob' })

  const taken = await createTopic(app, bob, { name: 'reviews', description: 'mine now' })
  t.equal(taken.statusCode, 409)
  t.match(taken.json(), { code: 'BUS_TOPIC_TAKEN' })
  t.match((await topicsSeenBy(app, bob)).find((x) => x.name === 'reviews'), { description: 'PRs that want a review', created_by: 'alice' },
    'the refused create changed nothing')

  for (const name of ['Reviews', '-reviews', 'has space', '', 'a'.repeat(65), 'slash/x', 'ünï']) {
    t.equal((await createTopic(app, alice, { name })).statusCode, 400, `bad name ${JSON.stringify(name)}`)
  }
  t.equal((await createTopic(app, alice, { name: 'extra', owner: 'x' })).statusCode, 400, 'unknown properties are refused')
  t.equal((await createTopic(app, alice, { name: 'nul', description: 'a\u0000b' })).statusCode, 400, 'a NUL in the description')
  t.equal((await app.inject({ method: 'POST', url: '/topics', payload: { name: 'anon' } })).statusCode, 401)
  t.equal((await app.inject({ url: '/topics' })).statusCode, 401)
  t.equal((await app.inject({ method: 'PUT', url: '/topics/reviews/subscription' })).statusCode, 401)

  // The creator is not subscribed.
  t.strictSame((await topicsSeenBy(app, alice)).map((x) => [x.name, x.subscribers, x.subscribed]), [['alerts', 0, false], ['reviews', 0, false]],
    'by name, the creator not subscribed')

  const first = await subscribe(app, bob, 'reviews')
  t.equal(first.statusCode, 200)
  t.strictSame(first.json(), { topic: 'reviews', subscribed: true, changed: true })
  t.strictSame(await ok(await subscribe(app, bob, 'reviews')), { topic: 'reviews', subscribed: true, changed: false }, 'subscribing again changes nothing')
  t.strictSame(await ok(await subscribe(app, carol, 'reviews')), { topic: 'reviews', subscribed: true, changed: true })

  t.strictSame((await topicsSeenBy(app, alice)).map((x) => [x.name, x.subscribers, x.subscribed]), [['alerts', 0, false], ['reviews', 2, false]])
  t.strictSame((await topicsSeenBy(app, bob)).map((x) => [x.name, x.subscribers, x.subscribed]), [['alerts', 0, false], ['reviews', 2, true]])

  for (const res of [await subscribe(app, bob, 'nope'), await unsubscribe(app, bob, 'nope')]) {
    t.equal(res.statusCode, 404)
    t.match(res.json(), { code: 'BUS_TOPIC_NOT_FOUND' })
  }
  t.equal((await subscribe(app, bob, 'Not-Valid')).statusCode, 400, 'a bad name in the path')

  t.strictSame(await ok(await unsubscribe(app, bob, 'reviews')), { topic: 'reviews', subscribed: false, changed: true })
  t.strictSame(await ok(await unsubscribe(app, bob, 'reviews')), { topic: 'reviews', subscribed: false, changed: false }, 'unsubscribing again changes nothing')
  t.strictSame(await ok(await unsubscribe(app, alice, 'reviews')), { topic: 'reviews', subscribed: false, changed: false }, 'never subscribed')
  t.strictSame((await topicsSeenBy(app, bob)).map((x) => [x.name, x.subscribers, x.subscribed]), [['alerts', 0, false], ['reviews', 1, false]])
  t.strictSame((await topicsSeenBy(app, carol)).map((x) => [x.name, x.subscribers, x.subscribed]), [['alerts', 0, false], ['reviews', 1, true]])
})

t.test('POST /send with a topic: alternatives refused, unknown topics store nothing, the sender gets no copy', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const dave = await register(app, 'dave')
  await ok(await createTopic(app, alice, { name: 'news' }), 201)
  for (const who of [alice, bob, carol]) await ok(await subscribe(app, who, 'news'))
  const before = await statsOf(app, alice)

  for (const payload of [{ to: 'bob', topic: 'news', body: 'x' }, { to: ['bob'], topic: 'news', body: 'x' }]) {
    const both = await send(app, alice, payload)
    t.equal(both.statusCode, 400)
    t.match(both.json(), { code: 'BUS_BAD_SEND' })
  }
  t.match((await send(app, alice, { topic: 'news', queue: 'jobs', body: 'x' })).json(), { statusCode: 400, code: 'BUS_BAD_SEND' })
  t.match((await send(app, alice, { topic: 'news', body: 'x', ack_within_s: 60 })).json(), { statusCode: 400, code: 'BUS_BAD_SEND' },
    'ack deadlines are for direct messages')
  const unknown = await send(app, alice, { topic: 'nope', body: 'lost?' })
  t.equal(unknown.statusCode, 404)
  t.match(unknown.json(), { code: 'BUS_TOPIC_NOT_FOUND', message: /nope/ })
  t.equal((await send(app, alice, { topic: 'Bad Name', body: 'x' })).statusCode, 400)

  t.strictSame(await statsOf(app, alice), before, 'nothing was stored or counted')
  t.strictSame(await history(app, alice), [], 'nothing in the sender\'s history')
  for (const who of [bob, carol, dave]) t.strictSame(await inbox(app, who), [], `nothing reached ${who.name}`)

  const sent = await publish(app, alice, 'news', 'hello subscribers', 'high')
  t.match(sent, { topic: 'news', broadcast: false, to: [], recipients: 2, from: 'alice' }, 'the subscribers but the sender')
  t.strictSame(await inbox(app, alice), [], 'the sender, though subscribed, gets no copy of its own message')
  t.equal(await unreadOf(app, alice), 0)
  for (const who of [bob, carol]) {
    t.match(await inbox(app, who), [{ id: sent.id, from: 'alice', topic: 'news', broadcast: false, to: [], body: 'hello subscribers', priority: 'high' }])
  }
  t.strictSame(await inbox(app, dave), [], 'a non-subscriber gets nothing')
  t.equal((await app.inject({ url: `/messages/${sent.id}`, headers: dave.auth })).statusCode, 404, 'nor can see it')
  t.match(await statsOf(app, alice), { total: before.total + 1, unread: before.unread + 2 })

  // The sender's history has it under the topic; an unknown topic there is a 404 too.
  t.strictSame(ids(await history(app, alice, '?topic=news')), [sent.id])
  t.strictSame(ids(await history(app, bob, '?topic=news')), [sent.id])
  t.strictSame(await history(app, dave, '?topic=news'), [])
  const noTopic = await app.inject({ url: '/history?topic=nope', headers: bob.auth })
  t.equal(noTopic.statusCode, 404)
  t.match(noTopic.json(), { code: 'BUS_TOPIC_NOT_FOUND' })

  // A replay of an idempotent publish answers the first result and stores nothing.
  const keyed = await ok(await send(app, alice, { topic: 'news', body: 'once' }, { 'idempotency-key': 'k1' }), 201)
  const replay = await send(app, alice, { topic: 'news', body: 'once' }, { 'idempotency-key': 'k1' })
  t.equal(replay.headers['idempotent-replayed'], 'true')
  t.match(replay.json(), { id: keyed.id, topic: 'news', recipients: 2 })
  t.equal((await send(app, alice, { topic: 'other', body: 'once' }, { 'idempotency-key': 'k1' })).statusCode, 422,
    'the same key for another topic is another request')
  t.strictSame(ids(await inbox(app, bob)).sort((a, b) => a - b), [sent.id, keyed.id])
})

t.test('a topic with 200 subscribers: each gets each message exactly once, in order, by inbox, long-poll, stream, webhook and history', async (t) => {
  const hook = await receiver(() => 204)
  t.teardown(hook.close)
  const { app, base } = await serve(t, local)
  const publisher = await register(app, 'publisher')
  const outsider = await register(app, 'outsider')
  await ok(await createTopic(app, publisher, { name: 'news' }), 201)
  await ok(await createTopic(app, publisher, { name: 'other' }), 201)

  // Subscriber 0 takes its messages by webhook; the others poll, stream or read.
  const hooked = await ok(await app.inject({ method: 'POST', url: '/agents', payload: { name: 'sub-000', webhook_url: hook.url } }), 201)
  const subscribers: Registered[] = [{ name: 'sub-000', token: hooked.token, auth: { authorization: `Bearer ${hooked.token}` } }]
  subscribers.push(...await inChunks(Array.from({ length: 199 }, (_, i) => `sub-${String(i + 1).padStart(3, '0')}`), 25, (name) => register(app, name)))
  await inChunks(subscribers, 25, async (who) => ok(await subscribe(app, who, 'news')))
  // The publisher subscribes too: it must still not get its own messages.
  await ok(await subscribe(app, publisher, 'news'))
  t.match((await topicsSeenBy(app, outsider)).find((x) => x.name === 'news'), { subscribers: 201, subscribed: false })

  // A handful of real SSE streams, not 200: each is a socket and an EventSource client in this process, and 200
  // concurrent streams are already proven by test/routes/stream.test.ts; a stream reader is woken for a topic message
  // the same way whichever agent it is (by the recipient ids of the publish), so a few show that topic messages reach
  // streams exactly once and in order, while the inbox and history checks cover all 200.
  const streamers = subscribers.slice(1, 6)
  const streams = streamers.map((who) => openStream(`${base}/stream`, who.token))
  t.teardown(() => { for (const s of streams) s.close() })
  await Promise.all(streams.map((s) => s.opened))
  const pollers = subscribers.slice(6, 11)

  const plan = [['first', 'normal'], ['second', 'high'], ['third', 'urgent']] as const
  const published: number[] = []
  for (const [round, [body, priority]] of plan.entries()) {
    // Long-polls started before the publish (each poller acked what it got before, so it has nothing unread) …
    const polls = pollers.map((who) => app.inject({ url: '/inbox?wait=30&unread=true', headers: who.auth }))
    // … and waiting: every stream and every long-poll holds a reader, so once there are as many the publish
    // cannot come before a long-poll began to wait.
    await until('the long-polls wait', () => app.readers.all().length === streams.length + pollers.length)
    const sent = await publish(app, publisher, 'news', body, priority)
    t.equal(sent.recipients, 200, `${body}: every subscriber but the publisher`)
    published.push(sent.id)

    const answered = await Promise.all(polls)
    for (const [k, res] of answered.entries()) {
      t.equal(res.statusCode, 200)
      const got = res.json().messages as Item[]
      t.strictSame(got.map((m) => [m.id, m.topic, m.body]), [[sent.id, 'news', body]], `${pollers[k].name}'s long-poll answered with ${body}`)
      await ack(app, pollers[k], [sent.id])
    }
    // Each message reaches the streams and the webhook before the next is published, so the order each channel
    // shows is the order of publishing (concurrent webhook attempts for one agent may otherwise arrive in any order).
    await Promise.all(streams.map((s) => s.until(round + 1, 30_000)))
    await until(`the webhook push of ${body}`, () => hook.hits.length >= round + 1)
  }
  const [m1, m2, m3] = published

  // Nothing more arrives later: no duplicate on any channel.
  await sleep(300)
  for (const [k, s] of streams.entries()) {
    t.strictSame(s.events.map((e) => [Number(e.id), e.data.id, e.data.topic]), [[m1, m1, 'news'], [m2, m2, 'news'], [m3, m3, 'news']],
      `${streamers[k].name}'s stream: each message once, in the order published`)
  }
  t.strictSame(hook.hits.map((h) => [h.status, JSON.parse(h.body).id]), [[204, m1], [204, m2], [204, m3]], 'the webhook got each message once, in order')
  for (const hit of hook.hits) {
    t.ok(verify(hooked.webhook_secret, hit), 'signed')
    t.match(JSON.parse(hit.body), { from: 'publisher', topic: 'news', broadcast: false, to: [] })
  }

  // A stream opened now gets the unread backlog in inbox order: urgent, high, normal.
  const late = openStream(`${base}/stream`, subscribers[199].token)
  t.teardown(late.close)
  t.strictSame((await late.until(3, 30_000)).map((e) => e.data.id), [m3, m2, m1], 'a backlog in priority order')
  late.close()

  // Every subscriber's inbox: the three, most urgent first, each once; reading again makes no second copy.
  const inboxes = await inChunks(subscribers, 25, (who) => inbox(app, who))
  const wrong = inboxes.map((got, i) => [subscribers[i].name, got] as const)
    .filter(([, got]) => JSON.stringify(got.map((m) => [m.id, m.topic, m.from, m.priority])) !==
      JSON.stringify([[m3, 'news', 'publisher', 'urgent'], [m2, 'news', 'publisher', 'high'], [m1, 'news', 'publisher', 'normal']]))
  t.strictSame(wrong, [], 'all 200 inboxes hold the three, urgent first, with their topic')
  t.match(inboxes[0], [{ delivered_at: String }, { delivered_at: String }, { delivered_at: String }], 'the webhook subscriber\'s copies, delivered')
  t.strictSame(ids(await inbox(app, subscribers[42])), [m3, m2, m1], 'a second read is the same')
  for (const seq of published) {
    const rows = await app.db.selectFrom('deliveries').select((eb) => eb.fn.countAll().as('n')).where('message_seq', '=', seq).executeTakeFirstOrThrow()
    t.equal(Number(rows.n), 200, `message ${seq}: one row per subscriber, no more`)
  }

  // History by topic: the three in the order stored, for every subscriber.
  const histories = await inChunks(subscribers, 25, (who) => history(app, who, '?topic=news'))
  t.strictSame(histories.map((h, i) => [subscribers[i].name, ids(h)]).filter(([, got]) => JSON.stringify(got) !== JSON.stringify([m1, m2, m3])), [],
    'all 200 histories hold the three, oldest first')
  t.strictSame(await history(app, subscribers[7], '?topic=other'), [], 'another topic\'s history is empty')
  t.strictSame(ids(await history(app, publisher, '?topic=news')), [m1, m2, m3], 'the publisher\'s history has what it sent')

  t.strictSame(await inbox(app, publisher), [], 'the publisher got none of its own')
  t.strictSame(await inbox(app, outsider), [], 'a non-subscriber got nothing')
  t.strictSame(await history(app, outsider, '?topic=news'), [])
  t.equal((await app.inject({ url: `/messages/${m1}`, headers: outsider.auth })).statusCode, 404)

  const receipts = await receiptsOf(app, publisher, m1)
  t.strictSame(receipts.map((r) => r.agent), subscribers.map((s) => s.name), 'the receipts list the 200 subscribers, and no one else')
  t.strictSame(receipts.filter((r) => r.read_at !== null).map((r) => r.agent), pollers.map((p) => p.name), 'read by the pollers, who acked it')
})

t.test('a late subscriber gets only later messages; an unsubscriber keeps what it was sent, read or not, and gets nothing after', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const late = await register(app, 'late')
  const leaver = await register(app, 'leaver')
  await ok(await createTopic(app, alice, { name: 'builds' }), 201)
  for (const who of [bob, leaver]) await ok(await subscribe(app, who, 'builds'))

  const m1 = await publish(app, alice, 'builds', 'one')
  t.equal(m1.recipients, 2)
  await ok(await subscribe(app, late, 'builds'))
  const m2 = await publish(app, alice, 'builds', 'two')
  t.equal(m2.recipients, 3)

  // The leaver has read nothing: its copies of m1 and m2 are not made yet when it leaves.
  t.equal(await rowsOf(app, 'leaver'), 0, 'nothing fanned out to the leaver yet')
  const before = await statsOf(app, alice)
  t.strictSame(await ok(await unsubscribe(app, leaver, 'builds')), { topic: 'builds', subscribed: false, changed: true })
  t.equal((await statsOf(app, alice)).unread, before.unread, 'leaving changes no unread count: the copies stay the leaver\'s')

  const m3 = await publish(app, alice, 'builds', 'three')
  t.equal(m3.recipients, 2, 'bob and late, not the leaver')

  t.strictSame(ids(await inbox(app, late)), [m2.id, m3.id], 'the late subscriber: only what was published after it subscribed')
  t.strictSame(ids(await inbox(app, leaver)), [m1.id, m2.id], 'the leaver: what was published while it was subscribed, nothing after')
  t.strictSame(ids(await inbox(app, bob)), [m1.id, m2.id, m3.id])
  t.strictSame(ids(await history(app, leaver, '?topic=builds')), [m1.id, m2.id])
  t.strictSame(ids(await history(app, late, '?topic=builds')), [m2.id, m3.id])
  t.equal((await app.inject({ url: `/messages/${m1.id}`, headers: late.auth })).statusCode, 404, 'the late subscriber cannot see m1')

  t.strictSame((await receiptsOf(app, alice, m1.id)).map((r) => r.agent), ['bob', 'leaver'])
  t.strictSame((await receiptsOf(app, alice, m2.id)).map((r) => r.agent), ['bob', 'late', 'leaver'])
  t.strictSame((await receiptsOf(app, alice, m3.id)).map((r) => r.agent), ['bob', 'late'])

  // Acking its copies works as for any message; a long-poll of the leaver is not answered by a later publish.
  t.strictSame(await ack(app, leaver, [m1.id, m2.id, m3.id]), { acked: 2, already_read: 0, not_found: [m3.id] })
  const polling = app.inject({ url: '/inbox?wait=1&unread=true', headers: leaver.auth })
  await until('the leaver\'s long-poll waits', () => app.readers.all().length === 1)
  const m4 = await publish(app, alice, 'builds', 'four')
  t.strictSame((await polling).json().messages, [], 'nothing after leaving')
  t.strictSame(ids(await inbox(app, late)), [m2.id, m3.id, m4.id])

  // Subscribing again starts from now: not m4, which was published while it was away.
  t.strictSame(await ok(await subscribe(app, leaver, 'builds')), { topic: 'builds', subscribed: true, changed: true })
  const m5 = await publish(app, alice, 'builds', 'five')
  t.equal(m5.recipients, 3)
  t.strictSame(ids(await inbox(app, leaver)), [m1.id, m2.id, m5.id])
})

t.test('acking a topic message sends a read receipt to the publisher; its receipts list subscribers only', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const dave = await register(app, 'dave')
  await ok(await createTopic(app, alice, { name: 'ops' }), 201)
  for (const who of [bob, carol]) await ok(await subscribe(app, who, 'ops'))

  const receipts = openStream(`${base}/stream?receipts=true`, alice.token, { kinds: ['message', 'receipt'] })
  t.teardown(receipts.close)
  await receipts.opened
  const sent = await publish(app, alice, 'ops', 'deploying')
  const erin = await register(app, 'erin')
  await ok(await subscribe(app, erin, 'ops'))

  t.strictSame((await receiptsOf(app, alice, sent.id)).map((r) => [r.agent, r.delivered_at, r.read_at]), [['bob', null, null], ['carol', null, null]],
    'the subscribers at publish time, none delivered yet; not dave (no subscriber) nor erin (subscribed later)')

  // Bob acks without reading his inbox first.
  t.strictSame(await ack(app, bob, [sent.id]), { acked: 1, already_read: 0, not_found: [] })
  const events = await receipts.until(1, 30_000)
  t.match(events, [{ type: 'receipt', data: { message_id: sent.id, agent: 'bob', read_at: String } }], 'the publisher heard of it')
  t.strictSame(await ack(app, bob, [sent.id]), { acked: 0, already_read: 1, not_found: [] }, 'a second ack is idempotent')
  t.strictSame(await ack(app, dave, [sent.id]), { acked: 0, already_read: 0, not_found: [sent.id] }, 'a non-subscriber cannot ack it')
  t.strictSame(await ack(app, erin, [sent.id]), { acked: 0, already_read: 0, not_found: [sent.id] }, 'nor a later subscriber')
  await sleep(200)
  t.equal(receipts.events.length, 1, 'one receipt, for the one ack that read it')

  const after = await receiptsOf(app, alice, sent.id)
  t.match(after, [{ agent: 'bob', read_at: String }, { agent: 'carol', delivered_at: null, read_at: null }])
  t.equal(after.length, 2)
  t.match(await inbox(app, bob), [{ id: sent.id, topic: 'ops', read_at: String }])
})

t.test('a deregistered subscriber does not count', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  await ok(await createTopic(app, alice, { name: 'ops' }), 201)
  for (const who of [bob, carol]) await ok(await subscribe(app, who, 'ops'))
  t.equal((await publish(app, alice, 'ops', 'before')).recipients, 2)

  t.equal((await app.inject({ method: 'DELETE', url: '/agents/carol', headers: carol.auth })).statusCode, 204)
  t.match((await topicsSeenBy(app, alice)).find((x) => x.name === 'ops'), { subscribers: 1 })
  const sent = await publish(app, alice, 'ops', 'after')
  t.equal(sent.recipients, 1, 'only bob')
  t.strictSame((await receiptsOf(app, alice, sent.id)).map((r) => r.agent), ['bob'])
  t.match((await statsOf(app, alice)), { unread: 2 }, 'bob\'s two, none of carol\'s')
  t.strictSame((await inbox(app, bob)).map((m) => m.body), ['before', 'after'])
})

t.test('GET /stats unread follows topic publishes, acks, unsubscribes and deregistrations', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const dave = await register(app, 'dave')
  const erin = await register(app, 'erin')
  const frank = await register(app, 'frank')
  // Registered before any message and never reads: every topic message is past its broadcasts_upto, none is its.
  const ghost = await register(app, 'ghost')
  await ok(await createTopic(app, alice, { name: 'ci' }), 201)
  for (const who of [alice, bob, carol, dave, erin]) await ok(await subscribe(app, who, 'ci'))
  const unread = async () => (await statsOf(app, frank)).unread

  t.equal(await unread(), 0)
  const m1 = await publish(app, alice, 'ci', 'm1')
  t.equal(m1.recipients, 4)
  t.equal(await unread(), 4, 'a publish adds its subscribers but the sender')
  const m2 = await publish(app, alice, 'ci', 'm2', 'urgent')
  t.equal(await unread(), 8)
  t.match(await statsOf(app, frank), { total: 2, by_priority: { normal: 1, high: 0, urgent: 1 } })

  await ack(app, bob, [m1.id])
  t.equal(await unread(), 7, 'an ack (without reading first) takes one off')
  t.equal((await inbox(app, carol)).length, 2)
  t.equal(await unread(), 7, 'fanning out changes nothing')
  await ok(await unsubscribe(app, erin, 'ci'))
  t.equal(await unread(), 7, 'unsubscribing keeps the copies, unread')

  // Subscribes after m1 and m2, and never reads either.
  const latecomer = await register(app, 'latecomer')
  await ok(await subscribe(app, latecomer, 'ci'))
  const m3 = await publish(app, alice, 'ci', 'm3', 'high')
  t.equal(m3.recipients, 4, 'bob, carol, dave, latecomer')
  t.equal(await unread(), 11)

  // Dave has read nothing: his three are not fanned out when he goes.
  t.equal(await rowsOf(app, 'dave'), 0)
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/dave', headers: dave.auth })).statusCode, 204)
  t.equal(await unread(), 8, 'deregistering takes off unread copies not yet fanned out')
  // Carol has rows for m1 and m2 (read above, not acked) and none yet for m3.
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/carol', headers: carol.auth })).statusCode, 204)
  t.equal(await unread(), 5, 'and those fanned out, and both kinds together')
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/ghost', headers: ghost.auth })).statusCode, 204)
  t.equal(await unread(), 5, 'a non-subscriber takes off nothing for topic messages it never had')
  t.equal(await rowsOf(app, 'latecomer'), 0)
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/latecomer', headers: latecomer.auth })).statusCode, 204)
  t.equal(await unread(), 4, 'a late subscriber takes off only what was published after it subscribed')

  // What is left: bob's m2 and m3, erin's m1 and m2, counted one by one by each agent.
  const perAgent = await Promise.all([alice, bob, erin, frank].map((who) => unreadOf(app, who)))
  t.strictSame(perAgent, [0, 2, 2, 0])
  t.equal(await unread(), perAgent.reduce((a, b) => a + b, 0), 'the counter agrees with the agents\' own counts')

  await ack(app, erin, [m1.id, m2.id, m3.id])
  t.equal(await unread(), 2, 'erin had no m3 to ack')
  await ack(app, bob, [m1.id, m2.id, m3.id])
  t.equal(await unread(), 0)
  t.match(await statsOf(app, frank), { total: 3, by_priority: { normal: 1, high: 1, urgent: 1 } })
})
