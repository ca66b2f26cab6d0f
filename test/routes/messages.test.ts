import t from 'tap'
import { build, register, send, type TestApp } from '../helper.js'

async function setup (t: Parameters<typeof build>[0], env = {}) {
  const app = await build(t, env)
  const [alice, bob, carol] = [await register(app, 'alice'), await register(app, 'bob'), await register(app, 'carol')]
  return { app, alice, bob, carol }
}

const count = async (app: TestApp, table: 'messages' | 'deliveries') =>
  Number((await app.db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)

t.test('a direct send answers 201 with the message summary; the sender comes from the token', async (t) => {
  const { app, alice, bob } = await setup(t)
  const res = await send(app, alice, { to: 'bob', body: 'hello', subject: 'hi', priority: 'high', data: { k: [1, 2] } })
  t.equal(res.statusCode, 201)
  t.match(res.json(), { id: Number, from: 'alice', to: ['bob'], broadcast: false, recipients: 1, priority: 'high', created_at: String })
  t.equal(res.json().thread_id, res.json().id)
  const inbox = (await app.inject({ url: '/inbox', headers: bob.auth })).json()
  t.match(inbox.messages, [{ from: 'alice', to: ['bob'], subject: 'hi', body: 'hello', data: { k: [1, 2] }, priority: 'high', read_at: null, reply_to: null }])
  const forged = await send(app, alice, { to: 'bob', body: 'x', from: 'bob' })
  t.equal(forged.statusCode, 400, 'there is no from field to forge')
})

t.test('several recipients, one message, one delivery each', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const res = await send(app, alice, { to: ['bob', 'carol'], body: 'both' })
  t.match(res.json(), { to: ['bob', 'carol'], recipients: 2 })
  for (const who of [bob, carol]) t.match((await app.inject({ url: '/inbox', headers: who.auth })).json().messages, [{ body: 'both', to: ['bob', 'carol'] }])
  t.equal(await count(app, 'messages'), 1)
  t.equal(await count(app, 'deliveries'), 2)
  t.equal((await send(app, alice, { to: ['bob', 'bob'], body: 'x' })).statusCode, 400, 'duplicate recipients')
  t.equal((await send(app, alice, { to: [], body: 'x' })).statusCode, 400, 'an empty list is not a broadcast')
})

t.test('omitting to broadcasts to every agent but the sender', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const res = await send(app, alice, { body: 'all hands' })
  t.match(res.json(), { broadcast: true, to: [], recipients: 2 })
  for (const who of [bob, carol]) t.match((await app.inject({ url: '/inbox', headers: who.auth })).json().messages, [{ body: 'all hands', broadcast: true, to: [] }])
  t.strictSame((await app.inject({ url: '/inbox', headers: alice.auth })).json().messages, [])
  t.equal(await count(app, 'messages'), 1)
})

t.test('an unknown recipient rejects the whole send with 404 naming it; nothing is stored', async (t) => {
  const { app, alice } = await setup(t)
  const res = await send(app, alice, { to: ['bob', 'nobody', 'ghost'], body: 'x' })
  t.equal(res.statusCode, 404)
  t.match(res.json(), { code: 'BUS_AGENT_NOT_FOUND', message: /nobody, ghost/ })
  t.equal(await count(app, 'messages'), 0)
  t.equal(await count(app, 'deliveries'), 0)
})

t.test('a body over BUS_MAX_MESSAGE_BYTES is 413, counted in UTF-8 bytes', async (t) => {
  const { app, alice } = await setup(t, { BUS_MAX_MESSAGE_BYTES: '10' })
  t.equal((await send(app, alice, { to: 'bob', body: 'a'.repeat(10) })).statusCode, 201)
  const tooBig = await send(app, alice, { to: 'bob', body: 'é'.repeat(6) })
  t.equal(tooBig.statusCode, 413)
  t.match(tooBig.json(), { code: 'BUS_MESSAGE_TOO_LARGE', message: /12 bytes.*10/ })
  const huge = await send(app, alice, { to: 'bob', body: 'a'.repeat(200_000) })
  t.equal(huge.statusCode, 413, 'a request far over the limit is refused by the body limit')
  t.equal(await count(app, 'messages'), 1)
})

t.test('bad fields are 400 naming the field', async (t) => {
  const { app, alice } = await setup(t)
  for (const [payload, field] of [
    [{ to: 'bob' }, 'body'], [{ to: 'bob', body: { text: 'x' } }, 'body'], [{ to: 'Bob', body: 'x' }, 'to'], [{ to: 'bob', body: 'x', priority: 'max' }, 'priority'],
    [{ to: 'bob', body: 'x', reply_to: 'one' }, 'reply_to'], [{ to: 'bob', body: 'x', data: [1] }, 'data']
  ] as const) {
    const res = await send(app, alice, payload)
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.match(res.json().message, new RegExp(field), JSON.stringify(payload))
  }
})

t.test('replies join the thread of the message they answer, which the sender must have sent or received', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const root = (await send(app, alice, { to: 'bob', body: 'q' })).json()
  const reply = (await send(app, bob, { to: 'alice', body: 'a', reply_to: root.id })).json()
  t.equal(reply.thread_id, root.id)
  const again = (await send(app, alice, { to: 'bob', body: 'a2', reply_to: reply.id })).json()
  t.equal(again.thread_id, root.id)
  const stranger = await send(app, carol, { to: 'alice', body: 'butting in', reply_to: root.id })
  t.equal(stranger.statusCode, 404)
  t.match(stranger.json().message, /reply_to/)
  t.equal((await send(app, alice, { to: 'bob', body: 'x', reply_to: 999 })).statusCode, 404)

  const thread = await app.inject({ url: `/threads/${root.id}`, headers: bob.auth })
  t.equal(thread.statusCode, 200)
  t.strictSame(thread.json().messages.map((m: { body: string }) => m.body), ['q', 'a', 'a2'])
  t.match(thread.json().messages[1], { reply_to: root.id, thread_id: root.id })
  t.equal((await app.inject({ url: `/threads/${root.id}`, headers: carol.auth })).statusCode, 404, 'not visible to others')
})

t.test('an Idempotency-Key makes a retried send answer the first result', async (t) => {
  const { app, alice, bob } = await setup(t)
  const key = { 'idempotency-key': 'job-42' }
  const first = await send(app, alice, { to: 'bob', body: 'once' }, key)
  const second = await send(app, alice, { to: 'bob', body: 'once' }, key)
  t.equal(second.statusCode, 201)
  t.strictSame(second.json(), first.json())
  t.equal(await count(app, 'messages'), 1)
  const otherSender = await send(app, bob, { to: 'alice', body: 'mine' }, key)
  t.not(otherSender.json().id, first.json().id, 'keys are per sender')
  const parallel = await Promise.all(Array.from({ length: 10 }, () => send(app, alice, { body: 'bc' }, { 'idempotency-key': 'p' })))
  t.equal(new Set(parallel.map((r) => r.json().id)).size, 1, 'concurrent retries store one message')
})

t.test('the inbox orders urgent, high, normal, oldest first; filters and pages with a cursor', async (t) => {
  const { app, alice, bob } = await setup(t)
  const sent: Record<string, number> = {}
  for (const [body, priority] of [['n1', 'normal'], ['u1', 'urgent'], ['h1', 'high'], ['n2', 'normal'], ['u2', 'urgent'], ['h2', 'high']]) {
    sent[body] = (await send(app, alice, { to: 'bob', body, priority })).json().id
  }
  const bodies = (res: { json: () => { messages: Array<{ body: string }> } }) => res.json().messages.map((m) => m.body)
  t.strictSame(bodies(await app.inject({ url: '/inbox', headers: bob.auth })), ['u1', 'u2', 'h1', 'h2', 'n1', 'n2'])
  t.strictSame(bodies(await app.inject({ url: '/inbox?priority=high', headers: bob.auth })), ['h1', 'h2'])

  const seen: string[] = []
  let cursor: string | null = null
  do {
    const query: Record<string, string> = cursor === null ? { limit: '4' } : { limit: '4', cursor }
    const res = await app.inject({ url: '/inbox', query, headers: bob.auth })
    seen.push(...bodies(res))
    cursor = res.json().next_cursor
  } while (cursor)
  t.strictSame(seen, ['u1', 'u2', 'h1', 'h2', 'n1', 'n2'], 'pages join up without gap or repeat')

  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [sent.u1, sent.n1] } })
  t.strictSame(bodies(await app.inject({ url: '/inbox?unread=true', headers: bob.auth })), ['u2', 'h1', 'h2', 'n2'])
  const all = (await app.inject({ url: '/inbox', headers: bob.auth })).json().messages
  t.match(all[0], { body: 'u1', read_at: String })
  t.equal((await app.inject({ url: '/inbox?limit=501', headers: bob.auth })).statusCode, 400)
  t.equal((await app.inject({ url: '/inbox?limit=0', headers: bob.auth })).statusCode, 400)
  const badCursor = await app.inject({ url: '/inbox?cursor=garbage', headers: bob.auth })
  t.equal(badCursor.statusCode, 400)
  t.match(badCursor.json(), { code: 'BUS_BAD_CURSOR' })
  t.equal((await app.inject({ url: '/inbox?flavour=x', headers: bob.auth })).statusCode, 400, 'unknown filters are named, not ignored')
})

t.test('ack marks the caller\'s messages read, reports the rest, and is idempotent', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const a = (await send(app, alice, { to: 'bob', body: 'a' })).json().id
  const b = (await send(app, alice, { to: 'bob', body: 'b' })).json().id
  const c = (await send(app, alice, { to: 'carol', body: 'c' })).json().id
  const ack = (ids: number[]) => app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids } })
  t.strictSame((await ack([a, c, 9999])).json(), { acked: 1, already_read: 0, not_found: [c, 9999] })
  t.strictSame((await ack([a, b, a])).json(), { acked: 1, already_read: 1, not_found: [] })
  t.strictSame((await ack([a, b])).json(), { acked: 0, already_read: 2, not_found: [] })
  const carolsInbox = (await app.inject({ url: '/inbox?unread=true', headers: carol.auth })).json().messages
  t.equal(carolsInbox.length, 1, 'bob cannot ack carol\'s copy')
  t.equal((await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [] } })).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: ['x'] } })).statusCode, 400)
})

t.test('one message is visible to its sender and recipients only; receipts go to the sender', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const id = (await send(app, alice, { to: ['bob', 'carol'], body: 'secret' })).json().id
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [id] } })
  const forSender = (await app.inject({ url: `/messages/${id}`, headers: alice.auth })).json()
  t.match(forSender, { id, body: 'secret', receipts: [{ agent: 'bob', read_at: String }, { agent: 'carol', read_at: null }] })
  const forRecipient = (await app.inject({ url: `/messages/${id}`, headers: bob.auth })).json()
  t.match(forRecipient, { id, read_at: String })
  t.notOk('receipts' in forRecipient, 'recipients do not see the others\' receipts')
  const dave = await register(app, 'dave')
  const other = await app.inject({ url: `/messages/${id}`, headers: dave.auth })
  t.equal(other.statusCode, 404)
  t.match(other.json(), { code: 'BUS_MESSAGE_NOT_FOUND' })
  t.equal((await app.inject({ url: '/messages/abc', headers: dave.auth })).statusCode, 400)
})

t.test('history: what the caller sent or received, in order, with since/until/with/thread filters and a cursor', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const m1 = (await send(app, alice, { to: 'bob', body: 'm1' })).json()
  await send(app, carol, { to: 'alice', body: 'm2' })
  await send(app, bob, { to: 'carol', body: 'not alice\'s' })
  const m4 = (await send(app, bob, { to: 'alice', body: 'm4', reply_to: m1.id })).json()
  await send(app, carol, { body: 'm5 broadcast' })
  const bodies = async (query: string) =>
    (await app.inject({ url: `/history${query}`, headers: alice.auth })).json().messages.map((m: { body: string }) => m.body)
  t.strictSame(await bodies(''), ['m1', 'm2', 'm4', 'm5 broadcast'])
  t.strictSame(await bodies('?with=bob'), ['m1', 'm4'])
  t.strictSame(await bodies('?with=carol'), ['m2', 'm5 broadcast'])
  t.strictSame(await bodies(`?thread=${m1.id}`), ['m1', 'm4'])
  t.strictSame(await bodies(`?since=${encodeURIComponent(m4.created_at)}`), ['m4', 'm5 broadcast'])
  t.strictSame(await bodies(`?until=${encodeURIComponent(m4.created_at)}`), ['m1', 'm2'])
  const first = (await app.inject({ url: '/history?limit=3', headers: alice.auth })).json()
  t.equal(first.messages.length, 3)
  const rest = (await app.inject({ url: `/history?limit=3&cursor=${first.next_cursor}`, headers: alice.auth })).json()
  t.strictSame(rest.messages.map((m: { body: string }) => m.body), ['m5 broadcast'])
  t.equal(rest.next_cursor, null)
  t.equal((await app.inject({ url: '/history?with=nobody', headers: alice.auth })).statusCode, 404)
  t.equal((await app.inject({ url: '/history?since=yesterday', headers: alice.auth })).statusCode, 400)
})

t.test('many parallel sends into one inbox: none lost, none doubled', async (t) => {
  const { app, alice, bob, carol } = await setup(t)
  const senders = [alice, carol]
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => send(app, senders[i % 2], { to: 'bob', body: `m${i}` })))
  t.ok(results.every((r) => r.statusCode === 201))
  const ids = new Set(results.map((r) => r.json().id))
  t.equal(ids.size, 200)
  const inbox = (await app.inject({ url: '/inbox?limit=500', headers: bob.auth })).json().messages
  t.equal(inbox.length, 200)
  t.strictSame(new Set(inbox.map((m: { body: string }) => m.body)), new Set(Array.from({ length: 200 }, (_, i) => `m${i}`)))
  t.strictSame(inbox.map((m: { id: number }) => m.id), [...ids].sort((a, b) => a - b), 'inbox order is the order stored')
})

t.test('non-finite numbers (1e309) are refused with 400 naming the field, in queries and bodies', async (t) => {
  const { app, alice } = await setup(t)
  const json = { ...alice.auth, 'content-type': 'application/json' }
  for (const [method, url, payload, field] of [
    ['GET', '/inbox?limit=1e309', undefined, 'querystring/limit'],
    ['GET', '/inbox?limit=-1e309', undefined, 'querystring/limit'],
    ['GET', '/history?thread=1e309', undefined, 'querystring/thread'],
    ['POST', '/ack', '{"ids":[1,1e309]}', 'body/ids/1'],
    ['POST', '/send', '{"to":"bob","body":"x","reply_to":1e309}', 'body/reply_to']
  ] as const) {
    const res = await app.inject({ method, url, headers: json, payload })
    t.equal(res.statusCode, 400, url)
    t.match(res.json(), { statusCode: 400, message: new RegExp(`^${field} must be (a finite number|integer)`) }, url)
  }
  t.equal((await send(app, alice, { to: 'bob', body: 'x', data: { big: 1 } })).statusCode, 201, 'finite numbers pass')
})
