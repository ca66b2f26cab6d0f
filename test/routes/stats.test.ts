import t from 'tap'
import { build, register, send } from '../helper.js'
import { latestSchemaVersion } from '../../db/migrate.js'

t.test('stats count agents, messages by priority, unread deliveries, and report the schema', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await register(app, 'carol')
  const id = (await send(app, alice, { to: 'bob', body: 'x', priority: 'urgent' })).json().id
  await send(app, alice, { body: 'everyone' })
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [id] } })
  const res = await app.inject({ url: '/stats', headers: bob.auth })
  t.equal(res.statusCode, 200)
  t.match(res.json(), {
    agents: { total: 3, online: 2 },
    messages: { total: 2, unread: 2, archived: 0, by_priority: { normal: 1, high: 0, urgent: 1 } },
    database: { size_bytes: Number, schema_version: latestSchemaVersion },
    uptime_s: Number
  })
  t.ok(res.json().database.size_bytes > 0)
  t.equal((await app.inject({ url: '/stats' })).statusCode, 401)
})

t.test('health answers without auth, and 404s are JSON naming the route', async (t) => {
  const app = await build(t)
  const res = await app.inject({ url: '/health' })
  t.equal(res.statusCode, 200)
  t.strictSame(res.json(), { status: 'ok' })
  const missing = await app.inject({ url: '/nope?x=1' })
  t.equal(missing.statusCode, 404)
  t.match(missing.json(), { statusCode: 404, message: 'no route GET /nope' })
})

t.test('a failing database answers 500 without its details', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await app.db.schema.dropTable('archived_messages').execute()
  const res = await app.inject({ url: '/messages/1', headers: alice.auth })
  t.equal(res.statusCode, 500)
  t.strictSame(res.json(), { statusCode: 500, error: 'Internal Server Error', message: 'internal error' })
})

t.test('health answers 503 when the database is gone', async (t) => {
  const app = await build(t)
  await app.db.destroy()
  const res = await app.inject({ url: '/health' })
  t.equal(res.statusCode, 503)
  t.match(res.json(), { code: 'BUS_UNAVAILABLE', message: 'database unavailable' })
})
