import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../config.js'
import { testDb } from '../helper.js'
import { openStream } from '../sse.js'
import { receiver, verify } from '../webhook-receiver.js'

// Ack deadlines and lease expiry with the bus's own timers running (loops on), over HTTP: what an operator gets from
// `npm start`, not the core with a test clock (test/queues.test.ts covers the rules that way).
async function running (t: Test) {
  const app = await buildApp(loadConfig({ BUS_DB: await testDb(t), BUS_MAX_EVENT_LOOP_DELAY_MS: '0', BUS_WEBHOOK_ALLOW_PRIVATE: 'true' }), { loops: true })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const base = `http://127.0.0.1:${port}`
  const call = async (token: string, method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    return { status: res.status, body: await res.json() as any }
  }
  const register = async (name: string, extra: Record<string, unknown> = {}) => {
    const res = await fetch(`${base}/agents`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, ...extra }) })
    return await res.json() as { token: string, webhook_secret?: string }
  }
  return { app, base, call, register }
}

// Polls until `what` answers something, for at most a minute: the sweep runs every second, and a busy machine may
// take longer; no assertion is about how long.
async function eventually<T> (what: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 60_000
  for (;;) {
    const value = await what()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error('timed out')
    await sleep(100)
  }
}

t.test('a missed ack deadline reaches the sender once: stream, signed webhook, receipts; a late ack still counts', async (t) => {
  const { base, call, register } = await running(t)
  const hook = await receiver(() => 200)
  t.teardown(hook.close)
  const alice = await register('alice', { webhook_url: hook.url })
  const bob = await register('bob')
  const carol = await register('carol')
  const stream = openStream(`${base}/stream?receipts=true`, alice.token, { kinds: ['message', 'receipt', 'overdue'] })
  t.teardown(() => stream.close())
  await stream.opened

  const sent = await call(alice.token, 'POST', '/send', { to: ['bob', 'carol'], body: 'sign off?', ack_within_s: 1 })
  t.equal(sent.status, 201)
  const id = sent.body.id as number
  // carol acks in time; bob does not.
  t.match(await call(carol.token, 'POST', '/ack', { ids: [id] }), { status: 200, body: { acked: 1 } })
  const item = (await call(bob.token, 'GET', '/inbox')).body.messages[0]
  t.match(item, { id, ack_by: String })

  const [overdue] = (await stream.until(2, 60_000)).filter((e) => e.type === 'overdue')
  t.match(overdue, { type: 'overdue', data: { message_id: id, agent: 'bob', ack_by: item.ack_by } })
  const hit = await eventually(async () => hook.hits.find((h) => h.headers['x-bus-event'] === 'overdue'))
  t.ok(verify(alice.webhook_secret as string, hit), 'the overdue webhook is signed as messages are')
  t.strictSame(JSON.parse(hit.body), { event: 'overdue', message_id: id, agent: 'bob', ack_by: item.ack_by })
  t.match((await call(alice.token, 'GET', `/messages/${id}`)).body.receipts, [
    { agent: 'bob', read_at: null, overdue: true, ack_by: item.ack_by },
    { agent: 'carol', read_at: String, overdue: false }
  ])

  // A late ack records the read and sends the usual receipt.
  t.match(await call(bob.token, 'POST', '/ack', { ids: [id] }), { body: { acked: 1 } })
  const receipts = await stream.until(3, 60_000)
  t.match(receipts.filter((e) => e.type === 'receipt').map((e) => e.data.agent).sort(), ['bob', 'carol'])
  // Several more sweeps later: still one overdue event, one overdue webhook.
  await sleep(2500)
  t.equal(stream.events.filter((e) => e.type === 'overdue').length, 1)
  t.equal(hook.hits.filter((h) => h.headers['x-bus-event'] === 'overdue').length, 1)
  t.match((await call(alice.token, 'GET', `/messages/${id}`)).body.receipts[0], { agent: 'bob', read_at: String, overdue: true })
})

t.test('a lease that runs out hands the message to a claim that is waiting, with the bus own timers', async (t) => {
  const { call, register } = await running(t)
  const alice = await register('alice')
  const bob = await register('bob')
  const carol = await register('carol')
  t.equal((await call(alice.token, 'POST', '/queues', { name: 'jobs', lease_s: 1 })).status, 201)
  const { body: sent } = await call(alice.token, 'POST', '/send', { queue: 'jobs', body: 'work' })
  t.match(await call(bob.token, 'POST', '/queues/jobs/claim', {}), { body: { messages: [{ message: { id: sent.id }, delivery_count: 1 }] } })
  // carol waits; bob never acks.
  const waited = await call(carol.token, 'POST', '/queues/jobs/claim', { wait_s: 30 })
  t.match(waited, { status: 200, body: { messages: [{ message: { id: sent.id }, delivery_count: 2 }] } })
  t.match(await call(bob.token, 'POST', '/queues/jobs/ack', { ids: [sent.id] }), { status: 409, body: { code: 'BUS_LEASE_CONFLICT', message: /leased to carol/ } })
})
