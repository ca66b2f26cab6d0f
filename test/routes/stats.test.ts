import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import t from 'tap'
import { build, engine, register, send, testDb } from '../helper.js'
import { createAgent } from '../../db/agents.js'
import { hashToken } from '../../bus/tokens.js'
import auth from '../../plugins/auth.js'
import bus from '../../plugins/bus.js'
import db from '../../plugins/db.js'
import fanout from '../../plugins/fanout.js'
import stats from '../../routes/stats.js'
import { schemas } from '../../schemas/index.js'

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
    database: { engine, size_bytes: Number, schema_version: '0005-topics-queues-deadlines' },
    uptime_s: Number
  })
  t.ok(res.json().database.size_bytes > 0)
  t.equal((await app.inject({ url: '/stats' })).statusCode, 401)
})

t.test('a deregistered agent leaves the agent count, and its unread copies the unread count', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await send(app, alice, { to: 'bob', body: 'direct', priority: 'high' })
  await send(app, alice, { body: 'everyone' })
  t.match((await app.inject({ url: '/stats', headers: alice.auth })).json(), { agents: { total: 2 }, messages: { total: 2, unread: 2 } })
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: bob.auth })).statusCode, 204)
  t.match((await app.inject({ url: '/stats', headers: alice.auth })).json(), {
    agents: { total: 1, online: 1 },
    messages: { total: 2, unread: 0, by_priority: { normal: 1, high: 1, urgent: 0 } }
  }, 'his messages stay stored; nobody is left to read them')
})

// The route alone on a bare Fastify, with the option buildApp gives it when the bus has an admin token.
async function bare (t: Parameters<typeof build>[0], adminOnly: boolean) {
  const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
  t.teardown(() => app.close())
  for (const schema of schemas) app.addSchema(schema)
  await app.register(db, { url: await testDb(t), sync: 'normal' })
  await app.register(fanout, { maxReadersPerAgent: 4 })
  await app.register(bus, { maxMessageBytes: 65536, recheckMs: 1000, sweepMs: 0 })
  await app.register(auth, { adminToken: ADMIN, seenEveryMs: 1000 })
  await app.register(stats, { adminOnly })
  await app.ready()
  await createAgent(app.db, 'alice', {}, hashToken('alice-token'), new Date().toISOString())
  return app
}
const ADMIN = 'admin-token-0123456789'
const as = (token: string) => ({ authorization: `Bearer ${token}` })

t.test('on a bus with an admin token only the admin reads the stats; agents are told why not', async (t) => {
  const app = await bare(t, true)
  const admin = await app.inject({ url: '/stats', headers: as(ADMIN) })
  t.equal(admin.statusCode, 200)
  t.match(admin.json(), { agents: { total: 1 }, messages: { total: 0 } })
  const agent = await app.inject({ url: '/stats', headers: as('alice-token') })
  t.equal(agent.statusCode, 403)
  t.strictSame(agent.json(), {
    statusCode: 403,
    code: 'BUS_FORBIDDEN',
    error: 'Forbidden',
    message: 'stats are for the admin on a bus with an admin token: call with BUS_ADMIN_TOKEN'
  })
  t.equal((await app.inject({ url: '/stats' })).statusCode, 401)
  t.equal((await app.inject({ url: '/stats', headers: as('bus_not-a-token') })).statusCode, 401)
})

t.test('without adminOnly any agent reads the stats, the admin too', async (t) => {
  const app = await bare(t, false)
  t.equal((await app.inject({ url: '/stats', headers: as('alice-token') })).statusCode, 200)
  t.equal((await app.inject({ url: '/stats', headers: as(ADMIN) })).statusCode, 200)
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
  // A table gone from under the bus (renamed: both engines then fail every query that names it).
  await app.db.schema.alterTable('archived_messages').renameTo('archived_messages_gone').execute()
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
