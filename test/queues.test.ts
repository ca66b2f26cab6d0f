import t, { type Test } from 'tap'
import { createBus } from '../bus/bus.js'
import { createLocalNotifier, Readers, type BusEvent } from '../bus/events.js'
import { messageStats } from '../db/stats.js'
import { MessageCache } from '../db/message-cache.js'
import { createTargetPolicy } from '../webhooks/target.js'
import { testStorage, until } from './helper.js'

// Work queues and ack deadlines, on the core alone (no HTTP). Every time the bus stores comes from a manual clock
// (BusOptions.clock), so leases and deadlines pass when a test moves it, and no test sleeps for them.
const START = Date.parse('2026-01-01T00:00:00Z')
const iso = (ms: number): string => new Date(ms).toISOString()

async function setup (t: Test) {
  const storage = await testStorage(t)
  const notifier = createLocalNotifier()
  let now = START
  const bus = createBus({
    db: storage.db,
    write: storage.write,
    notifier,
    readers: new Readers(4),
    cache: new MessageCache(1 << 20, 16 << 10),
    maxMessageBytes: 64 << 10,
    exclusively: storage.exclusively,
    refuseWebhook: createTargetPolicy({ allow: [], allowPrivate: false }).refuse,
    claimRows: storage.claimRows,
    clock: () => now
  })
  const enroll = async (name: string) => {
    const { token } = await bus.register(null, { name })
    const caller = await bus.authenticate(token, 1000)
    if (caller === undefined) throw new Error(`${name}'s new token does not authenticate`)
    return caller
  }
  // Everything published, in order, whoever it is for.
  const heard: BusEvent[] = []
  const alice = await enroll('alice')
  notifier.subscribe(alice.agent.id, (event) => heard.push(event))
  return {
    bus,
    storage,
    notifier,
    heard,
    enroll,
    alice,
    bob: await enroll('bob'),
    carol: await enroll('carol'),
    // Moves the clock on by this many seconds (to the millisecond).
    advance: (seconds: number) => { now += Math.round(seconds * 1000) }
  }
}

type Setup = Awaited<ReturnType<typeof setup>>

// The counts of one queue, as GET /queues shows them.
async function counts ({ bus, alice }: Setup, name = 'jobs') {
  const queue = (await bus.listQueues(alice)).queues.find((q) => q.name === name)
  if (queue === undefined) throw new Error(`no queue ${name}`)
  return { available: queue.available, delayed: queue.delayed, leased: queue.leased, dead: queue.dead }
}

// The sender's view of where a queue message stands (GET /messages/{id}: queue_status).
async function status ({ bus, alice }: Setup, id: number) {
  const message = await bus.getMessage(alice, id)
  return 'queue_status' in message ? message.queue_status : undefined
}

const ids = (claimed: { messages: Array<{ message: { id: number } }> }): number[] => claimed.messages.map((c) => c.message.id)

t.test('a claim takes the most urgent first, then the oldest, up to its limit', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol } = s
  t.match(await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 }),
    { name: 'jobs', lease_s: 10, max_deliveries: 3, created_by: 'alice', available: 0, leased: 0, dead: 0, delayed: 0 })
  await t.rejects(bus.createQueue(bob, { name: 'jobs' }), { code: 'BUS_QUEUE_TAKEN', statusCode: 409 }, 'a queue name is taken once')
  const sent: Record<string, number> = {}
  for (const [body, priority] of [['old', 'normal'], ['urgent', 'urgent'], ['newer', 'normal'], ['high', 'high'], ['urgent-2', 'urgent']] as const) {
    const { sent: m } = await bus.send(alice, { queue: 'jobs', body, priority })
    t.match(m, { from: 'alice', queue: 'jobs', broadcast: false, recipients: 0 })
    sent[body] = m.id
  }
  t.same(await counts(s), { available: 5, delayed: 0, leased: 0, dead: 0 })

  const first = await bus.claim(bob, 'jobs', { limit: 3 })
  t.strictSame(ids(first), [sent.urgent, sent['urgent-2'], sent.high], 'urgent, oldest first, then high')
  t.match(first.messages[0], { message: { body: 'urgent', from: 'alice', queue: 'jobs' }, delivery_count: 1, lease_expires_at: iso(START + 10_000) })
  t.same(await counts(s), { available: 2, delayed: 0, leased: 3, dead: 0 })

  // A claim's own lease_s replaces the queue's.
  const second = await bus.claim(carol, 'jobs', { limit: 5, leaseS: 30 })
  t.strictSame(ids(second), [sent.old, sent.newer], 'then normal, oldest first; no more than there is')
  t.equal(second.messages[0].lease_expires_at, iso(START + 30_000))
  t.strictSame((await bus.claim(carol, 'jobs', {})).messages, [], 'nothing left to claim')
  t.same(await counts(s), { available: 0, delayed: 0, leased: 5, dead: 0 })
})

t.test('a leased message is not claimed again while its lease runs; only its holder acts on it', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol, advance } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  const { sent } = await bus.send(alice, { queue: 'jobs', body: 'work' })
  t.strictSame(ids(await bus.claim(bob, 'jobs', {})), [sent.id])
  t.strictSame((await bus.claim(carol, 'jobs', { limit: 10 })).messages, [], 'the second claimer gets nothing')
  // One millisecond before the lease ends it still runs.
  advance(9.999)
  t.strictSame((await bus.claim(carol, 'jobs', {})).messages, [], 'nor just before the lease ends')
  t.same(await counts(s), { available: 0, delayed: 0, leased: 1, dead: 0 })
  t.match(await status(s, sent.id),
    { queue: 'jobs', state: 'leased', delivery_count: 1, claimed_by: 'bob', lease_expires_at: iso(START + 10_000), acked_by: null })

  // Another agent may not ack, release or extend it, and is told who holds it; nothing changes.
  const conflict = { code: 'BUS_LEASE_CONFLICT', statusCode: 409, message: /leased to bob until 2026-01-01T00:00:10\.000Z/ }
  await t.rejects(bus.ackQueue(carol, 'jobs', [sent.id]), conflict)
  await t.rejects(bus.release(carol, 'jobs', [sent.id]), conflict)
  await t.rejects(bus.extend(carol, 'jobs', [sent.id], 60), conflict)
  t.match(await status(s, sent.id), { state: 'leased', claimed_by: 'bob', lease_expires_at: iso(START + 10_000) })

  // The holder's ack removes it from the queue for good; acking again changes nothing.
  t.strictSame(await bus.ackQueue(bob, 'jobs', [sent.id]), { acked: 1, already_acked: 0 })
  t.strictSame(await bus.ackQueue(bob, 'jobs', [sent.id]), { acked: 0, already_acked: 1 })
  t.same(await counts(s), { available: 0, delayed: 0, leased: 0, dead: 0 })
  t.match(await status(s, sent.id),
    { state: 'acked', delivery_count: 1, claimed_by: 'bob', acked_by: 'bob', acked_at: String, lease_expires_at: null, dead_at: null })
  await t.rejects(bus.ackQueue(carol, 'jobs', [sent.id]), { code: 'BUS_LEASE_CONFLICT', message: /is acked/ }, 'acked by another')
  await t.rejects(bus.release(bob, 'jobs', [sent.id]), { code: 'BUS_LEASE_CONFLICT' }, 'an acked message cannot be given back')
  // Long after the lease would have ended, an acked message stays gone.
  advance(3600)
  t.strictSame((await bus.claim(carol, 'jobs', {})).messages, [])
  t.same((await bus.sweep()).freed, [])
})

t.test('claims made together share no message', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  const sent: number[] = []
  for (let i = 0; i < 3; i++) sent.push((await bus.send(alice, { queue: 'jobs', body: `job ${i}` })).sent.id)
  // Started in one turn of the event loop: they reach the same group commit.
  const together = await Promise.all([bus.claim(bob, 'jobs', { limit: 2 }), bus.claim(carol, 'jobs', { limit: 2 }), bus.claim(bob, 'jobs', {})])
  t.strictSame(together.flatMap(ids).sort((a, b) => a - b), sent, 'every message once')
  t.same(await counts(s), { available: 0, delayed: 0, leased: 3, dead: 0 })
})

t.test('an expired lease: its ack is refused, and another agent gets the message', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol, advance } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  const { sent } = await bus.send(alice, { queue: 'jobs', body: 'work' })
  await bus.claim(bob, 'jobs', {})
  // The lease ends at its expiry time exactly; no sweep needed for a claim or a listing to see it.
  advance(10)
  t.same(await counts(s), { available: 1, delayed: 0, leased: 0, dead: 0 })
  t.match(await status(s, sent.id), { state: 'available', delivery_count: 1, lease_expires_at: null })
  await t.rejects(bus.ackQueue(bob, 'jobs', [sent.id]), { code: 'BUS_LEASE_CONFLICT', statusCode: 409, message: /expired at 2026-01-01T00:00:10\.000Z/ })
  await t.rejects(bus.extend(bob, 'jobs', [sent.id], 60), { code: 'BUS_LEASE_CONFLICT' }, 'an ended lease cannot be extended')

  const again = await bus.claim(carol, 'jobs', {})
  t.match(again.messages, [{ message: { id: sent.id }, delivery_count: 2, lease_expires_at: iso(START + 20_000) }])
  await t.rejects(bus.ackQueue(bob, 'jobs', [sent.id]), { code: 'BUS_LEASE_CONFLICT', message: /leased to carol/ }, 'the old holder is told who has it')
  t.strictSame(await bus.ackQueue(carol, 'jobs', [sent.id]), { acked: 1, already_acked: 0 })
  t.match(await status(s, sent.id), { state: 'acked', delivery_count: 2, claimed_by: 'carol', acked_by: 'carol' })
})

t.test('extend moves the lease on; release gives the message back, after a delay if asked', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol, advance, heard } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  const { sent } = await bus.send(alice, { queue: 'jobs', body: 'work' })
  await bus.claim(bob, 'jobs', {})
  advance(8)
  t.strictSame(await bus.extend(bob, 'jobs', [sent.id], 30), { extended: 1, lease_expires_at: iso(START + 38_000) })
  t.match(await status(s, sent.id), { state: 'leased', lease_expires_at: iso(START + 38_000) })
  // Past the first lease's end, the extended one still holds.
  advance(20)
  t.strictSame((await bus.claim(carol, 'jobs', {})).messages, [])
  t.same(await counts(s), { available: 0, delayed: 0, leased: 1, dead: 0 })

  heard.length = 0
  t.strictSame(await bus.release(bob, 'jobs', [sent.id], 5), { released: 1, dead: 0 })
  t.match(heard, [{ kind: 'queue', queue: 'jobs' }], 'waiting claimers are told')
  t.same(await counts(s), { available: 0, delayed: 1, leased: 0, dead: 0 })
  t.match(await status(s, sent.id), { state: 'delayed', claimed_by: 'bob' })
  await t.rejects(bus.ackQueue(bob, 'jobs', [sent.id]), { code: 'BUS_LEASE_CONFLICT', message: /not leased to the caller \(it is available\)/ }, 'released is released')
  advance(4.999)
  t.strictSame((await bus.claim(carol, 'jobs', {})).messages, [], 'not before the delay has passed')
  advance(0.001)
  t.same(await counts(s), { available: 1, delayed: 0, leased: 0, dead: 0 })
  t.match((await bus.claim(carol, 'jobs', {})).messages, [{ message: { id: sent.id }, delivery_count: 2 }])

  // Released without a delay, it is available at once.
  t.strictSame(await bus.release(carol, 'jobs', [sent.id]), { released: 1, dead: 0 })
  t.same(await counts(s), { available: 1, delayed: 0, leased: 0, dead: 0 })
  t.match((await bus.claim(bob, 'jobs', {})).messages, [{ message: { id: sent.id }, delivery_count: 3 }])
})

t.test('after max_deliveries ended deliveries a message is a dead letter', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol, advance, heard } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 2 })
  const { sent: one } = await bus.send(alice, { queue: 'jobs', body: 'one' })
  t.same(await counts(s), { available: 1, delayed: 0, leased: 0, dead: 0 })
  await bus.claim(bob, 'jobs', {})
  t.same(await counts(s), { available: 0, delayed: 0, leased: 1, dead: 0 })
  // First delivery ended by expiry: one left.
  advance(10)
  t.same(await counts(s), { available: 1, delayed: 0, leased: 0, dead: 0 })
  t.match((await bus.claim(carol, 'jobs', {})).messages, [{ delivery_count: 2 }])
  t.same(await counts(s), { available: 0, delayed: 0, leased: 1, dead: 0 })
  // Second delivery ended by release: dead, whatever the delay asked for.
  heard.length = 0
  t.strictSame(await bus.release(carol, 'jobs', [one.id], 30), { released: 0, dead: 1 })
  t.strictSame(heard, [], 'a dead letter wakes no claimer')
  t.same(await counts(s), { available: 0, delayed: 0, leased: 0, dead: 1 })
  t.strictSame((await bus.claim(bob, 'jobs', { limit: 10 })).messages, [], 'a dead letter is not claimed')
  advance(60)
  t.strictSame((await bus.claim(bob, 'jobs', { limit: 10 })).messages, [], '... however long after')
  t.match(await status(s, one.id), { state: 'dead', delivery_count: 2, claimed_by: 'carol', dead_at: iso(START + 10_000) })
  t.match(await bus.listDead(alice, 'jobs', {}), { dead: [{ message: { id: one.id, body: 'one' }, delivery_count: 2, claimed_by: 'carol', dead_at: iso(START + 10_000) }], next_cursor: null })

  // Second delivery ended by expiry, seen by the sweep: dead too, and the sweep wakes no one for it.
  const { sent: two } = await bus.send(alice, { queue: 'jobs', body: 'two' })
  await bus.claim(bob, 'jobs', {})
  advance(10)
  await bus.claim(bob, 'jobs', {})
  t.same(await counts(s), { available: 0, delayed: 0, leased: 1, dead: 1 })
  advance(10)
  t.same(await counts(s), { available: 0, delayed: 0, leased: 0, dead: 2 }, 'dead as soon as the lease ends')
  heard.length = 0
  t.strictSame(await bus.sweep(), { freed: [], overdue: [] })
  t.strictSame(heard, [])
  t.same(await counts(s), { available: 0, delayed: 0, leased: 0, dead: 2 })
  t.match(await bus.listDead(alice, 'jobs', {}), { dead: [{ message: { id: one.id } }, { message: { id: two.id }, delivery_count: 2, claimed_by: 'bob' }] })
  t.match(await status(s, two.id), { state: 'dead', delivery_count: 2 })
  t.strictSame((await bus.claim(carol, 'jobs', {})).messages, [])

  // A page of dead letters continues after its cursor.
  const page = await bus.listDead(alice, 'jobs', { limit: 1 })
  t.match(page, { dead: [{ message: { id: one.id } }], next_cursor: String })
  t.match(await bus.listDead(alice, 'jobs', { limit: 1, cursor: page.next_cursor as string }), { dead: [{ message: { id: two.id } }] })
})

// A lease that ended on a message that had had its max_deliveries makes it dead at once, for every reader
// (db/queues.ts: "whoever looks next ends it"): GET /queues, queue_status, listDead and requeue agree before any sweep
// comes, and the sweep keeps the dead_at they showed (the lease's end).
t.test('a dead letter is listed and requeued before any sweep has seen its lease end', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, advance } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 1 })
  const { sent } = await bus.send(alice, { queue: 'jobs', body: 'one' })
  await bus.claim(bob, 'jobs', {})
  advance(10)
  t.same(await counts(s), { available: 0, delayed: 0, leased: 0, dead: 1 })
  t.match(await status(s, sent.id), { state: 'dead', dead_at: iso(START + 10_000) })
  t.match((await bus.listDead(alice, 'jobs', {})).dead, [{ message: { id: sent.id }, dead_at: iso(START + 10_000) }])
  t.strictSame(await bus.requeue(alice, 'jobs', [sent.id]), { requeued: [sent.id], not_dead: [] })
  await bus.claim(bob, 'jobs', {})
  advance(15)
  await bus.sweep()
  t.match(await status(s, sent.id), { state: 'dead', dead_at: iso(START + 20_000) }, 'dead when the lease ended, not when it was swept')
})

t.test('requeue: dead letters back with a fresh delivery count, all or those named', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol, heard } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 1 })
  const dead: number[] = []
  for (const body of ['a', 'b', 'c']) dead.push((await bus.send(alice, { queue: 'jobs', body })).sent.id)
  await bus.claim(bob, 'jobs', { limit: 3 })
  t.strictSame(await bus.release(bob, 'jobs', dead), { released: 0, dead: 3 })
  const { sent: live } = await bus.send(alice, { queue: 'jobs', body: 'live' })
  const { sent: direct } = await bus.send(alice, { to: 'bob', body: 'not queued' })
  t.same(await counts(s), { available: 1, delayed: 0, leased: 0, dead: 3 })

  heard.length = 0
  t.strictSame(await bus.requeue(alice, 'jobs', [dead[1], live.id, direct.id, dead[1], 999_999]),
    { requeued: [dead[1]], not_dead: [live.id, direct.id, 999_999] }, 'only dead letters of this queue; each id once')
  t.match(heard, [{ kind: 'queue', queue: 'jobs' }])
  t.same(await counts(s), { available: 2, delayed: 0, leased: 0, dead: 2 })
  t.match(await status(s, dead[1]), { state: 'available', delivery_count: 0, dead_at: null })
  t.match((await bus.listDead(alice, 'jobs', {})).dead.map((d) => d.message.id), [dead[0], dead[2]])

  heard.length = 0
  t.strictSame(await bus.requeue(alice, 'jobs', [live.id]), { requeued: [], not_dead: [live.id] })
  t.strictSame(heard, [], 'nothing requeued, no one woken')
  t.strictSame(await bus.requeue(carol, 'jobs'), { requeued: [dead[0], dead[2]], not_dead: [] })
  t.same(await counts(s), { available: 4, delayed: 0, leased: 0, dead: 0 })
  t.strictSame((await bus.listDead(alice, 'jobs', {})).dead, [])

  // A fresh count: one delivery again before it is dead.
  const claimed = await bus.claim(carol, 'jobs', { limit: 10 })
  t.strictSame(ids(claimed), [dead[0], dead[1], dead[2], live.id])
  t.strictSame(claimed.messages.map((c) => c.delivery_count), [1, 1, 1, 1])
  await t.rejects(bus.requeue(alice, 'nope'), { code: 'BUS_QUEUE_NOT_FOUND', statusCode: 404 })
})

t.test('ids not in the queue are 404, and a request with any bad id changes nothing', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  await bus.createQueue(alice, { name: 'other', lease_s: 10, max_deliveries: 3 })
  const { sent: mine } = await bus.send(alice, { queue: 'jobs', body: 'bob\'s' })
  const { sent: theirs } = await bus.send(alice, { queue: 'jobs', body: 'carol\'s' })
  const { sent: elsewhere } = await bus.send(alice, { queue: 'other', body: 'other queue' })
  const { sent: direct } = await bus.send(alice, { to: 'bob', body: 'direct' })
  await bus.claim(bob, 'jobs', {})
  await bus.claim(carol, 'jobs', {})
  await bus.claim(bob, 'other', {})

  for (const stranger of [elsewhere.id, direct.id, 999_999]) {
    const missing = { code: 'BUS_MESSAGE_NOT_FOUND', statusCode: 404, message: new RegExp(`in queue jobs: ${stranger}`) }
    await t.rejects(bus.ackQueue(bob, 'jobs', [mine.id, stranger]), missing)
    await t.rejects(bus.release(bob, 'jobs', [mine.id, stranger]), missing)
    await t.rejects(bus.extend(bob, 'jobs', [mine.id, stranger], 60), missing)
  }
  // One of the two held by another: 409, and the caller's own lease is not touched either.
  await t.rejects(bus.ackQueue(bob, 'jobs', [mine.id, theirs.id]), { code: 'BUS_LEASE_CONFLICT', message: /leased to carol/ })
  await t.rejects(bus.release(bob, 'jobs', [mine.id, theirs.id]), { code: 'BUS_LEASE_CONFLICT' })
  await t.rejects(bus.extend(bob, 'jobs', [mine.id, theirs.id], 60), { code: 'BUS_LEASE_CONFLICT' })
  t.match(await status(s, mine.id), { state: 'leased', claimed_by: 'bob', delivery_count: 1, lease_expires_at: iso(START + 10_000) })
  t.match(await status(s, theirs.id), { state: 'leased', claimed_by: 'carol', lease_expires_at: iso(START + 10_000) })
  t.same(await counts(s), { available: 0, delayed: 0, leased: 2, dead: 0 })

  // The queue must exist.
  const unknownQueue: Array<() => Promise<unknown>> = [
    () => bus.claim(bob, 'nope', {}), () => bus.ackQueue(bob, 'nope', [mine.id]), () => bus.release(bob, 'nope', [mine.id]),
    () => bus.extend(bob, 'nope', [mine.id], 10), () => bus.listDead(bob, 'nope', {})
  ]
  for (const attempt of unknownQueue) await t.rejects(attempt(), { code: 'BUS_QUEUE_NOT_FOUND', statusCode: 404 })
  t.strictSame(await bus.ackQueue(bob, 'jobs', [mine.id, mine.id]), { acked: 1, already_acked: 0 }, 'an id given twice counts once')
})

t.test('the sweep ends passed leases, tells waiting claims, and a waiting claim gets the message', async (t) => {
  const s = await setup(t)
  const { bus, notifier, alice, bob, carol, advance, heard } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  const { sent } = await bus.send(alice, { queue: 'jobs', body: 'work' })
  await bus.claim(bob, 'jobs', {})
  t.strictSame(await bus.sweep(), { freed: [], overdue: [] }, 'nothing has passed yet')

  const waiting = bus.claim(carol, 'jobs', { waitMs: 10_000 })
  // The claim found nothing and listens now.
  await until('carol\'s claim listens', () => notifier.connectedAgents().includes(carol.agent.id))
  advance(10)
  heard.length = 0
  t.strictSame(await bus.sweep(), { freed: ['jobs'], overdue: [] })
  t.match(heard, [{ kind: 'queue', queue: 'jobs' }])
  t.equal(heard.length, 1)
  t.match((await waiting).messages, [{ message: { id: sent.id, body: 'work' }, delivery_count: 2, lease_expires_at: iso(START + 20_000) }])
  t.notOk(notifier.connectedAgents().includes(carol.agent.id), 'the claim stopped listening')
  t.match(await status(s, sent.id), { state: 'leased', claimed_by: 'carol' })

  heard.length = 0
  t.strictSame(await bus.sweep(), { freed: [], overdue: [] }, 'an ended lease is ended once')
  t.strictSame(heard, [])

  // A lease the sweep ended is available to a claim that never waited.
  advance(10)
  t.strictSame((await bus.sweep()).freed, ['jobs'])
  t.match((await bus.claim(bob, 'jobs', {})).messages, [{ message: { id: sent.id }, delivery_count: 3 }])
})

t.test('a queue message is seen by its sender, with where it stands, and by the agent that claimed it', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  const { sent } = await bus.send(alice, { queue: 'jobs', body: 'work', subject: 'job 1' })
  t.match(await bus.getMessage(alice, sent.id), {
    id: sent.id, queue: 'jobs', body: 'work', subject: 'job 1',
    queue_status: { queue: 'jobs', state: 'available', delivery_count: 0, claimed_by: null, lease_expires_at: null, acked_by: null, acked_at: null, dead_at: null }
  })
  await t.rejects(bus.getMessage(bob, sent.id), { code: 'BUS_MESSAGE_NOT_FOUND', statusCode: 404 }, 'not before a claim')
  await bus.claim(bob, 'jobs', {})
  // The claimer reads its task by id (without queue_status, the sender's) and replies in its thread; no one else sees it.
  const seen = await bus.getMessage(bob, sent.id)
  t.match(seen, { id: sent.id, queue: 'jobs', body: 'work' })
  t.notOk('queue_status' in seen)
  const { sent: reply } = await bus.send(bob, { to: 'alice', body: 'done', reply_to: sent.id })
  t.equal(reply.thread_id, sent.thread_id, 'the reply joins the task\'s thread')
  t.match((await bus.getThread(alice, sent.thread_id)).messages.map((m) => m.id), [sent.id, reply.id])
  await t.rejects(bus.getMessage(carol, sent.id), { code: 'BUS_MESSAGE_NOT_FOUND', statusCode: 404 })
  await t.rejects(bus.send(carol, { to: 'alice', body: 'x', reply_to: sent.id }), { code: 'BUS_MESSAGE_NOT_FOUND' })
  t.strictSame((await bus.inbox(bob, {})).messages, [], 'not in the claimer\'s inbox')
  t.match(await bus.ack(bob, [sent.id]), { acked: 0, not_found: [sent.id] }, 'an inbox ack is not a queue ack')
  t.match(await status(s, sent.id), { state: 'leased', delivery_count: 1, claimed_by: 'bob' })
  await bus.ackQueue(bob, 'jobs', [sent.id])
  t.match(await status(s, sent.id), { state: 'acked', acked_by: 'bob' })
  // A direct message has no queue_status.
  const { sent: direct } = await bus.send(alice, { to: 'bob', body: 'hi' })
  t.notOk('queue_status' in await bus.getMessage(alice, direct.id))
})

t.test('a send names one of to, topic and queue, and the queue must exist', async (t) => {
  const s = await setup(t)
  const { bus, storage, alice } = s
  await bus.createQueue(alice, { name: 'jobs', lease_s: 10, max_deliveries: 3 })
  await t.rejects(bus.send(alice, { to: 'bob', queue: 'jobs', body: 'x' }), { code: 'BUS_BAD_SEND', statusCode: 400 })
  await t.rejects(bus.send(alice, { topic: 'news', queue: 'jobs', body: 'x' }), { code: 'BUS_BAD_SEND', statusCode: 400 })
  await t.rejects(bus.send(alice, { queue: 'nope', body: 'x' }), { code: 'BUS_QUEUE_NOT_FOUND', statusCode: 404, message: /nope/ })
  // ack_within_s is for direct messages.
  await t.rejects(bus.send(alice, { body: 'to all', ack_within_s: 30 }), { code: 'BUS_BAD_SEND', statusCode: 400, message: /ack_within_s/ })
  await t.rejects(bus.send(alice, { queue: 'jobs', body: 'x', ack_within_s: 30 }), { code: 'BUS_BAD_SEND', statusCode: 400 })
  t.match(await messageStats(storage.db), { total: 0 }, 'nothing stored')
  t.same(await counts(s), { available: 0, delayed: 0, leased: 0, dead: 0 })
})

t.test('a recipient that misses its ack deadline is overdue, and its sender is told once', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, advance, heard } = s
  const { sent } = await bus.send(alice, { to: 'bob', body: 'ack me', ack_within_s: 30 })
  const ackBy = iso(START + 30_000)
  t.match((await bus.inbox(bob, {})).messages, [{ id: sent.id, ack_by: ackBy, read_at: null }])

  advance(29.999)
  t.strictSame(await bus.sweep(), { freed: [], overdue: [] }, 'not before the deadline')
  t.match((await bus.getMessage(alice, sent.id)).receipts, [{ agent: 'bob', ack_by: ackBy, overdue: false }])
  advance(1)
  heard.length = 0
  t.strictSame(await bus.sweep(), { freed: [], overdue: [{ seq: sent.id, senderId: alice.agent.id, agent: 'bob', ackBy }] })
  t.strictSame(heard, [{ kind: 'overdue', senderId: alice.agent.id, messageId: sent.id, agent: 'bob', ackBy }])
  t.strictSame((await bus.sweep()).overdue, [], 'marked once')
  advance(3600)
  t.strictSame((await bus.sweep()).overdue, [], '... however late it gets')
  t.equal(heard.length, 1, 'one overdue event')
  t.match((await bus.getMessage(alice, sent.id)).receipts, [{ agent: 'bob', ack_by: ackBy, read_at: null, overdue: true }])

  // A late ack still counts: read, with a receipt; the message stays overdue.
  heard.length = 0
  t.match(await bus.ack(bob, [sent.id]), { acked: 1 })
  t.match(heard, [{ kind: 'receipt', senderId: alice.agent.id, messageId: sent.id, agent: 'bob', readAt: iso(START + 3_630_999) }])
  t.match((await bus.getMessage(alice, sent.id)).receipts, [{ agent: 'bob', read_at: iso(START + 3_630_999), overdue: true }])
  t.match((await bus.inbox(bob, {})).messages, [{ id: sent.id, read_at: String }])
})

t.test('acked in time is never overdue; of two recipients only the late one is', async (t) => {
  const s = await setup(t)
  const { bus, alice, bob, carol, advance, heard } = s
  const { sent: plain } = await bus.send(alice, { to: 'bob', body: 'no deadline' })
  const { sent: solo } = await bus.send(alice, { to: 'bob', body: 'ack me', ack_within_s: 30 })
  const { sent: pair } = await bus.send(alice, { to: ['bob', 'carol'], body: 'both of you', ack_within_s: 30 })
  t.match((await bus.inbox(bob, {})).messages.find((m) => m.id === plain.id), { ack_by: null })
  advance(10)
  await bus.ack(bob, [solo.id, pair.id])
  advance(60)
  heard.length = 0
  const { overdue } = await bus.sweep()
  t.strictSame(overdue, [{ seq: pair.id, senderId: alice.agent.id, agent: 'carol', ackBy: iso(START + 30_000) }])
  t.strictSame(heard.filter((e) => e.kind === 'overdue'), [{ kind: 'overdue', senderId: alice.agent.id, messageId: pair.id, agent: 'carol', ackBy: iso(START + 30_000) }])
  t.match((await bus.getMessage(alice, pair.id)).receipts, [{ agent: 'bob', overdue: false, read_at: iso(START + 10_000) }, { agent: 'carol', overdue: true, read_at: null }])
  t.match((await bus.getMessage(alice, solo.id)).receipts, [{ agent: 'bob', overdue: false }])
  t.match((await bus.getMessage(alice, plain.id)).receipts, [{ agent: 'bob', ack_by: null, overdue: false }])
  t.strictSame((await bus.sweep()).overdue, [])
})

t.test('a stream opened with receipts hears that a recipient is overdue', async (t) => {
  const s = await setup(t)
  const { bus, alice, advance } = s
  const stream = await bus.openStream(alice, { receipts: true }, new AbortController().signal)
  const items = stream[Symbol.asyncIterator]()
  const next = items.next()
  const { sent } = await bus.send(alice, { to: 'bob', body: 'ack me', ack_within_s: 5 })
  advance(6)
  t.match((await bus.sweep()).overdue, [{ seq: sent.id }])
  t.strictSame((await next).value, { event: 'overdue', data: { message_id: sent.id, agent: 'bob', ack_by: iso(START + 5000) } })
  await stream.close()
})
