import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { createBus } from '../bus/bus.js'
import { createLocalNotifier, Readers, type BusEvent } from '../bus/events.js'
import { testStorage } from './helper.js'
import { MessageCache } from '../db/message-cache.js'
import { createTargetPolicy } from '../webhooks/target.js'

// The core alone: a database, a notifier and the bus, with no Fastify and no HTTP.
async function setup (t: Test) {
  const storage = await testStorage(t)
  const notifier = createLocalNotifier()
  const readers = new Readers(4)
  const bus = createBus({
    db: storage.db,
    write: storage.write,
    notifier,
    readers,
    cache: new MessageCache(1 << 20, 16 << 10),
    maxMessageBytes: 64 << 10,
    recheckMs: 1000,
    exclusively: storage.exclusively,
    refuseWebhook: createTargetPolicy({ allow: [], allowPrivate: false }).refuse
  })
  const enroll = async (name: string) => {
    const { token } = await bus.register(null, { name })
    const caller = await bus.authenticate(token, 1000)
    if (caller === undefined) throw new Error(`${name}'s new token does not authenticate`)
    return caller
  }
  return { bus, notifier, readers, alice: await enroll('alice'), bob: await enroll('bob') }
}

// Waits until `what` holds, so that a test acts only once a reader is waiting.
async function until (what: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000
  while (!what()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await sleep(5)
  }
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
  await until(() => readers.count(bob.agent.id) === 1)
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
