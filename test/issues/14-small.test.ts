import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import t from 'tap'
import { build, register, send } from '../helper.js'

t.test('a bus on loopback answers only loopback names and BUS_ALLOWED_HOSTS (DNS rebinding)', async (t) => {
  const app = await build(t, { BUS_ALLOWED_HOSTS: 'bus.internal' })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const port = new URL(base).port
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `bus.internal:${port}`, 'localhost']) {
    t.equal((await app.inject({ url: '/health', headers: { host } })).statusCode, 200, host)
  }
  for (const host of [`evil.example:${port}`, 'attacker.test', `localhost.evil.example:${port}`]) {
    const res = await app.inject({ method: 'POST', url: '/agents', headers: { host }, payload: { name: 'mallory' } })
    t.equal(res.statusCode, 403, host)
    t.match(res.json(), { code: 'BUS_HOST_NOT_ALLOWED', message: /BUS_ALLOWED_HOSTS/ })
  }
  t.equal((await app.inject({ url: '/agents/mallory', headers: { host: 'localhost' } })).statusCode, 401, 'nothing was registered (401: no token)')
  // Over real HTTP, as a browser would send it after rebinding (fetch cannot set Host; node:http can).
  const status = await new Promise<number | undefined>((resolve, reject) => {
    const req = request(`${base}/agents`, { method: 'POST', headers: { host: 'rebound.example', 'content-type': 'application/json' } }, (res) => {
      res.resume()
      resolve(res.statusCode)
    })
    req.on('error', reject)
    req.end('{"name":"mallory"}')
  })
  t.equal(status, 403)
})

t.test('a bus on another address checks Host only when BUS_ALLOWED_HOSTS is set', async (t) => {
  const open = await build(t, { HOST: '0.0.0.0', BUS_OPEN_REGISTRATION: 'true' })
  t.equal((await open.inject({ url: '/health', headers: { host: 'anything.example' } })).statusCode, 200)
  const strict = await build(t, { HOST: '0.0.0.0', BUS_OPEN_REGISTRATION: 'true', BUS_ALLOWED_HOSTS: 'bus.example.com' })
  t.equal((await strict.inject({ url: '/health', headers: { host: 'bus.example.com:8091' } })).statusCode, 200)
  t.equal((await strict.inject({ url: '/health', headers: { host: 'other.example' } })).statusCode, 403)
})

t.test('OPTIONS answers the methods a path takes', async (t) => {
  const app = await build(t)
  const agents = await app.inject({ method: 'OPTIONS', url: '/agents/alice' })
  t.equal(agents.statusCode, 204)
  t.equal(agents.headers.allow, 'DELETE, GET, HEAD, OPTIONS, PATCH')
  t.equal((await app.inject({ method: 'OPTIONS', url: '/send' })).headers.allow, 'OPTIONS, POST')
  t.equal((await app.inject({ method: 'OPTIONS', url: '/inbox?unread=true' })).headers.allow, 'GET, OPTIONS', 'no HEAD: it would mark messages delivered')
  t.equal((await app.inject({ method: 'OPTIONS', url: '/nowhere' })).statusCode, 404)
  const wrong = await app.inject({ method: 'DELETE', url: '/send' })
  t.equal(wrong.statusCode, 405, 'a wrong method on a real path is a 405, not a 404')
  t.equal(wrong.headers.allow, 'OPTIONS, POST')
  t.match(wrong.json(), { code: 'BUS_METHOD_NOT_ALLOWED', message: 'DELETE /send is not supported; use OPTIONS, POST' })
  t.equal((await app.inject({ method: 'GET', url: '/nowhere' })).statusCode, 404)
})

t.test('a cursor is accepted only as the bus spelled it; an impossible time is a 400', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  for (let i = 0; i < 3; i++) await send(app, alice, { to: 'alice', body: `m${i}` })
  const page = (await app.inject({ url: '/history?limit=1', headers: alice.auth })).json()
  t.equal((await app.inject({ url: `/history?limit=1&cursor=${page.next_cursor as string}`, headers: alice.auth })).statusCode, 200)
  for (const text of ['1.0', ' 1', '0x1', '01', '1e0', '-1']) {
    const res = await app.inject({ url: `/history?cursor=${Buffer.from(text).toString('base64url')}`, headers: alice.auth })
    t.equal(res.statusCode, 400, JSON.stringify(text))
  }
  for (const text of ['99.0', ' 1.1', '0x1.1', '1.1.1']) {
    t.equal((await app.inject({ url: `/inbox?cursor=${Buffer.from(text).toString('base64url')}`, headers: alice.auth })).statusCode, 400, JSON.stringify(text))
  }
  const leap = await app.inject({ url: '/history?since=2026-12-31T23:59:60Z', headers: alice.auth })
  t.equal(leap.statusCode, 400)
  t.match(leap.json(), { code: 'BUS_BAD_TIMESTAMP', message: /since is not a time/ })
})

t.test('inbox and history pages are bounded by bytes as well as by count, and the cursor carries on', async (t) => {
  const app = await build(t, { BUS_MAX_MESSAGE_BYTES: String(2 << 20) })
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const big = 'x'.repeat(1_500_000)
  for (let i = 0; i < 3; i++) t.equal((await send(app, alice, { to: 'bob', body: `${i}`, data: { big } })).statusCode, 201)
  for (const url of ['/inbox?limit=500', '/history?limit=500']) {
    const first = (await app.inject({ url, headers: bob.auth })).json()
    t.equal(first.messages.length, 2, `${url}: a first page of about 4 MiB`)
    t.type(first.next_cursor, 'string')
    const rest = (await app.inject({ url: `${url}&cursor=${first.next_cursor as string}`, headers: bob.auth })).json()
    t.strictSame(rest.messages.map((m: { body: string }) => m.body), ['2'], `${url}: the rest on the next page`)
  }
})

t.test('the per-address cap does not count clients on 127.0.0.1: on the default HOST every local agent is one', async (t) => {
  const app = await build(t, { BUS_MAX_CONNECTIONS_PER_ADDRESS: '2' })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = new URL(base)
  const sockets = await Promise.all(Array.from({ length: 5 }, () => new Promise<Socket>((resolve, reject) => {
    const socket = connect({ port: Number(port), host: '127.0.0.1', localAddress: '127.0.0.1' }, () => resolve(socket))
    socket.on('error', reject)
  })))
  t.teardown(() => { for (const s of sockets) s.destroy() })
  const last = sockets[4]
  const answer = new Promise<string>((resolve) => {
    let text = ''
    last.on('data', (chunk) => { text += chunk; if (text.includes('\r\n\r\n')) resolve(text) })
    last.on('close', () => resolve(text))
  })
  last.write('GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n')
  t.match(await answer, /^HTTP\/1.1 200/, 'the fifth local connection is served')
})
