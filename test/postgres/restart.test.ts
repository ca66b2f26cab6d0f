import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createDatabase, startCluster } from '../../scripts/pg-cluster.mjs'
import { postgresUrl, until } from '../helper.js'
import { startServer } from '../process.js'

// The database goes away under load (PostgreSQL restarted): the bus answers 503 with Retry-After while it is down,
// never 500, loses no acknowledged message, and serves again by itself once it is back. The test has a server of
// its own, since it stops it.
const pgOnly = { skip: postgresUrl === undefined && 'PostgreSQL only: npm test runs it against a throwaway server' }

const json = { 'content-type': 'application/json' }

t.test('PostgreSQL restarted under load: 503s while down, nothing acknowledged lost, service resumes', pgOnly, async (t) => {
  const cluster = await startCluster()
  t.teardown(() => cluster.stop())
  const server = startServer({ BUS_DB: await createDatabase(cluster.url, 'bus') })
  t.teardown(() => { server.child.kill('SIGKILL') })
  t.teardown(() => { if (!t.passing()) t.comment(server.output().slice(-6000) + server.errors().slice(-2000)) })
  const base = await server.url
  const register = async (name: string) => (await (await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify({ name }) })).json()).token as string
  const alice = await register('alice')
  const bob = await register('bob')

  const acknowledged: number[] = []
  const statuses = new Map<number, number>()
  let retryAfter = true
  let stop = false
  const load = (async () => {
    for (let n = 0; !stop; n++) {
      const res = await fetch(`${base}/send`, { method: 'POST', headers: { ...json, authorization: `Bearer ${alice}` }, body: JSON.stringify({ to: 'bob', body: `m${n}` }) })
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      if (res.status === 201) acknowledged.push((await res.json()).id)
      else {
        await res.arrayBuffer()
        if (res.status === 503) retryAfter &&= Number(res.headers.get('retry-after')) > 0
        await sleep(20)
      }
    }
  })()
  await until('50 sends are acknowledged before the restart', () => acknowledged.length >= 50)
  await cluster.down()
  await until('5 sends are answered 503 while it is down', () => (statuses.get(503) ?? 0) >= 5)
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 503, '/health says the database is unavailable')
  t.ok(Number(health.headers.get('retry-after')) > 0, 'with Retry-After')
  const before = acknowledged.length
  await cluster.up()
  await until('50 more sends are acknowledged after the restart', () => acknowledged.length >= before + 50)
  stop = true
  await load
  t.equal((await fetch(`${base}/health`)).status, 200, 'healthy again')

  t.notOk(statuses.has(500), 'never a 500')
  t.ok(retryAfter, 'every 503 carried Retry-After')
  const stored: number[] = []
  for (let cursor: string | null = ''; cursor !== null;) {
    const page = await (await fetch(`${base}/history?limit=500${cursor === '' ? '' : `&cursor=${cursor}`}`, { headers: { authorization: `Bearer ${bob}` } })).json()
    stored.push(...page.messages.map((m: { id: number }) => m.id))
    cursor = page.next_cursor
  }
  t.ok(acknowledged.every((id) => stored.includes(id)), `all ${acknowledged.length} acknowledged messages are stored`)
  t.equal(stored.length, new Set(stored).size, 'each once')
})
