import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import t, { type Test } from 'tap'
import { postgresUrl, testDb, until } from '../helper.js'
import { startServer } from '../process.js'
import { openStream } from '../sse.js'
import { receiver, verify } from '../webhook-receiver.js'

// Several real bus processes on one PostgreSQL database, as an operator runs them behind a load balancer.
const pgOnly = { skip: postgresUrl === undefined && 'PostgreSQL only: npm test runs it against a throwaway server' }
// Seven tests of several real processes each: beside a second npm test the file took 138 s, past the default 120 s.
t.setTimeout(600_000)

const json = { 'content-type': 'application/json' }
type Node = ReturnType<typeof startServer> & { base: string }

async function startNodes (t: Test, n: number, env: Record<string, string> = {}, db?: string): Promise<Node[]> {
  const shared = { BUS_DB: db ?? await testDb(t), BUS_WEBHOOK_ALLOW_PRIVATE: 'true', ...env }
  // All at once: their migrations must not race.
  const nodes = Array.from({ length: n }, () => startServer(shared))
  for (const node of nodes) t.teardown(() => { node.child.kill('SIGKILL') })
  return Promise.all(nodes.map(async (node) => Object.assign(node, { base: await node.url })))
}

const post = (base: string, path: string, body: unknown, token?: string) => fetch(`${base}${path}`, {
  method: 'POST', headers: { ...json, ...(token !== undefined && { authorization: `Bearer ${token}` }) }, body: JSON.stringify(body)
})
const get = (base: string, path: string, token: string) => fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
async function registerOn (node: Node, name: string, extra: Record<string, unknown> = {}) {
  const res = await post(node.base, '/agents', { name, ...extra })
  if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${await res.text()}`)
  return res.json() as Promise<{ token: string, webhook_secret?: string }>
}

t.test('three nodes started at once: register on one, stream on another, send through the third', pgOnly, async (t) => {
  const [one, two, three] = await startNodes(t, 3)
  const alice = await registerOn(one, 'alice')
  const bob = await registerOn(one, 'bob')
  const stream = openStream(`${two.base}/stream?receipts=true&presence=true`, bob.token, { kinds: ['message', 'receipt', 'presence'] })
  t.teardown(stream.close)
  await stream.opened
  const sent = await post(three.base, '/send', { to: 'bob', body: 'across nodes' }, alice.token)
  t.equal(sent.status, 201)
  const { id } = await sent.json()
  await until('the message is on bob\'s stream', () => stream.events.some((e) => e.type === 'message'))
  t.match(stream.events.find((e) => e.type === 'message'), { data: { id, body: 'across nodes', from: 'alice' } })
  t.match(stream.events.find((e) => e.type === 'presence'), { data: { agent: 'alice', status: 'online' } }, 'alice came online on node 3')

  // Bob's receipt, acknowledged through node 1, reaches alice's stream on node 3.
  const aliceStream = openStream(`${three.base}/stream?receipts=true`, alice.token, { kinds: ['message', 'receipt'] })
  t.teardown(aliceStream.close)
  await aliceStream.opened
  t.equal((await post(one.base, '/ack', { ids: [id] }, bob.token)).status, 200)
  await aliceStream.until(1)
  t.match(aliceStream.events[0], { type: 'receipt', data: { message_id: id, agent: 'bob' } })

  // Presence: carol registers and calls node 3; bob's stream on node 2 hears she is online, and every node lists
  // bob as online (his stream is on node 2 only).
  const carol = await registerOn(three, 'carol')
  await get(three.base, '/inbox', carol.token)
  await until('carol is online on bob\'s stream', () => stream.events.some((e) => e.type === 'presence' && e.data.agent === 'carol' && e.data.status === 'online'))
  for (const node of [one, two, three]) {
    const list = await (await get(node.base, '/agents', carol.token)).json()
    t.match(list.agents.find((a: { name: string }) => a.name === 'bob'), { status: 'online' }, `bob online on ${node.base}`)
  }
})

t.test('a long-poll on one node is woken by a send through another', pgOnly, async (t) => {
  const [one, two] = await startNodes(t, 2)
  const alice = await registerOn(one, 'alice')
  const bob = await registerOn(two, 'bob')
  const poll = get(one.base, '/inbox?wait=25', bob.token)
  await sleep(300)
  t.equal((await post(two.base, '/send', { to: 'bob', body: 'wake up' }, alice.token)).status, 201)
  // Timed from the send's answer, so a slow start of the poll or the send does not count against the bound.
  const sent = Date.now()
  const page = await (await poll).json()
  t.match(page.messages, [{ body: 'wake up' }])
  // Woken by the notification, not by the 25 s deadline (nor by the periodic re-read, every 5 s).
  t.ok(Date.now() - sent < 4000, `answered ${Date.now() - sent} ms after the send`)
})

t.test('a webhook receiver gets each message once, not once per node', pgOnly, async (t) => {
  const hook = await receiver(() => 200)
  t.teardown(hook.close)
  const [one, two, three] = await startNodes(t, 3)
  const bob = await registerOn(one, 'bob', { webhook_url: hook.url })
  const alice = await registerOn(two, 'alice')
  const nodes = [one, two, three]
  const ids: number[] = []
  for (let i = 0; i < 30; i++) ids.push((await (await post(nodes[i % 3].base, '/send', { to: 'bob', body: `m${i}` }, alice.token)).json()).id)
  await until('30 webhook deliveries arrived', () => hook.hits.length >= 30)
  await sleep(1000) // room for a duplicate to show up
  const delivered = hook.hits.map((h) => JSON.parse(h.body).id as number).sort((a, b) => a - b)
  t.strictSame(delivered, ids, 'each message exactly once')
  t.ok(hook.hits.every((h) => verify(bob.webhook_secret as string, h)), 'signed')
})

t.test('a node killed while holding webhook attempts: another delivers them after the lease', pgOnly, async (t) => {
  // The first attempt never gets an answer; the node making it dies.
  const hook = await receiver((n) => n === 1 ? 'hang' : 200)
  t.teardown(hook.close)
  const db = await testDb(t)
  const env = { BUS_WEBHOOK_TIMEOUT_MS: '1500' }
  const [doomed] = await startNodes(t, 1, env, db)
  await registerOn(doomed, 'bob', { webhook_url: hook.url })
  const alice = await registerOn(doomed, 'alice')
  const { id } = await (await post(doomed.base, '/send', { to: 'bob', body: 'outlive your node' }, alice.token)).json()
  await until('the first attempt arrived', () => hook.hits.length === 1)
  doomed.child.kill('SIGKILL')
  await once(doomed.child, 'exit')
  const [survivor] = await startNodes(t, 1, env, db)
  await until('the attempt is taken over', () => hook.hits.length >= 2)
  t.equal(JSON.parse(hook.hits[1].body).id, id)
  // The receiver counts the hit when the POST arrives; the survivor records the delivery after the 200.
  let receipts: unknown
  await until('the delivery is recorded', async () => {
    receipts = (await (await get(survivor.base, `/messages/${id}`, alice.token)).json()).receipts
    return (receipts as Array<{ delivered_at: string | null }>)[0]?.delivered_at != null
  })
  t.match(receipts, [{ agent: 'bob', delivered_at: String }])
})

t.test('SIGKILL one node under load: every 201 stored once; a stream resumed on a survivor misses and repeats nothing', pgOnly, async (t) => {
  const nodes = await startNodes(t, 3)
  const [one, two, three] = nodes
  const bob = await registerOn(one, 'bob')
  const senders = await Promise.all([0, 1, 2].map((i) => registerOn(nodes[i], `sender${i}`)))
  const stream = openStream(`${three.base}/stream`, bob.token)
  await stream.opened

  const acknowledged: number[] = []
  let stop = false
  const load = senders.map(async (sender, i) => {
    for (let n = 0; !stop; n++) {
      // Each sender round-robins over the nodes; requests to the killed node fail, as they would behind a balancer.
      const node = nodes[(i + n) % 3]
      try {
        const res = await post(node.base, '/send', { to: 'bob', body: `s${i}-${n}` }, sender.token)
        if (res.status === 201) acknowledged.push((await res.json()).id)
      } catch { /* the connection to the killed node */ }
    }
  })
  await until('some load is acknowledged', () => acknowledged.length >= 50)
  two.child.kill('SIGKILL')
  await until('more load is acknowledged after the kill', () => acknowledged.length >= 150)
  // The reader's node goes too: it resumes on node 1 from the last event it got.
  stream.close()
  const lastId = stream.events.at(-1)?.id
  stop = true
  await Promise.all(load)
  const resumed = openStream(`${one.base}/stream`, bob.token, { lastEventId: lastId })
  t.teardown(resumed.close)
  await resumed.opened
  const expected = acknowledged.length
  await until('every acknowledged message is on the streams', () => new Set([...stream.events, ...resumed.events].map((e) => e.data.id)).size >= expected)
  await sleep(500)
  const got = [...stream.events, ...resumed.events].map((e) => e.data.id as number)
  t.equal(got.length, new Set(got).size, 'no event repeated')
  t.ok(acknowledged.every((id) => got.includes(id)), 'no acknowledged message missed')
  const history = await (await get(one.base, '/history?limit=500', bob.token)).json()
  const stored = history.messages.map((m: { id: number }) => m.id)
  t.equal(stored.length, new Set(stored).size, 'stored once each')
  t.ok(acknowledged.every((id) => stored.includes(id)), 'every 201 is stored')
})

t.test('two nodes at once: one name registered once, one Idempotency-Key stores one message', pgOnly, async (t) => {
  const [one, two] = await startNodes(t, 2)
  const codes = await Promise.all([one, two, one, two].map((node) => post(node.base, '/agents', { name: 'twin' }).then((r) => r.status)))
  t.strictSame(codes.sort(), [201, 409, 409, 409])
  const alice = await registerOn(one, 'alice')
  await registerOn(two, 'bob')
  for (let round = 0; round < 5; round++) {
    const answers = await Promise.all([one, two].map((node) => fetch(`${node.base}/send`, {
      method: 'POST', headers: { ...json, authorization: `Bearer ${alice.token}`, 'idempotency-key': `k${round}` }, body: JSON.stringify({ to: 'bob', body: `once ${round}` })
    })))
    t.strictSame(answers.map((r) => r.status), [201, 201])
    const [a, b] = await Promise.all(answers.map((r) => r.json()))
    t.equal(a.id, b.id, `round ${round}: both answers name one message`)
  }
  const history = await (await get(two.base, '/history', alice.token)).json()
  t.equal(history.messages.length, 5, 'five messages, not ten')
})

t.test('a node whose listening connection is cut reconnects it, and push across nodes goes on', pgOnly, async (t) => {
  const db = await testDb(t)
  const [one, two] = await startNodes(t, 2, {}, db)
  const alice = await registerOn(one, 'alice')
  const bob = await registerOn(one, 'bob')
  const stream = openStream(`${two.base}/stream`, bob.token)
  t.teardown(stream.close)
  await stream.opened
  // The server ends every LISTEN connection (node 2's among them), as a restart of a pooler or a network cut would.
  const admin = new pg.Client({ connectionString: db })
  await admin.connect()
  t.teardown(() => admin.end())
  const { rowCount } = await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'agent-bus listen'")
  t.equal(rowCount, 2, 'both nodes\' listening connections were cut')
  await until('node 2 listens again', () => (two.output().match(/listening for other nodes/g) ?? []).length >= 2)
  t.match(two.output(), /lost the connection that listens for other nodes: reconnecting/)
  for (let i = 0; i < 3; i++) {
    t.equal((await post(one.base, '/send', { to: 'bob', body: `after ${i}` }, alice.token)).status, 201)
    await stream.until(i + 1)
  }
  t.strictSame(stream.events.map((e) => e.data.body), ['after 0', 'after 1', 'after 2'], 'each send through node 1 reaches the stream on node 2')
})
