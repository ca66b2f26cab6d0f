import { renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { until } from '../helper.js'
import { startServer } from '../process.js'

// Issue 14: with its database file deleted under it, the bus went on answering 201 into an inode nobody could
// reach, and a restart started empty. Writes must be refused with a 503 that names the problem. These run the
// built server (npm run build first).

const json = { 'content-type': 'application/json' }

async function bus (t: Test) {
  const db = join(t.testdir(), 'bus.db')
  // Load shedding off: a busy test machine must not turn a send into under-pressure's 503.
  const server = startServer({ BUS_DB: db, BUS_MAX_EVENT_LOOP_DELAY_MS: '0' })
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.url
  const post = (path: string, body: unknown, token?: string) => fetch(`${base}${path}`, {
    method: 'POST', body: JSON.stringify(body), headers: { ...json, ...(token ? { authorization: `Bearer ${token}` } : {}) }
  })
  const { token } = await (await post('/agents', { name: 'alice' })).json()
  const send = (body: string) => post('/send', { to: 'alice', body }, token)
  t.equal((await send('before')).status, 201)
  return { db, server, base, post, send }
}

t.test('deleting the database file while the bus runs stops writes with a 503 that says so, and /health tells', async (t) => {
  const { db, server, base, post, send } = await bus(t)
  rmSync(db)

  const sent = await send('into the void')
  t.equal(sent.status, 503, 'a send is not told 201')
  t.match(await sent.json(), { code: 'BUS_STORAGE_LOST', message: /the database file was deleted while the bus ran/ })
  t.equal(sent.headers.get('retry-after'), null, 'retrying cannot help: no Retry-After')
  const registered = await post('/agents', { name: 'bob' })
  t.equal(registered.status, 503, 'nor is a registration (a write outside the group commit)')
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 503)
  t.match(await health.json(), { statusCode: 503, message: 'database cannot write: the database file was deleted while the bus ran' })

  // The periodic check says it in the log without waiting for a write.
  await until('the periodic check logs it', () => /the database cannot take writes/.test(server.output()))
  t.match(server.output(), /"level":50,.*"problem":"the database file was deleted while the bus ran","engine":"sqlite","msg":"the database cannot take writes/)
})

t.test('a database file moved away refuses writes until it is back', async (t) => {
  const { db, base, send } = await bus(t)
  renameSync(db, `${db}.moved`)
  const sent = await send('lost at restart')
  t.equal(sent.status, 503)
  t.match(await sent.json(), { message: /the database file was moved or deleted while the bus ran/ })

  renameSync(`${db}.moved`, db)
  t.equal((await send('after')).status, 201, 'the path names the open file again: writes resume')
  t.equal((await fetch(`${base}/health`)).status, 200)
})
