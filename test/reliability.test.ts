import { once } from 'node:events'
import { connect } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import t from 'tap'
import { buildApp } from '../app.js'
import { loadConfig } from '../config.js'
import { build, engine, register, send, until } from './helper.js'

const count = async (app: Awaited<ReturnType<typeof build>>, table: 'messages' | 'deliveries') =>
  Number((await app.db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)

t.test('a second bus on the same database file refuses to start, saying why; it may once the first is gone', { skip: engine !== 'sqlite' && 'locks a SQLite file' }, async (t) => {
  const dir = t.testdir()
  const config = loadConfig({ BUS_DB: join(dir, 'bus.db') })
  const first = await buildApp(config, { loops: false })
  await first.ready()
  await t.rejects(buildApp(config, { loops: false }), { name: 'DatabaseInUse', message: /already served by another agent-bus process/ })
  await first.close()
  const second = await buildApp(config, { loops: false })
  await second.ready()
  await second.close()
  t.pass('the lock went with the first bus')
})

t.test('a store that cannot write answers 503, keeps nothing partial, and recovers by itself', { skip: engine !== 'sqlite' && 'fills a SQLite file (test/postgres/ restarts the server)' }, async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  await register(app, 'carol')
  await send(app, alice, { to: 'bob', body: 'before' })
  const messages = await count(app, 'messages')
  const deliveries = await count(app, 'deliveries')
  // Disk full, as SQLite reports it: the file may not grow past its current size.
  const { rows } = await sql<{ page_count: number }>`pragma page_count`.execute(app.db)
  await sql.raw(`pragma max_page_count = ${rows[0].page_count}`).execute(app.db)
  const big = 'x'.repeat(60_000)
  const full = await send(app, alice, { to: ['bob', 'carol'], body: big })
  t.equal(full.statusCode, 503)
  t.match(full.json(), { statusCode: 503, code: 'BUS_STORAGE_UNAVAILABLE', message: /disk full/ })
  t.equal(full.headers['retry-after'], '5')
  t.equal(await count(app, 'messages'), messages, 'no message row was kept')
  t.equal(await count(app, 'deliveries'), deliveries, 'no delivery row was kept')
  t.equal((await app.inject({ url: '/inbox', headers: alice.auth })).statusCode, 200, 'reads still work')
  t.match((await app.inject({ url: '/health' })).json(), { statusCode: 503, message: 'database cannot write: disk full' }, 'health says why')

  await sql.raw('pragma max_page_count = 1073741823').execute(app.db)
  t.equal((await send(app, alice, { to: ['bob', 'carol'], body: big })).statusCode, 201, 'writes work again once there is room')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200)
})

t.test('a read-only database answers 503 on writes', { skip: engine !== 'sqlite' && 'sets a SQLite pragma' }, async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await sql`pragma query_only = 1`.execute(app.db)
  const res = await send(app, alice, { to: 'alice', body: 'x' })
  t.equal(res.statusCode, 503)
  t.match(res.json().message, /read-only/)
  t.match((await app.inject({ url: '/health' })).json(), { statusCode: 503, message: 'database cannot write: database is read-only' })
  await sql`pragma query_only = 0`.execute(app.db)
  t.equal((await send(app, alice, { to: 'alice', body: 'x' })).statusCode, 201)
})

t.test('per-agent rate limits answer 429 with Retry-After; registrations are limited per address', async (t) => {
  const app = await build(t, { BUS_RATE_LIMIT_PER_MIN: '5', BUS_RATE_LIMIT_REGISTRATIONS_PER_MIN: '3' })
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await register(app, 'carol')
  const fourth = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'dave' } })
  t.equal(fourth.statusCode, 429)
  t.match(fourth.json(), { code: 'BUS_RATE_LIMITED' })

  const codes = []
  for (let i = 0; i < 6; i++) codes.push((await app.inject({ url: '/inbox', headers: alice.auth })).statusCode)
  t.strictSame(codes, [200, 200, 200, 200, 200, 429])
  const limited = await app.inject({ url: '/inbox', headers: alice.auth })
  t.match(limited.json(), { statusCode: 429, code: 'BUS_RATE_LIMITED', message: /5 requests a minute/ })
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After says when')
  t.equal((await app.inject({ url: '/inbox', headers: bob.auth })).statusCode, 200, 'another agent has its own budget')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'health is never limited')
  for (let i = 0; i < 6; i++) await app.inject({ url: '/nope', headers: bob.auth })
  t.equal((await app.inject({ url: '/nope', headers: bob.auth })).statusCode, 429, 'unknown routes are limited too')
})

t.test('limits are off by default', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  for (let i = 0; i < 50; i++) await app.inject({ url: '/inbox', headers: alice.auth })
  t.equal((await app.inject({ url: '/inbox', headers: alice.auth })).statusCode, 200)
})

t.test('oversized requests get 413 without the body being read whole, and slow request bodies are cut off', async (t) => {
  const app = await build(t, { BUS_MAX_MESSAGE_BYTES: '1000', BUS_REQUEST_TIMEOUT_MS: '500' })
  const alice = await register(app, 'alice')
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }

  const huge = connect(port, '127.0.0.1')
  await once(huge, 'connect')
  huge.write(`POST /send HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice.token}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n`)
  let answer = ''
  huge.on('data', (d) => { answer += d })
  huge.write('{"to":"alice","body":"' + 'x'.repeat(100_000))
  await once(huge, 'close')
  t.match(answer, /^HTTP\/1.1 413/, 'refused after 100 kB of a declared 100 MB')

  const slow = connect(port, '127.0.0.1')
  await once(slow, 'connect')
  slow.write(`POST /send HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice.token}\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"to":`)
  let slowAnswer = ''
  slow.on('data', (d) => { slowAnswer += d })
  const started = Date.now()
  await once(slow, 'close')
  t.ok(Date.now() - started < 5000, 'the trickling client was cut off')
  t.match(slowAnswer, /^HTTP\/1.1 408/)
})

t.test('a stalled event loop sheds load with 503 and Retry-After, then recovers', async (t) => {
  const app = await build(t, { BUS_MAX_EVENT_LOOP_DELAY_MS: '50' })
  const alice = await register(app, 'alice')
  const block = (ms: number): void => { const end = Date.now() + ms; while (Date.now() < end) { /* stall the loop on purpose */ } }
  let shed: Awaited<ReturnType<typeof app.inject>> | undefined
  // under-pressure samples the mean loop delay about once a second: a 1.2 s stall is due in the next sample.
  for (let i = 0; i < 3 && shed === undefined; i++) {
    block(1200)
    await sleep(20)
    const res = await app.inject({ url: '/inbox', headers: alice.auth })
    if (res.statusCode === 503) shed = res
  }
  t.ok(shed, 'a request was refused while the loop lagged')
  t.match(shed?.json(), { statusCode: 503, message: /Service Unavailable|pressure/i })
  t.ok(Number(shed?.headers['retry-after']) > 0)
  let recovered = false
  await until('the app answers again', async () => (recovered = (await app.inject({ url: '/inbox', headers: alice.auth })).statusCode === 200))
  t.ok(recovered, 'answers again once the loop keeps up')
})
