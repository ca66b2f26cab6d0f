import { createRequire } from 'node:module'
import t, { type Test } from 'tap'
import { createDatabase, startCluster } from '../../scripts/pg-cluster.mjs'
import { postgresUrl, testDb, until } from '../helper.js'
import { startServer } from '../process.js'

// GET /metrics of two real bus processes on one PostgreSQL database: what each node did is its own (the _total
// counters), what the database holds is the same on both, and each hears the other's notifications.
const pgOnly = { skip: postgresUrl === undefined && 'PostgreSQL only: npm test runs it against a throwaway server' }
t.setTimeout(300_000)

// parse-prometheus-text-format is CommonJS without types: its module.exports is the parse function.
interface Sample { labels?: Record<string, string>, value?: string }
interface Family { name: string, help: string, type: string, metrics: Sample[] }
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[]

const json = { 'content-type': 'application/json' }
type Node = ReturnType<typeof startServer> & { base: string }

async function startNodes (t: Test, n: number): Promise<Node[]> {
  const shared = { BUS_DB: await testDb(t) }
  // All at once: their migrations must not race.
  const nodes = Array.from({ length: n }, () => startServer(shared))
  for (const node of nodes) t.teardown(() => { node.child.kill('SIGKILL') })
  t.teardown(() => { if (!t.passing()) for (const node of nodes) t.comment(node.output().slice(-4000) + node.errors().slice(-2000)) })
  return Promise.all(nodes.map(async (node) => Object.assign(node, { base: await node.url })))
}

const post = (base: string, path: string, body: unknown, token?: string) => fetch(`${base}${path}`, {
  method: 'POST', headers: { ...json, ...(token !== undefined && { authorization: `Bearer ${token}` }) }, body: JSON.stringify(body)
})
async function registerOn (node: Node, name: string): Promise<string> {
  const res = await post(node.base, '/agents', { name })
  if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${await res.text()}`)
  return (await res.json()).token
}
async function sendOn (node: Node, token: string, body: Record<string, unknown>): Promise<number> {
  const res = await post(node.base, '/send', body, token)
  if (res.status !== 201) throw new Error(`send: ${res.status} ${await res.text()}`)
  return (await res.json()).id
}

async function scrape (node: Node) {
  const res = await fetch(`${node.base}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${await res.text()}`)
  const families = new Map(parsePrometheus(await res.text()).map((f) => [f.name, f]))
  const family = (name: string): Family => {
    const found = families.get(name)
    if (found === undefined) throw new Error(`no metric family ${name}`)
    return found
  }
  return {
    family,
    value (name: string, labels: Record<string, string> = {}): number {
      const found = family(name).metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
      if (found.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples, expected one`)
      return Number(found[0].value)
    },
    by: (name: string, label: string): Record<string, number> =>
      Object.fromEntries(family(name).metrics.map((m) => [m.labels?.[label] ?? '', Number(m.value)]))
  }
}
type Scrape = Awaited<ReturnType<typeof scrape>>

async function scrapeUntil (node: Node, what: string, check: (s: Scrape) => boolean): Promise<Scrape> {
  let last: Scrape | undefined
  await until(what, async () => check(last = await scrape(node)), 60_000)
  return last as Scrape
}

const notifications = (s: Scrape) => s.value('agent_bus_notifications_received_total')

t.test('two nodes on one database: each counts its own traffic, hears the other, and reports the same database figures', pgOnly, async (t) => {
  const [a, b] = await startNodes(t, 2)
  // Each node listens for the other's notifications once it logs so.
  for (const node of [a, b]) await until('the node listens for the others', () => node.output().includes('listening for other nodes'), 60_000)
  const alice = await registerOn(a, 'alice')
  const bob = await registerOn(a, 'bob')

  const a0 = await scrape(a)
  const b0 = await scrape(b)
  for (const s of [a0, b0]) {
    t.equal(s.family('agent_bus_notifications_received_total').type, 'COUNTER')
    t.not(s.family('agent_bus_notifications_received_total').help, '')
    t.strictSame(Object.keys(s.by('agent_bus_db_pool_connections', 'state')).sort(), ['busy', 'idle'])
    const pool = s.by('agent_bus_db_pool_connections', 'state')
    t.ok(pool.busy >= 0 && pool.idle >= 0 && pool.busy + pool.idle >= 1, `a pool with connections: ${JSON.stringify(pool)}`)
    t.ok(s.value('agent_bus_db_pool_waiting') >= 0)
    t.equal(s.family('agent_bus_db_pool_waiting').type, 'GAUGE')
    t.strictSame(s.family('agent_bus_info').metrics.map((m) => m.labels?.engine), ['postgresql'])
  }

  // Three sends through A.
  await sendOn(a, alice, { to: 'bob', body: 'one', priority: 'high' })
  await sendOn(a, alice, { to: 'bob', body: 'two' })
  await sendOn(a, alice, { body: 'everyone' })
  const b1 = await scrapeUntil(b, 'B hears of A\'s sends', (s) => notifications(s) > notifications(b0))
  const a1 = await scrape(a)
  t.strictSame(a1.by('agent_bus_messages_stored_total', 'kind'), { direct: 2, broadcast: 1, topic: 0, queue: 0 }, 'A stored them')
  t.strictSame(b1.by('agent_bus_messages_stored_total', 'kind'), { direct: 0, broadcast: 0, topic: 0, queue: 0 }, 'B stored none')
  for (const s of [a1, b1]) {
    t.strictSame(s.by('agent_bus_messages', 'priority'), { normal: 2, high: 1, urgent: 0 }, 'both read the same database')
    t.equal(s.value('agent_bus_agents', { state: 'registered' }), 2)
    t.equal(s.value('agent_bus_unread_copies'), 3)
  }

  // Bob reads through B: B hands the messages over, A does not; and B's send is heard on A.
  const inbox = await fetch(`${b.base}/inbox`, { headers: { authorization: `Bearer ${bob}` } })
  t.equal(inbox.status, 200)
  t.equal((await inbox.json()).messages.length, 3)
  const aBefore = notifications(await scrape(a))
  await sendOn(b, bob, { to: 'alice', body: 'reply' })
  const a2 = await scrapeUntil(a, 'A hears of B\'s send', (s) => notifications(s) > aBefore)
  const b2 = await scrape(b)
  t.equal(b2.value('agent_bus_deliveries_total', { path: 'inbox' }), 3)
  t.equal(a2.value('agent_bus_deliveries_total', { path: 'inbox' }), 0)
  t.equal(b2.value('agent_bus_messages_stored_total', { kind: 'direct' }), 1)
  t.equal(a2.value('agent_bus_messages_stored_total', { kind: 'direct' }), 2, 'A\'s count is unchanged by B\'s send')
  t.strictSame(a2.by('agent_bus_messages', 'priority'), b2.by('agent_bus_messages', 'priority'))
  t.strictSame(b2.by('agent_bus_messages', 'priority'), { normal: 3, high: 1, urgent: 0 })
})

// A server of its own, since the test stops it (as test/postgres/restart.test.ts does).
t.test('while PostgreSQL is down /metrics still answers: database_up 0, the node\'s counters and the last database figures', pgOnly, async (t) => {
  const cluster = await startCluster()
  t.teardown(() => cluster.stop())
  const server = startServer({ BUS_DB: await createDatabase(cluster.url, 'bus') })
  t.teardown(() => { server.child.kill('SIGKILL') })
  t.teardown(() => { if (!t.passing()) t.comment(server.output().slice(-6000) + server.errors().slice(-2000)) })
  const node = Object.assign(server, { base: await server.url })
  const alice = await registerOn(node, 'alice')
  await registerOn(node, 'bob')
  await sendOn(node, alice, { to: 'bob', body: 'before', priority: 'urgent' })
  const up = await scrape(node)
  t.equal(up.value('agent_bus_database_up'), 1)
  t.strictSame(up.by('agent_bus_messages', 'priority'), { normal: 0, high: 0, urgent: 1 })

  await cluster.down()
  t.teardown(() => cluster.up().catch(() => {}))
  const down = await scrapeUntil(node, 'database_up is 0', (s) => s.value('agent_bus_database_up') === 0)
  t.equal(down.value('agent_bus_messages_stored_total', { kind: 'direct' }), 1, 'the node\'s own counters are still served')
  t.strictSame(down.by('agent_bus_messages', 'priority'), { normal: 0, high: 0, urgent: 1 }, 'the database figures of the scrape before')
  t.equal(down.value('agent_bus_agents', { state: 'registered' }), 2)
  t.equal((await fetch(`${node.base}/health`)).status, 503, '/health agrees')

  await cluster.up()
  const again = await scrapeUntil(node, 'database_up is 1 again', (s) => s.value('agent_bus_database_up') === 1)
  t.strictSame(again.by('agent_bus_messages', 'priority'), { normal: 0, high: 0, urgent: 1 })
})
