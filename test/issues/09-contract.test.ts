import { gzipSync } from 'node:zlib'
import t from 'tap'
import { build, register, send } from '../helper.js'

t.test('an Idempotency-Key reused with a different request is a 422 naming the first message; a true retry is marked replayed', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  await register(app, 'carol')
  const key = { 'idempotency-key': 'job-7' }
  const first = await send(app, alice, { to: 'bob', body: 'deploy?', data: { a: 1, b: [1, 2] } }, key)
  t.equal(first.statusCode, 201)
  t.equal(first.headers['idempotent-replayed'], undefined, 'a first send is not a replay')

  // The same request, its data keys in another order: a retry.
  const retry = await send(app, alice, { data: { b: [1, 2], a: 1 }, body: 'deploy?', to: 'bob' }, key)
  t.equal(retry.statusCode, 201)
  t.equal(retry.headers['idempotent-replayed'], 'true')
  t.equal(retry.json().id, first.json().id)

  for (const changed of [{ to: 'bob', body: 'deploy now!', data: { a: 1, b: [1, 2] } }, { to: 'carol', body: 'deploy?', data: { a: 1, b: [1, 2] } },
    { to: 'bob', body: 'deploy?', data: { a: 1, b: [1, 2] }, priority: 'urgent' }, { to: 'bob', body: 'deploy?' }]) {
    const res = await send(app, alice, changed, key)
    t.equal(res.statusCode, 422, JSON.stringify(changed))
    t.match(res.json(), { code: 'BUS_IDEMPOTENCY_CONFLICT', message: new RegExp(`job-7 was already used for message ${first.json().id as number}`) })
  }
  const history = (await app.inject({ url: '/history', headers: alice.auth })).json()
  t.equal(history.messages.length, 1, 'nothing was stored by the refused sends')
  // Keys belong to their sender: another agent may use the same one for its own message.
  const dave = await register(app, 'dave')
  t.equal((await send(app, dave, { to: 'alice', body: 'hi' }, key)).statusCode, 201)
})

t.test('a message with neither body text nor data is refused; either one alone is a message', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  for (const payload of [{ to: 'bob', body: '' }, { to: 'bob', body: '', data: {} }]) {
    const res = await send(app, alice, payload)
    t.equal(res.statusCode, 400)
    t.match(res.json(), { code: 'BUS_EMPTY_MESSAGE', message: 'a message needs a non-empty body or data' })
  }
  t.equal((await send(app, alice, { to: 'bob', body: '', data: { task: 1 } })).statusCode, 201)
  t.equal((await send(app, alice, { to: 'bob', body: 'x' })).statusCode, 201)
})

t.test('subject and data count against BUS_MAX_MESSAGE_BYTES with the body', async (t) => {
  const app = await build(t, { BUS_MAX_MESSAGE_BYTES: '1000' })
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  const res = await send(app, alice, { to: 'bob', body: 'small', data: { blob: 'x'.repeat(2000) } })
  t.equal(res.statusCode, 413)
  t.match(res.json(), { code: 'BUS_MESSAGE_TOO_LARGE', message: /body, subject and data together/ })
  t.equal((await send(app, alice, { to: 'bob', body: 'small', data: { blob: 'x'.repeat(500) } })).statusCode, 201)
})

t.test('bodies that are not plain JSON get a 4xx that says what to send', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const json = JSON.stringify({ to: 'alice', body: 'x' })
  const plain = await app.inject({ method: 'POST', url: '/send', headers: { ...alice.auth, 'content-type': 'text/plain' }, payload: json })
  t.equal(plain.statusCode, 415)
  t.match(plain.json().message, /send it with Content-Type: application\/json \(got text\/plain\)/)
  const form = await app.inject({ method: 'POST', url: '/send', headers: { ...alice.auth, 'content-type': 'application/x-www-form-urlencoded' }, payload: 'to=alice' })
  t.equal(form.statusCode, 415)
  const none = await app.inject({ method: 'POST', url: '/send', headers: alice.auth })
  t.equal(none.statusCode, 400)
  t.match(none.json(), { code: 'BUS_MISSING_BODY', message: /needs a JSON body, sent with Content-Type: application\/json/ })
  const gzip = await app.inject({ method: 'POST', url: '/send', headers: { ...alice.auth, 'content-type': 'application/json', 'content-encoding': 'gzip' }, payload: gzipSync(json) })
  t.equal(gzip.statusCode, 415)
  t.match(gzip.json(), { code: 'BUS_UNSUPPORTED_ENCODING', message: /gzip is not supported: send the body uncompressed/ })
})

t.test('validation messages name the real problem, not every branch of a union', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  t.strictSame((await send(app, alice, { to: [], body: 'x' })).json().message, 'body/to must have at least 1 item')
  t.match((await send(app, alice, { to: 'Bob!', body: 'x' })).json().message, /^body\/to must be an agent name: 1 to 64 lower-case letters/)
  t.match((await send(app, alice, { to: ['alice', 'BAD'], body: 'x' })).json().message, /^body\/to\/1 must be an agent name/)
  t.strictSame((await send(app, alice, { to: 'alice', body: 'x', colour: 'red' })).json().message, 'body has an unknown field "colour"')
})

t.test('JSON nested deeper than the API needs is a 400, not a stack overflow', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const deep = '{"a":'.repeat(5000) + '1' + '}'.repeat(5000)
  const res = await app.inject({ method: 'POST', url: '/send', headers: { ...alice.auth, 'content-type': 'application/json' }, payload: `{"to":"alice","body":"x","data":${deep}}` })
  t.equal(res.statusCode, 400)
  t.match(res.json(), { code: 'BUS_TOO_DEEP', message: 'body is nested more than 32 levels deep' })
  const meta = await app.inject({ method: 'POST', url: '/agents', headers: { 'content-type': 'application/json' }, payload: `{"name":"deep","metadata":${deep}}` })
  t.equal(meta.statusCode, 400)
  t.equal((await app.inject({ url: '/agents/deep', headers: alice.auth })).statusCode, 404, 'nothing was registered')
})

t.test('HEAD /inbox and HEAD /stream do not mark messages delivered', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const id = (await send(app, alice, { to: 'bob', body: 'x' })).json().id
  for (const url of ['/inbox', '/stream']) t.equal((await app.inject({ method: 'HEAD', url, headers: bob.auth })).statusCode, 405, `HEAD ${url}`)
  const receipts = (await app.inject({ url: `/messages/${id as number}`, headers: alice.auth })).json().receipts
  t.match(receipts, [{ agent: 'bob', delivered_at: null }])
})

t.test('?close_after ends a stream, so clients that wait for the whole answer (Swagger UI) see the backlog', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await send(app, alice, { to: 'bob', body: 'backlog' })
  const res = await app.inject({ url: '/stream?close_after=1', headers: { ...bob.auth, accept: 'text/event-stream' } })
  t.equal(res.statusCode, 200)
  t.match(res.body, /event: message\nid: [\d.]+\n|id: [\d.]+\nevent: message\n/)
  t.match(res.body, /"body":"backlog"/)
})

t.test('the served document names the bus it came from as its first server', async (t) => {
  const app = await build(t, { BUS_ALLOWED_HOSTS: 'bus.example' })
  for (const url of ['/openapi.json', '/docs/json']) {
    const doc = (await app.inject({ url, headers: { host: 'bus.example:9000' } })).json()
    t.strictSame(doc.servers[0], { url: 'http://bus.example:9000', description: 'This bus' }, url)
    t.equal(doc.servers[1].url, '{scheme}://{host}:{port}')
  }
})
