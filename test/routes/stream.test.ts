import { once } from 'node:events'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { build, register, send, testDb, until, type Env } from '../helper.js'
import { openStream } from '../sse.js'

async function serve (t: Parameters<typeof build>[0], env: Env = {}) {
  const app = await build(t, env)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, base }
}

const bodies = (events: Array<{ data: { body: string } }>) => events.map((e) => e.data.body)

t.test('the stream sends the unread backlog in inbox order, then new messages live, in order', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  for (const [body, priority] of [['n1', 'normal'], ['u1', 'urgent'], ['h1', 'high'], ['read', 'urgent']]) await send(app, alice, { to: 'bob', body, priority })
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [4] } })

  const stream = openStream(`${base}/stream`, bob.token)
  t.teardown(stream.close)
  await stream.opened
  t.strictSame(bodies(await stream.until(3)), ['u1', 'h1', 'n1'], 'backlog first, most urgent first, acknowledged skipped')
  for (const body of ['live1', 'live2', 'live3']) await send(app, alice, { to: 'bob', body })
  await send(app, alice, { body: 'broadcast' })
  t.strictSame(bodies(await stream.until(7)), ['u1', 'h1', 'n1', 'live1', 'live2', 'live3', 'broadcast'])
  t.match(stream.events[0].data, { id: 2, from: 'alice', to: ['bob'], priority: 'urgent', read_at: null, thread_id: 2 })
  await sleep(100)
  t.equal(stream.events.length, 7, 'nothing is sent twice')
  // The stream sends a batch's events, and only then records their delivery.
  const receipts = async () => (await app.inject({ url: '/messages/5', headers: alice.auth })).json().receipts
  await until('the delivery is recorded', async () => (await receipts())[0].delivered_at !== null)
  t.match(await receipts(), [{ agent: 'bob', delivered_at: String, read_at: null }], 'streamed messages count as delivered')
})

t.test('Last-Event-ID resumes exactly after that event, from the backlog or the live part', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  for (const [body, priority] of [['n1', 'normal'], ['n2', 'normal'], ['u1', 'urgent'], ['h1', 'high']]) await send(app, alice, { to: 'bob', body, priority })

  const first = openStream(`${base}/stream`, bob.token)
  const got = await first.until(2)
  first.close()
  t.strictSame(bodies(got.slice(0, 2)), ['u1', 'h1'])
  const resumeId = got[1].id

  // While away: a new message arrives, and n1 is read elsewhere.
  await send(app, alice, { to: 'bob', body: 'while away', priority: 'urgent' })
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [1] } })

  const second = openStream(`${base}/stream`, bob.token, { lastEventId: resumeId })
  t.teardown(second.close)
  t.strictSame(bodies(await second.until(2)), ['n2', 'while away'], 'the backlog continues, then what came after it; read ones skipped')
  const liveId = second.events[1].id
  second.close()

  await send(app, alice, { to: 'bob', body: 'after live' })
  const third = openStream(`${base}/stream?last_event_id=${encodeURIComponent(liveId)}`, bob.token)
  t.teardown(third.close)
  t.strictSame(bodies(await third.until(1)), ['after live'], 'the query form works too, and resumes the live part')
  await sleep(100)
  t.equal(third.events.length, 1)

  const bad = await fetch(`${base}/stream`, { headers: { authorization: `Bearer ${bob.token}`, 'last-event-id': 'x.y' } })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'BUS_BAD_EVENT_ID' })
  t.equal((await fetch(`${base}/stream`)).status, 401)
  const json = await fetch(`${base}/stream`, { headers: { authorization: `Bearer ${bob.token}`, accept: 'application/json' } })
  t.equal(json.status, 406)
})

t.test('200 concurrent streams each get one broadcast exactly once', async (t) => {
  const { app, base } = await serve(t)
  const sender = await register(app, 'sender')
  const streams: Array<ReturnType<typeof openStream>> = []
  for (let i = 0; i < 200; i++) {
    const agent = await register(app, `agent-${i}`)
    streams.push(openStream(`${base}/stream`, agent.token))
  }
  t.teardown(() => { for (const s of streams) s.close() })
  await Promise.all(streams.map((s) => s.opened))
  await send(app, sender, { body: 'to all' })
  await Promise.all(streams.map((s) => s.until(1)))
  await sleep(200)
  t.ok(streams.every((s) => s.events.length === 1 && s.events[0].data.body === 'to all'), 'each stream got it once')
})

t.test('receipt and presence events arrive when asked for, and not otherwise', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const kinds = ['message', 'receipt', 'presence']
  await app.inject({ method: 'POST', url: '/heartbeat', headers: alice.auth })
  const asked = openStream(`${base}/stream?receipts=true&presence=true`, alice.token, { kinds })
  const plain = openStream(`${base}/stream`, alice.token, { kinds })
  t.teardown(() => { asked.close(); plain.close() })
  await Promise.all([asked.opened, plain.opened])

  const id = (await send(app, alice, { to: 'bob', body: 'x' })).json().id // bob's first request: he comes online
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [id] } })
  const events = await asked.until(2)
  t.match(events, [
    { type: 'presence', data: { agent: 'bob', status: 'online' } },
    { type: 'receipt', data: { message_id: id, agent: 'bob', read_at: String } }
  ])
  await send(app, bob, { to: 'alice', body: 'for alice' })
  await asked.until(3)
  await plain.until(1)
  await sleep(100)
  t.strictSame(plain.events.map((e) => e.type), ['message'], 'a plain stream gets messages only')
})

t.test('an open stream keeps its agent online; keep-alive comments flow; close() ends open streams', async (t) => {
  const app = await build(t)
  t.teardown(() => app.close())
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const alice = await register(app, 'alice')
  const res = await fetch(`${base}/stream`, { headers: { authorization: `Bearer ${alice.token}` } })
  t.equal(res.headers.get('content-type'), 'text/event-stream')
  const reader = res.body!.getReader()
  const later = new Date(Date.now() + 3_600_000)
  t.strictSame(await app.bus.sweepOffline(later, 1000), [], 'not swept while streaming')
  t.match((await app.inject({ url: '/agents/alice', headers: alice.auth })).json(), { status: 'online' })
  const closing = app.close()
  let text = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    text += Buffer.from(value).toString()
  }
  await closing
  t.pass('close() resolved with a stream open, and the stream ended')
  t.equal(text, '', 'nothing was pending')
})

t.test('keep-alive comments are sent on an idle stream', async (t) => {
  const { buildApp } = await import('../../app.js')
  const { loadConfig } = await import('../../config.js')
  const app = await buildApp(loadConfig({ BUS_DB: await testDb(t), BUS_MAX_EVENT_LOOP_DELAY_MS: '0' }), { loops: false, streamKeepAliveMs: 50 })
  t.teardown(() => app.close())
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const alice = await register(app, 'alice')
  const res = await fetch(`${base}/stream`, { headers: { authorization: `Bearer ${alice.token}` } })
  const reader = res.body!.getReader()
  const { value } = await reader.read()
  t.match(Buffer.from(value!).toString(), /^: heartbeat\n\n/)
  await reader.cancel()
})

t.test('long-poll: answers as soon as a message arrives, or empty at its timeout', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const started = Date.now()
  const polling = fetch(`${base}/inbox?wait=30&unread=true`, { headers: { authorization: `Bearer ${bob.token}` } })
  await sleep(200)
  await send(app, alice, { to: 'bob', body: 'wake up' })
  const res = await polling
  t.strictSame((await res.json()).messages.map((m: { body: string }) => m.body), ['wake up'])
  t.ok(Date.now() - started < 10_000, 'answered long before its 30 s wait')

  const empty = await app.inject({ url: '/inbox?wait=1&unread=true&priority=urgent', headers: bob.auth })
  t.strictSame(empty.json(), { messages: [], next_cursor: null }, 'a non-matching message does not end the wait; the timeout does')
  t.equal((await app.inject({ url: '/inbox?wait=61', headers: bob.auth })).statusCode, 400)

  const pending = app.inject({ url: '/inbox?wait=60', headers: alice.auth })
  await sleep(100)
  await app.close()
  t.equal((await pending).statusCode, 200, 'closing the bus answers pending long-polls')
})

t.test('a reader that falls 1,000 receipt or presence events behind is cut off', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice')
  const res = await fetch(`${base}/stream?presence=true`, { headers: { authorization: `Bearer ${alice.token}` } })
  const reader = res.body!.getReader()
  await sleep(100)
  for (let i = 0; i < 1500; i++) app.fanout.publish({ kind: 'presence', agent: `a${i}`, status: 'online' })
  let text = ''
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    text += Buffer.from(value).toString()
  }
  t.equal((text.match(/event: presence/g) ?? []).length, 0, 'the stream closed instead of queueing without bound')
})

t.test('a reader that stops reading pins about one batch of memory, not what is queued for it', async (t) => {
  // Garbage collection on demand, so the figure is what is held, not what is yet to be collected. Twice: the memory
  // of the Buffers a collection finds dead is freed only by the next one, and until then process.memoryUsage()
  // still counts it as external (50 dropped 1 MB Buffers: 52 MB after one gc(), 3 MB after two, Node 20 and 24).
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const held = (): number => { gc(); gc(); const m = process.memoryUsage(); return m.heapUsed + m.external }
  const { app, base } = await serve(t, { BUS_STREAM_STALL_S: '30', BUS_MAX_MESSAGE_BYTES: '600000', BUS_SYNC: 'normal' })
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const { port } = new URL(base)
  const socket = connect(Number(port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  socket.write(`GET /stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${bob.token}\r\n\r\n`)
  let text = ''
  const gotOne = new Promise<void>((resolve) => socket.on('data', (chunk) => {
    text += chunk
    if (text.includes('\n\n')) { socket.pause(); resolve() }
  }))
  await send(app, alice, { to: 'bob', body: 'first' })
  await gotOne
  const before = held()
  const body = 'x'.repeat(500_000)
  for (let i = 0; i < 100; i++) t.equal((await send(app, alice, { to: 'bob', body: `${i} ${body}` })).statusCode, 201)
  await sleep(300)
  const growth = held() - before
  // About 0 MB on either engine; a stream that did not wait for the socket to drain held 85 MB.
  t.ok(growth < 8 * 1048576, `held ${Math.round(growth / 1048576)} MB more while 48 MB were queued for a reader that stopped`)
})
