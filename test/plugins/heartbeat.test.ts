import { join } from 'node:path'
import Fastify from 'fastify'
import t from 'tap'
import bus from '../../plugins/bus.js'
import db from '../../plugins/db.js'
import fanout from '../../plugins/fanout.js'
import heartbeat from '../../plugins/heartbeat.js'
import { build, register, until } from '../helper.js'

t.test('sweepOffline marks offline exactly the agents silent for longer than the ttl', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await app.inject({ method: 'POST', url: '/heartbeat', headers: alice.auth })
  await app.inject({ method: 'POST', url: '/heartbeat', headers: bob.auth })
  const bobSeen = Date.parse((await app.db.selectFrom('agents').select('last_seen_at').where('name', '=', 'bob').executeTakeFirstOrThrow()).last_seen_at as string)
  await app.db.updateTable('agents').set({ last_seen_at: new Date(bobSeen - 60_000).toISOString() }).where('name', '=', 'alice').execute()

  t.strictSame(await app.bus.sweepOffline(new Date(bobSeen + 1000), 30_000), ['alice'])
  const list = (await app.inject({ url: '/agents', headers: { authorization: `Bearer ${bob.token}` } })).json().agents
  t.match(list, [{ name: 'alice', status: 'offline' }, { name: 'bob', status: 'online' }])
  t.strictSame(await app.bus.sweepOffline(new Date(bobSeen + 1000), 30_000), [], 'already offline')
  await app.inject({ method: 'POST', url: '/heartbeat', headers: alice.auth })
  t.match((await app.inject({ url: '/agents/alice', headers: bob.auth })).json(), { status: 'online' }, 'activity brings it back')
})

t.test('standalone on a bare Fastify: the real timer marks a silent agent offline, and close waits for it', async (t) => {
  const app = Fastify()
  await app.register(db, { url: join(t.testdir(), 'bus.db'), sync: 'normal' })
  await app.register(fanout, { maxReadersPerAgent: 8 })
  await app.register(bus, { maxMessageBytes: 65536, recheckMs: 1000, sweepMs: 0 })
  await app.register(heartbeat, { offlineAfterMs: 50, intervalMs: 20 })
  const presence: unknown[] = []
  app.fanout.subscribe(0, (event) => presence.push(event))
  t.teardown(() => app.close())
  await app.ready()
  t.notOk('sweepOffline' in app, 'the plugin exposes nothing')
  await app.db.insertInto('agents').values({
    name: 'idle', description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: new Date().toISOString(),
    last_seen_at: new Date().toISOString(), online: 1, deleted_at: null
  }).execute()
  let online = 1
  await until('the silent agent is marked offline', async () =>
    (online = (await app.db.selectFrom('agents').select('online').executeTakeFirstOrThrow()).online) !== 1)
  t.equal(online, 0)
  t.strictSame(presence, [{ kind: 'presence', agent: 'idle', status: 'offline' }], 'readers hear who went offline')
})

t.test('the heartbeat plugin needs the bus plugin', async (t) => {
  const app = Fastify()
  app.register(heartbeat, { offlineAfterMs: 50, intervalMs: 0 })
  await t.rejects(async () => { await app.ready() }, /bus/)
})
