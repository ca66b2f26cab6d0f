import { join } from 'node:path'
import { sql } from 'kysely'
import t from 'tap'
import { migrateTo, migrateToLatest } from '../../db/migrate.js'
import { openDatabase } from '../../db/dialects/sqlite.js'
import { migrations } from '../../db/migrations/sqlite/index.js'
import { archiveRead } from '../../plugins/archiver.js'
import { build, engine, register, send, type Registered, type TestApp } from '../helper.js'

const DAY = 86_400_000
const rowsFor = async (app: TestApp, seq: number): Promise<number> => Number((await app.db.selectFrom('deliveries')
  .select((eb) => eb.fn.countAll().as('n')).where('message_seq', '=', seq).executeTakeFirstOrThrow()).n)
const inbox = async (app: TestApp, who: Registered) =>
  (await app.inject({ url: '/inbox', headers: who.auth })).json().messages as Array<{ id: number, body: string, delivered_at: string | null }>

t.test('a broadcast is stored once and each agent gets its copy when it next reads', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const sent = (await send(app, alice, { body: 'all hands', priority: 'high' }, { 'idempotency-key': 'k1' })).json()
  t.match(sent, { broadcast: true, recipients: 2 })
  t.equal(await rowsFor(app, sent.id), 0, 'no row per recipient at send time')
  const dave = await register(app, 'dave')

  t.match((await app.inject({ url: `/messages/${sent.id}`, headers: alice.auth })).json().receipts, [
    { agent: 'bob', delivered_at: null, read_at: null }, { agent: 'carol', delivered_at: null, read_at: null }
  ], 'the sender sees every recipient, none delivered yet')
  t.match((await app.inject({ url: '/stats', headers: alice.auth })).json().messages, { unread: 2 })
  t.match((await app.inject({ method: 'POST', url: '/heartbeat', headers: carol.auth })).json(), { unread: 1 })

  t.match(await inbox(app, bob), [{ id: sent.id, body: 'all hands', delivered_at: String }])
  t.strictSame(await inbox(app, dave), [], 'an agent registered after the broadcast does not get it')
  t.equal((await app.inject({ url: `/messages/${sent.id}`, headers: dave.auth })).statusCode, 404)
  t.equal(await rowsFor(app, sent.id), 2, 'bob\'s copy, and carol\'s made by her heartbeat')

  // Carol acks and replies to it without reading her inbox first.
  t.strictSame((await app.inject({ method: 'POST', url: '/ack', headers: carol.auth, payload: { ids: [sent.id] } })).json(),
    { acked: 1, already_read: 0, not_found: [] })
  const reply = await send(app, carol, { to: 'alice', body: 'on it', reply_to: sent.id })
  t.equal(reply.statusCode, 201)
  t.equal(reply.json().thread_id, sent.id)

  const receipts = (await app.inject({ url: `/messages/${sent.id}`, headers: alice.auth })).json().receipts
  t.match(receipts, [{ agent: 'bob', delivered_at: String, read_at: null }, { agent: 'carol', read_at: String }])
  t.equal(receipts.length, 2)
  const replay = await send(app, alice, { body: 'all hands', priority: 'high' }, { 'idempotency-key': 'k1' })
  t.match(replay.json(), { id: sent.id, recipients: 2 }, 'a replay answers the first result')
  t.equal(await rowsFor(app, sent.id), 2, 'reading again makes no second copy')
  t.equal((await inbox(app, bob)).length, 1)
})

t.test('an agent back from a long absence gets every broadcast it missed, made in bounded batches', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const n = 2500
  await sql`with recursive i(k) as (select 1 union all select k + 1 from i where k < ${n})
    insert into messages (sender_id, recipients, body, priority, thread_id, created_at)
    select a.id, null, 'b' || k, k % 3, 0, ${new Date().toISOString()} from i, agents a where a.name = 'alice'`.execute(app.db)
  const res = await app.inject({ method: 'POST', url: '/heartbeat', headers: bob.auth })
  t.match(res.json(), { unread: n })
  const upto = await app.db.selectFrom('agents').select('broadcasts_upto').where('name', '=', 'bob').executeTakeFirstOrThrow()
  const max = await app.db.selectFrom('messages').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirstOrThrow()
  t.equal(upto.broadcasts_upto, max.seq)
  const page = (await app.inject({ url: '/inbox?limit=3', headers: bob.auth })).json().messages
  t.strictSame(page.map((m: { priority: string }) => m.priority), ['urgent', 'urgent', 'urgent'], 'in inbox order across batches')
  t.match((await app.inject({ method: 'POST', url: '/heartbeat', headers: alice.auth })).json(), { unread: 0 }, 'not the sender\'s own')
})

t.test('a long-poll answers with a broadcast as soon as it is stored', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const waiting = app.inject({ url: '/inbox?wait=10', headers: bob.auth })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const sent = (await send(app, alice, { body: 'now' })).json()
  t.match((await waiting).json().messages, [{ id: sent.id, body: 'now' }], 'the long-poll answered with the broadcast')
})

t.test('the archiver keeps a broadcast until every registered recipient has caught up with it and read it', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const carol = await register(app, 'carol')
  const id = (await send(app, alice, { body: 'x' })).json().id
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [id] } })
  const later = new Date(Date.now() + 2 * DAY)
  t.equal(await archiveRead(app.storage, later, DAY), 0, 'carol has no copy yet: not read by everyone')
  await app.inject({ url: '/inbox', headers: carol.auth })
  t.equal(await archiveRead(app.storage, later, DAY), 0, 'carol has it, unread')
  await app.inject({ method: 'POST', url: '/ack', headers: carol.auth, payload: { ids: [id] } })
  t.equal(await archiveRead(app.storage, later, DAY), 1)
  t.match((await app.inject({ url: `/messages/${id}`, headers: alice.auth })).json(),
    { archived: true, receipts: [{ agent: 'bob', read_at: String }, { agent: 'carol', read_at: String }] })
})

t.test('migrating down gives every agent the copies it had not caught up with', { skip: engine !== 'sqlite' && 'reopens the SQLite file' }, async (t) => {
  const path = join(t.testdir(), 'bus.db')
  const app = await build(t, { BUS_DB: path })
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const read = (await send(app, alice, { body: 'read' })).json().id
  await inbox(app, bob)
  const pending = (await send(app, alice, { body: 'pending' })).json().id
  await app.close()
  const { db } = openDatabase({ path, sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateTo(db, migrations, '0001-init')
  const rows = await db.selectFrom('deliveries').select(['message_seq', 'delivered_at']).orderBy('message_seq').execute()
  t.match(rows, [{ message_seq: read, delivered_at: String }, { message_seq: pending, delivered_at: null }])
  await migrateToLatest(db, migrations)
  const agents = await db.selectFrom('agents').select(['name', 'broadcasts_upto']).orderBy('name').execute()
  t.strictSame(agents, [{ name: 'alice', broadcasts_upto: pending }, { name: 'bob', broadcasts_upto: pending }],
    'broadcasts stored before the migration count as fanned out')
})
