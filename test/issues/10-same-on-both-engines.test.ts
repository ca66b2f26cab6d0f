import t from 'tap'
import { build, engine, register, send } from '../helper.js'

// Behaviour that must not depend on the engine under the bus (npm test runs this file on both).

t.test('text with a NUL character is refused with a 400 that names the field, and nothing is stored', async (t) => {
  const app = await build(t)
  const bob = await register(app, 'bob')
  for (const [payload, field] of [[{ to: 'bob', body: 'x\u0000y' }, 'body'], [{ to: 'bob', body: 'x', subject: 's\u0000' }, 'subject']] as const) {
    const res = await send(app, bob, payload)
    t.equal(res.statusCode, 400)
    t.match(res.json(), { code: 'BUS_NUL_CHARACTER', message: new RegExp(`^${field} contains a NUL character`) })
  }
  const withKey = await send(app, bob, { to: 'bob', body: 'x' }, { 'idempotency-key': 'k\u0000' })
  t.match(withKey.json(), { statusCode: 400, message: /^Idempotency-Key contains a NUL/ })
  const described = await app.inject({ method: 'PATCH', url: '/agents/bob', headers: bob.auth, payload: { description: 'a\u0000' } })
  t.match(described.json(), { statusCode: 400, code: 'BUS_NUL_CHARACTER' })
  t.equal((await app.inject({ method: 'POST', url: '/agents', payload: { name: 'carol', description: '\u0000' } })).statusCode, 400)
  t.equal((await app.inject({ url: '/history', headers: bob.auth })).json().messages.length, 0, 'nothing stored')
  // Inside data it is JSON, stored escaped, and comes back as sent.
  const inData = await send(app, bob, { to: 'bob', body: 'x', data: { raw: 'a\u0000b' } })
  t.equal(inData.statusCode, 201)
  t.equal((await app.inject({ url: '/inbox', headers: bob.auth })).json().messages[0].data.raw, 'a\u0000b')
})

t.test('ids beyond 2^53 are refused by the contract, not by the database', async (t) => {
  const app = await build(t)
  const bob = await register(app, 'bob')
  const res = await app.inject({ url: '/messages/99999999999999999999', headers: bob.auth })
  t.equal(res.statusCode, 400)
})

t.test('/stats names the engine', async (t) => {
  const app = await build(t)
  const bob = await register(app, 'bob')
  t.equal((await app.inject({ url: '/stats', headers: bob.auth })).json().database.engine, engine)
})

t.test('two registrations of one name at once: one 201, one 409', async (t) => {
  const app = await build(t)
  const codes = (await Promise.all([1, 2, 3].map(() => app.inject({ method: 'POST', url: '/agents', payload: { name: 'twin' } })))).map((r) => r.statusCode)
  t.strictSame(codes.sort(), [201, 409, 409])
})

t.test('the same Idempotency-Key sent twice at once stores one message, and both answers name it', async (t) => {
  const app = await build(t)
  const bob = await register(app, 'bob')
  const [a, b] = await Promise.all([1, 2].map(() => send(app, bob, { to: 'bob', body: 'once' }, { 'idempotency-key': 'same' })))
  t.equal(a.statusCode, 201)
  t.equal(b.statusCode, 201)
  t.equal(a.json().id, b.json().id)
  t.equal((await app.inject({ url: '/inbox', headers: bob.auth })).json().messages.length, 1)
})
