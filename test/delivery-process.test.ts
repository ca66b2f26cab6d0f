import { connect } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { testDb, until } from './helper.js'
import { startServer } from './process.js'
import { openStream } from './sse.js'
import { receiver, verify } from './webhook-receiver.js'

const liveMemoryProbe = new URL('./fixtures/live-memory.mjs', import.meta.url).href

// Real server processes and a reader stalled on purpose: on a busy machine the file takes longer than the suite's
// default 120 s.
t.setTimeout(600_000)

const json = { 'content-type': 'application/json' }
async function registerOver (base: string, body: Record<string, unknown>) {
  const res = await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify(body) })
  return res.json()
}
const sendOver = (base: string, token: string, body: Record<string, unknown>) =>
  fetch(`${base}/send`, { method: 'POST', headers: { ...json, authorization: `Bearer ${token}` }, body: JSON.stringify(body) })

t.test('webhook retries continue across a server restart, and the message arrives exactly once', async (t) => {
  const hook = await receiver((n) => n <= 3 ? 503 : 200)
  t.teardown(hook.close)
  // The receiver listens on loopback, which webhooks may reach only when allowed.
  const env = { BUS_DB: await testDb(t), BUS_WEBHOOK_RETRY_BASE_MS: '400', BUS_WEBHOOK_ALLOW_PRIVATE: 'true' }
  const first = startServer(env)
  t.teardown(() => first.child.kill('SIGKILL'))
  const base = await first.url
  const bob = await registerOver(base, { name: 'bob', webhook_url: hook.url })
  const alice = await registerOver(base, { name: 'alice' })
  const id = (await (await sendOver(base, alice.token, { to: 'bob', body: 'survive a restart' })).json()).id
  await until('the first attempt arrived', () => hook.hits.length >= 1)
  first.child.kill('SIGTERM')
  await once(first.child, 'exit')
  const failedBeforeRestart = hook.hits.length

  const second = startServer(env)
  t.teardown(() => second.child.kill('SIGKILL'))
  const base2 = await second.url
  await until('an attempt is answered 200', () => hook.hits.some((h) => h.status === 200))
  await sleep(1000)
  t.ok(failedBeforeRestart < 4, 'the server restarted before the receiver accepted')
  t.equal(hook.hits.length, 4, 'three refusals, then one delivery')
  t.equal(hook.hits.filter((h) => h.status === 200).length, 1, 'exactly once')
  t.ok(hook.hits.every((h) => verify(bob.webhook_secret, h)), 'signatures verify')
  t.equal(JSON.parse(hook.hits[3].body).id, id)
  // The receiver has answered; the server records the delivery right after.
  const receipts = async () => (await (await fetch(`${base2}/messages/${id}`, { headers: { authorization: `Bearer ${alice.token}` } })).json()).receipts
  await until('the delivery is recorded', async () => (await receipts())[0].delivered_at !== null)
  t.match(await receipts(), [{ agent: 'bob', delivered_at: String }])
})

t.test('a reader that stops reading is cut off while the server\'s memory stays bounded, and its resume loses nothing', async (t) => {
  const server = startServer({
    BUS_DB: await testDb(t), BUS_STREAM_STALL_S: '1', BUS_MAX_MESSAGE_BYTES: '600000', BUS_SYNC: 'normal',
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${liveMemoryProbe}`
  })
  // The bytes the server keeps alive, after a full collection: what a server queueing for the reader would hold.
  async function liveBytes (): Promise<number> {
    const seen = [...server.errors().matchAll(/^live memory: (\d+)$/gm)].length
    server.child.kill('SIGWINCH')
    let lines: RegExpMatchArray[] = []
    await until('the server reports its live memory', () => (lines = [...server.errors().matchAll(/^live memory: (\d+)$/gm)]).length !== seen)
    return Number(lines.at(-1)?.[1])
  }
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.url
  const alice = await registerOver(base, { name: 'alice' })
  const bob = await registerOver(base, { name: 'bob' })
  const { port } = new URL(base)

  // A raw client: read a little, then stop reading while the bus keeps sending.
  const socket = connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  socket.write(`GET /stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${bob.token}\r\n\r\n`)
  let text = ''
  let closed = false
  socket.on('close', () => { closed = true })
  const gotTwo = new Promise<void>((resolve) => {
    socket.on('data', (chunk) => {
      text += chunk
      if ((text.match(/\n\n/g) ?? []).length >= 3) { socket.pause(); resolve() }
    })
  })
  const body = 'x'.repeat(500_000)
  // 96 MB for the reader: a server that queued it would keep all of it alive. Measured after a full collection in the
  // server (test/fixtures/live-memory.mjs): measured as RSS, the garbage of such a load, collected or not as V8
  // pleased, grew by up to 78 MB on Node 24, and could not be told from the reader's share.
  const count = 200
  for (let i = 0; i < 2; i++) await sendOver(base, alice.token, { to: 'bob', body: `${i}` })
  await gotTwo
  // Large messages through the server once before measuring, written and read by alice: what the process keeps for
  // them anyway (a database driver's grown buffers, PostgreSQL's on each pooled connection) is not the reader's. Not
  // more: a heap grown by a bigger warm-up is collected while measuring, and would hide a server that queues.
  for (let i = 0; i < 10; i++) await sendOver(base, alice.token, { to: 'alice', body })
  await (await fetch(`${base}/inbox?limit=10`, { headers: { authorization: `Bearer ${alice.token}` } })).arrayBuffer()
  const before = await liveBytes()
  for (let i = 2; i < count; i++) t.equal((await sendOver(base, alice.token, { to: 'bob', body: `${i} ${body}` })).status, 201)
  await until('the server cuts the reader off', () => /stream reader too slow/.test(server.output()))
  const growth = await liveBytes() - before
  t.match(server.output(), /stream reader too slow: closing/, 'the server cut the reader off')
  t.ok(growth < 64 * 1024 * 1024, `live memory grew ${Math.round(growth / 1048576)} MB while ${Math.round(count * body.length / 1048576)} MB were queued for the reader`)
  socket.destroy()
  t.ok(closed || socket.destroyed)

  const ids = [...text.matchAll(/^id: (\S+)$/gm)].map((m) => m[1])
  t.ok(ids.length >= 1, 'the reader got some events before it stalled')
  const resumed = openStream(`${base}/stream`, bob.token, { lastEventId: ids.at(-1) })
  t.teardown(resumed.close)
  const rest = await resumed.until(count - ids.length, 120_000)
  const seen = [...ids.map((_, i) => i), ...rest.map((e) => Number(e.data.body.split(' ')[0]))]
  t.strictSame(seen, Array.from({ length: count }, (_, i) => i), 'every message once, in order')
})
