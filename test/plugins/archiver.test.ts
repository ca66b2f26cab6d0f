import Fastify from 'fastify'
import t from 'tap'
import archiver, { archiveRead } from '../../plugins/archiver.js'
import db from '../../plugins/db.js'
import { build, register, send, testDb, until } from '../helper.js'

const DAY = 86_400_000

t.test('archiveRead moves old messages read by everyone, and history still finds them, marked', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const read = (await send(app, alice, { to: 'bob', body: 'read' })).json().id
  const unread = (await send(app, alice, { to: 'bob', body: 'unread' })).json().id
  const half = (await send(app, alice, { to: ['bob', 'carol'], body: 'half read' })).json().id
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [read, half] } })

  t.equal(await archiveRead(app.storage, new Date(), DAY), 0, 'nothing is old enough yet')
  t.equal(await archiveRead(app.storage, new Date(Date.now() + 2 * DAY), DAY), 1)

  const inbox = (await app.inject({ url: '/inbox', headers: bob.auth })).json().messages
  t.strictSame(inbox.map((m: { id: number }) => m.id), [unread, half], 'the archived message left the live inbox')
  const history = (await app.inject({ url: '/history', headers: bob.auth })).json().messages
  t.match(history, [{ id: read, archived: true, read_at: String }, { id: unread, archived: false }, { id: half, archived: false }])
  const single = (await app.inject({ url: `/messages/${read}`, headers: alice.auth })).json()
  t.match(single, { archived: true, receipts: [{ agent: 'bob', read_at: String }] })
  t.strictSame((await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [read] } })).json(),
    { acked: 0, already_read: 1, not_found: [] })
  t.match((await app.inject({ url: '/stats', headers: carol.auth })).json().messages, { total: 3, archived: 1, unread: 2 })
  t.equal((await app.inject({ url: `/messages/${read}`, headers: carol.auth })).statusCode, 404, 'visibility holds in the archive')
})

t.test('a deregistered recipient\'s unread copy does not keep a message out of the archive', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const id = (await send(app, alice, { to: ['bob', 'carol'], body: 'x' })).json().id
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [id] } })
  t.equal(await archiveRead(app.storage, new Date(Date.now() + 2 * DAY), DAY), 0, 'carol has not read it')
  await app.inject({ method: 'DELETE', url: '/agents/carol', headers: carol.auth })
  t.equal(await archiveRead(app.storage, new Date(Date.now() + 2 * DAY), DAY), 1, 'carol is gone: it is read by everyone who can')
})

t.test('archiveRead works in bounded batches until done', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  for (let i = 0; i < 25; i++) await send(app, alice, { to: 'bob', body: `m${i}` })
  await app.db.updateTable('deliveries').set({ read_at: new Date().toISOString() }).execute()
  t.equal(await archiveRead(app.storage, new Date(Date.now() + 2 * DAY), DAY, 10), 25)
  t.equal(Number((await app.db.selectFrom('messages').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n), 0)
  t.equal(Number((await app.db.selectFrom('archived_deliveries').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n), 25)
})

t.test('standalone: the plugin archives at start-up with the real timer', async (t) => {
  const app = Fastify()
  await app.register(db, { url: await testDb(t), sync: 'normal' })
  const old = new Date(Date.now() - 10_000).toISOString()
  await app.after()
  await app.db.insertInto('messages').values({
    sender_id: 1, recipients: null, subject: null, body: 'old', data: null, priority: 0, reply_to: null, thread_id: 1, created_at: old, idempotency_key: null
  }).execute()
  await app.register(archiver, { maxAgeMs: 1000, intervalMs: 10 })
  t.teardown(() => app.close())
  await app.ready()
  let archived = 0
  await until('the old message is archived', async () =>
    (archived = Number((await app.db.selectFrom('archived_messages').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)) !== 0)
  t.equal(archived, 1)
})
