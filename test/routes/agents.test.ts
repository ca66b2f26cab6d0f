import t from 'tap'
import { build, register } from '../helper.js'

const ADMIN = 'admin-token-0123456789'

t.test('registering answers the agent and a token shown once; only a hash is stored', async (t) => {
  const app = await build(t)
  const res = await app.inject({
    method: 'POST', url: '/agents', payload: { name: 'alice', description: 'writes code', capabilities: ['ts'], metadata: { team: 'a' } }
  })
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.match(body, {
    name: 'alice', description: 'writes code', capabilities: ['ts'], metadata: { team: 'a' }, status: 'offline', last_seen_at: null,
    registered_at: String, token: /^bus_[A-Za-z0-9_-]{43}$/
  })
  const row = await app.db.selectFrom('agents').selectAll().where('name', '=', 'alice').executeTakeFirstOrThrow()
  t.not(row.token_hash, body.token)
  t.notMatch(JSON.stringify(row), body.token)
  const agent = await app.inject({ url: '/agents/alice', headers: { authorization: `Bearer ${body.token}` } })
  t.notOk('token' in agent.json(), 'the token is not shown again')
})

t.test('a taken name is 409, a bad name or an unknown field is 400 naming it', async (t) => {
  const app = await build(t)
  await register(app, 'alice')
  const taken = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'alice' } })
  t.equal(taken.statusCode, 409)
  t.match(taken.json(), { statusCode: 409, code: 'BUS_NAME_TAKEN', error: 'Conflict', message: /alice/ })
  for (const name of ['Alice', '-x', '', 'a'.repeat(65), 'a b', 'é']) {
    const res = await app.inject({ method: 'POST', url: '/agents', payload: { name } })
    t.equal(res.statusCode, 400, JSON.stringify(name))
    t.match(res.json().message, /name/)
  }
  const extra = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', from: 'x' } })
  t.equal(extra.statusCode, 400)
  t.match(extra.json().message, /unknown field "from"/)
  const notJson = await app.inject({ method: 'POST', url: '/agents', headers: { 'content-type': 'application/json' }, payload: '{"name":' })
  t.equal(notJson.statusCode, 400)
})

t.test('with BUS_ADMIN_TOKEN set, registering needs the admin token', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN })
  const none = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'alice' } })
  t.equal(none.statusCode, 401)
  t.equal(none.headers['www-authenticate'], 'Bearer')
  const wrong = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'alice' }, headers: { authorization: 'Bearer nope' } })
  t.equal(wrong.statusCode, 401)
  const admin = await register(app, 'alice', {}, { authorization: `Bearer ${ADMIN}` })
  const byAgent = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob' }, headers: admin.auth })
  t.equal(byAgent.statusCode, 403)
  t.match(byAgent.json(), { code: 'BUS_FORBIDDEN', message: /admin/ })
})

t.test('calls without a valid token are 401, and the admin token is not an agent', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN })
  for (const authorization of [undefined, 'Basic abc', 'Bearer', 'Bearer wrong-token']) {
    const res = await app.inject({ url: '/inbox', headers: authorization === undefined ? {} : { authorization } })
    t.equal(res.statusCode, 401, String(authorization))
    t.equal(res.json().statusCode, 401)
  }
  const admin = await app.inject({ url: '/inbox', headers: { authorization: `Bearer ${ADMIN}` } })
  t.equal(admin.statusCode, 403)
  const list = await app.inject({ url: '/agents', headers: { authorization: `Bearer ${ADMIN}` } })
  t.equal(list.statusCode, 200)
})

t.test('any authenticated request marks the agent online; list and get show presence', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice', { capabilities: ['plan'] })
  const bob = await register(app, 'bob')
  const hb = await app.inject({ method: 'POST', url: '/heartbeat', headers: alice.auth })
  t.strictSame(hb.json(), { name: 'alice', status: 'online', unread: 0 })
  const list = await app.inject({ url: '/agents', headers: alice.auth })
  t.match(list.json().agents, [
    { name: 'alice', status: 'online', last_seen_at: String, capabilities: ['plan'] },
    { name: 'bob', status: 'offline', last_seen_at: null }
  ])
  await app.inject({ url: '/inbox', headers: bob.auth })
  t.match((await app.inject({ url: '/agents/bob', headers: alice.auth })).json(), { status: 'online', last_seen_at: String })
  const missing = await app.inject({ url: '/agents/carol', headers: alice.auth })
  t.equal(missing.statusCode, 404)
  t.match(missing.json(), { code: 'BUS_AGENT_NOT_FOUND', message: /carol/ })
  await app.inject({ method: 'POST', url: '/send', headers: bob.auth, payload: { to: 'alice', body: 'x' } })
  t.equal((await app.inject({ method: 'POST', url: '/heartbeat', headers: alice.auth })).json().unread, 1)
})

t.test('token rotation: by the agent itself or the admin; the old token stops working', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN })
  const adminAuth = { authorization: `Bearer ${ADMIN}` }
  const alice = await register(app, 'alice', {}, adminAuth)
  const bob = await register(app, 'bob', {}, adminAuth)
  const other = await app.inject({ method: 'POST', url: '/agents/alice/token', headers: bob.auth })
  t.equal(other.statusCode, 403)
  const own = await app.inject({ method: 'POST', url: '/agents/alice/token', headers: alice.auth })
  t.equal(own.statusCode, 200)
  const { token } = own.json()
  t.not(token, alice.token)
  t.equal((await app.inject({ url: '/inbox', headers: alice.auth })).statusCode, 401)
  t.equal((await app.inject({ url: '/inbox', headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
  const byAdmin = await app.inject({ method: 'POST', url: '/agents/bob/token', headers: adminAuth })
  t.equal(byAdmin.statusCode, 200)
  t.equal((await app.inject({ url: '/inbox', headers: bob.auth })).statusCode, 401)
  t.equal((await app.inject({ method: 'POST', url: '/agents/carol/token', headers: adminAuth })).statusCode, 404)
})

t.test('deregistering: itself or the admin; messages stay in the others\' history; the admin can reuse the name, without its mail', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN })
  const adminAuth = { authorization: `Bearer ${ADMIN}` }
  const alice = await register(app, 'alice', {}, adminAuth)
  const bob = await register(app, 'bob', {}, adminAuth)
  await app.inject({ method: 'POST', url: '/send', headers: alice.auth, payload: { to: 'bob', body: 'from old alice' } })
  await app.inject({ method: 'POST', url: '/send', headers: bob.auth, payload: { to: 'alice', body: 'to old alice' } })
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/alice', headers: bob.auth })).statusCode, 403)
  const gone = await app.inject({ method: 'DELETE', url: '/agents/alice', headers: alice.auth })
  t.equal(gone.statusCode, 204)
  t.equal(gone.body, '')
  t.equal((await app.inject({ url: '/inbox', headers: alice.auth })).statusCode, 401)
  t.equal((await app.inject({ url: '/agents/alice', headers: bob.auth })).statusCode, 404)
  const history = await app.inject({ url: '/history', headers: bob.auth })
  t.match(history.json().messages, [{ from: 'alice', body: 'from old alice' }, { from: 'bob', to: ['alice'] }])

  const again = await register(app, 'alice', { reuse_name: true }, adminAuth)
  const inbox = await app.inject({ url: '/inbox', headers: again.auth })
  t.strictSame(inbox.json().messages, [], 'a new agent with the old name does not get the old mail')
  t.strictSame((await app.inject({ url: '/history', headers: again.auth })).json().messages, [])
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: adminAuth })).statusCode, 204)
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: adminAuth })).statusCode, 404)
})
