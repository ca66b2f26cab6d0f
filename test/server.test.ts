import { existsSync } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'
import t from 'tap'
import { startServer } from './process.js'

t.test('the server starts as the README says, serves HTTP, and shuts down cleanly on SIGTERM', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'data', 'bus.db')
  const server = startServer({ BUS_DB: db })
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.url
  const post = (path: string, body: unknown, token?: string) => fetch(`${base}${path}`, {
    method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }
  })
  const alice = await (await post('/agents', { name: 'alice' })).json()
  const bob = await (await post('/agents', { name: 'bob' })).json()
  const sent = await post('/send', { to: 'bob', body: 'over the wire' }, alice.token)
  t.equal(sent.status, 201)
  const inbox = await (await fetch(`${base}/inbox`, { headers: { authorization: `Bearer ${bob.token}` } })).json()
  t.match(inbox.messages, [{ from: 'alice', body: 'over the wire' }])
  t.equal((await fetch(`${base}/docs/`)).status, 200, 'Swagger UI is served')
  t.match(await (await fetch(`${base}/openapi.json`)).json(), { openapi: '3.1.0' })
  t.ok(existsSync(db), 'the database folder was created')
  t.notMatch(server.output(), alice.token, 'tokens never reach the log')
  t.notMatch(server.output(), 'over the wire', 'message bodies never reach the log')

  server.child.kill('SIGTERM')
  // 'close', not 'exit': it comes once the process's output has been read to the end.
  const [code] = await once(server.child, 'close')
  t.equal(code, 0)
  t.match(server.output(), /"signal":"SIGTERM"/)
  t.notOk(existsSync(`${db}-wal`), 'the database was closed cleanly (WAL checkpointed and removed)')
})

t.test('a bad configuration stops the start with a message naming the variable', async (t) => {
  const server = startServer({ BUS_DB: join(t.testdir(), 'bus.db'), BUS_OFFLINE_AFTER_S: 'soon' })
  t.teardown(() => server.child.kill('SIGKILL'))
  const [code] = await once(server.child, 'close')
  t.equal(code, 1)
  t.match(server.errors(), /BUS_OFFLINE_AFTER_S/)
})

t.test('a PostgreSQL URL that cannot be used stops the start with one line naming the problem', async (t) => {
  for (const [url, problem] of [
    ['postgres://bus@127.0.0.1:1/bus', /^agent-bus: cannot reach PostgreSQL at 127\.0\.0\.1:1\/bus: connect ECONNREFUSED/],
    ['postgres://bus:secret@[::1', /^agent-bus: BUS_DB is not a valid PostgreSQL URL/]
  ] as const) {
    const server = startServer({ BUS_DB: url })
    t.teardown(() => server.child.kill('SIGKILL'))
    const [code] = await once(server.child, 'close')
    t.equal(code, 1, url)
    t.match(server.errors(), problem)
    t.equal(server.errors().trim().split('\n').length, 1, 'one line, no stack trace')
    t.notMatch(server.errors(), /secret/, 'no password in it')
  }
})
