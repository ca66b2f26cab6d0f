import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { createBus } from '../bus/bus.js'
import { createLocalNotifier, Readers, type BusEvent } from '../bus/events.js'
import { testStorage, until } from './helper.js'
import { MessageCache } from '../db/message-cache.js'
import { createTargetPolicy } from '../webhooks/target.js'
import { messageStats } from '../db/stats.js'

// The core alone: a database, a notifier and the bus, with no Fastify and no HTTP.
// lossy: a notifier that drops what `drop` says, as a cluster may (a LISTEN connection that dropped, a node that died
// between its commit and its NOTIFY).
async function setup (t: Test, { drop = () => false }: { drop?: (event: BusEvent) => boolean } = {}) {
  const storage = await testStorage(t)
  const local = createLocalNotifier()
  const notifier = { ...local, publish: (event: BusEvent) => { if (!drop(event)) local.publish(event) } }
  const readers = new Readers(4)
  const bus = createBus({
    db: storage.db,
    write: storage.write,
    notifier,
    readers,
    cache: new MessageCache(1 << 20, 16 << 10),
    maxMessageBytes: 64 << 10,
    exclusively: storage.exclusively,
    refuseWebhook: createTargetPolicy({ allow: [], allowPrivate: false }).refuse
  })
  const enroll = async (name: string) => {
    const { token } = await bus.register(null, { name })
    const caller = await bus.authenticate(token, 1000)
    if (caller === undefined) throw new Error(`${name}'s new token does not authenticate`)
    return caller
  }
  return { bus, storage, notifier, readers, enroll, alice: await enroll('alice'), bob: await enroll('bob') }
}

t.test('send, read the inbox, ack: the sender hears a receipt', async (t) => {
  const { bus, notifier, alice, bob } = await setup(t)
  const heard: BusEvent[] = []
  notifier.subscribe(alice.agent.id, (event) => heard.push(event))

  const { sent, replayed } = await bus.send(alice, { to: 'bob', body: 'hello' })
  t.match(sent, { from: 'alice', to: ['bob'], recipients: 1 })
  t.equal(replayed, false)
  const inbox = await bus.inbox(bob, { unread: true })
  t.match(inbox, { messages: [{ id: sent.id, body: 'hello', delivered_at: String, read_at: null }], next_cursor: null })

  t.match(await bus.ack(bob, [sent.id, 999]), { acked: 1, already_read: 0, not_found: [999] })
  t.match(heard, [{ kind: 'receipt', senderId: alice.agent.id, messageId: sent.id, agent: 'bob', readAt: String }])
  t.strictSame((await bus.inbox(bob, { unread: true })).messages, [])
  await t.rejects(bus.send(alice, { to: 'bob', body: '' }), { code: 'BUS_EMPTY_MESSAGE' })
  await t.rejects(bus.send(alice, { to: 'nobody', body: 'x' }), { code: 'BUS_AGENT_NOT_FOUND', statusCode: 404 })
})

t.test('a long-poll is answered by the send that wakes it', async (t) => {
  const { bus, readers, alice, bob } = await setup(t)
  const started = Date.now()
  const poll = bus.inbox(bob, { unread: true, waitMs: 10_000 })
  await until('bob\'s long-poll waits', () => readers.count(bob.agent.id) === 1)
  await bus.send(alice, { to: 'bob', body: 'wake up' })
  t.match((await poll).messages, [{ body: 'wake up' }])
  t.ok(Date.now() - started < 5000, 'answered at once, not at the end of the wait')
  t.equal(readers.count(bob.agent.id), 0, 'the poll stopped listening')
})

t.test('a stream sends the backlog, then live messages, and ends when its token is rotated', async (t) => {
  const { bus, alice, bob } = await setup(t)
  await bus.send(alice, { to: 'bob', body: 'backlog', priority: 'urgent' })
  const stream = await bus.openStream(bob, {}, new AbortController().signal)
  const items = stream[Symbol.asyncIterator]()
  t.match((await items.next()).value, { id: /^\d+\.2\.\d+$/, event: 'message', data: { body: 'backlog' } })
  const live = items.next()
  await bus.send(alice, { to: 'bob', body: 'live' })
  t.match((await live).value, { id: /^\d+$/, event: 'message', data: { body: 'live' } })

  const ending = items.next()
  await bus.rotateToken({ kind: 'admin' }, 'bob')
  t.equal((await ending).done, true)
  t.equal(stream.ended, 'revoked')
  await stream.close()
  await t.rejects(bus.openStream(bob, {}, new AbortController().signal), { code: 'BUS_UNAUTHORIZED' }, 'the old token opens no new stream')
})

t.test('sends that share one group commit each get what they would get alone', async (t) => {
  const { bus, storage, enroll, alice, bob } = await setup(t)
  const carol = await enroll('carol')
  const root = (await bus.send(alice, { to: 'bob', body: 'root' })).sent
  // Started in one turn of the event loop: they reach the group commit together, and the direct ones among them are
  // stored by one bulk write (db/messages.ts sendMessages).
  const [one, two, unknown, reply, badReply, all, keyed, again, three] = await Promise.allSettled([
    bus.send(alice, { to: 'bob', body: 'one' }),
    bus.send(alice, { to: ['bob', 'carol'], body: 'two', priority: 'urgent' }),
    bus.send(alice, { to: ['bob', 'nobody', 'none'], body: 'lost' }),
    bus.send(alice, { to: 'bob', body: 'reply', reply_to: root.id }),
    bus.send(alice, { to: 'bob', body: 'orphan', reply_to: 999_999 }),
    bus.send(alice, { body: 'everyone' }),
    bus.send(alice, { to: 'carol', body: 'once' }, 'key-1'),
    bus.send(alice, { to: 'carol', body: 'once' }, 'key-1'),
    bus.send(carol, { to: 'alice', body: 'three', priority: 'high' })
  ])
  const sent = (r: PromiseSettledResult<{ sent: { id: number, thread_id: number } }>) => {
    if (r.status === 'rejected') throw r.reason
    return r.value.sent
  }
  t.match(unknown, { status: 'rejected', reason: { code: 'BUS_AGENT_NOT_FOUND', message: /nobody, none/ } })
  t.match(badReply, { status: 'rejected', reason: { code: 'BUS_MESSAGE_NOT_FOUND' } })
  t.match(one, { status: 'fulfilled', value: { replayed: false, sent: { from: 'alice', to: ['bob'], recipients: 1, priority: 'normal', broadcast: false } } })
  t.match(two, { status: 'fulfilled', value: { sent: { to: ['bob', 'carol'], recipients: 2, priority: 'urgent' } } })
  t.match(three, { status: 'fulfilled', value: { sent: { from: 'carol', to: ['alice'], priority: 'high' } } })
  t.match(again, { status: 'fulfilled', value: { replayed: true } })
  t.equal(sent(again).id, sent(keyed).id, 'the retry names the first message')
  const stored = [one, two, reply, all, keyed, three].map(sent)
  t.equal(new Set(stored.map((m) => m.id)).size, 6, 'six messages, six ids')
  for (const m of [one, two, all, keyed, three].map(sent)) t.equal(m.thread_id, m.id, 'a new message starts its own thread')
  t.equal(sent(reply).thread_id, root.id, 'a reply joins its parent\'s thread')

  const bodies = async (who: typeof alice) => (await bus.inbox(who, { limit: 50 })).messages.map((m) => m.body).sort()
  t.strictSame(await bodies(bob), ['everyone', 'one', 'reply', 'root', 'two'])
  t.strictSame(await bodies(carol), ['everyone', 'once', 'two'])
  t.strictSame(await bodies(alice), ['three'])
  for (const m of stored) t.equal((await bus.getMessage(alice, m.id)).id, m.id, `message ${m.id} reads back by id`)
  t.match((await bus.getThread(bob, root.id)).messages.map((m) => m.body), ['root', 'reply'])
  const stats = await messageStats(storage.db)
  t.match(stats, { total: 7, by_priority: { normal: 5, high: 1, urgent: 1 } }, 'counted once each, nothing for the refused ones')
  // Every copy read above is delivered, none acknowledged: 5 for bob, 3 for carol, 1 for alice.
  t.equal(stats.unread, 9)
})

t.test('lost events cost latency, not messages: the backstop wakes the readers they were for', async (t) => {
  let losing = false
  const { bus, readers, enroll, alice, bob } = await setup(t, { drop: (event) => losing && event.kind !== 'shutdown' })
  const carol = await enroll('carol')
  const stream = await bus.openStream(bob, {}, new AbortController().signal)
  const items = stream[Symbol.asyncIterator]()
  const live = items.next()
  const poll = bus.inbox(carol, { unread: true, waitMs: 60_000 })
  await until('bob\'s stream and carol\'s long-poll wait', () => readers.count(bob.agent.id) === 1 && readers.count(carol.agent.id) === 1)
  const pokes = new Map<number, number>()
  for (const watch of readers.all()) {
    const poke = watch.poke.bind(watch)
    watch.poke = () => { pokes.set(watch.agentId, (pokes.get(watch.agentId) ?? 0) + 1); poke() }
  }
  // Nothing lost: the event wakes the stream, which reads the message; a round after it wakes no one.
  const announced = (await bus.send(alice, { to: 'bob', body: 'announced' })).sent
  t.match((await live).value, { data: { id: announced.id } })
  const next = items.next()
  await until('bob\'s stream has read past the announced message', () => readers.all().find((w) => w.agentId === bob.agent.id)?.caughtUpTo === announced.id)
  pokes.clear()
  await bus.recheckReaders()
  t.same(pokes, new Map(), 'readers that read past every message are not woken')

  losing = true
  const { sent } = await bus.send(alice, { to: 'bob', body: 'unannounced' })
  let answered = false
  void next.then(() => { answered = true })
  await sleep(100)
  t.equal(answered, false, 'no event, no wake-up')
  await bus.recheckReaders()
  t.match((await next).value, { event: 'message', data: { id: sent.id, body: 'unannounced' } }, 'the stream has it after one round')
  t.equal(pokes.get(carol.agent.id), undefined, 'the long-poll, for which nothing came, is not woken')
  t.equal(readers.all().find((w) => w.agentId === carol.agent.id)?.caughtUpTo, sent.id, '... and is known to be up to date')

  await bus.send(alice, { body: 'to all, unannounced' })
  await bus.recheckReaders()
  t.match((await poll).messages, [{ body: 'to all, unannounced' }], 'a broadcast wakes every reader')
  t.match((await items.next()).value, { data: { body: 'to all, unannounced' } })

  // A revocation whose event was lost: the stream ends at the next round, not with the next message.
  const ending = items.next()
  await bus.rotateToken({ kind: 'admin' }, 'bob')
  await bus.recheckReaders()
  t.equal((await ending).done, true)
  t.equal(stream.ended, 'revoked')
  await stream.close()
  losing = false
})
