import fc from 'fast-check'
import { sql } from 'kysely'
import t from 'tap'
import { build, register, send } from './helper.js'

// Routes with a placeholder for a generated path segment. /stream is left out: a valid request streams forever,
// and its parameters are the Last-Event-ID cases tested in the stream tests.
const ROUTES = [
  ['POST', '/agents'], ['GET', '/agents'], ['GET', '/agents/:x'], ['PATCH', '/agents/:x'], ['POST', '/agents/:x/token'],
  ['DELETE', '/agents/:x'], ['POST', '/heartbeat'], ['POST', '/send'], ['GET', '/inbox'], ['POST', '/ack'],
  ['GET', '/messages/:x'], ['GET', '/threads/:x'], ['GET', '/history'], ['GET', '/stats'], ['GET', '/health'], ['GET', '/:x']
] as const

// Hostile JSON: huge, unicode, NUL-laden, deeply nested, wrong types.
const nasty = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 50 }),
  fc.constantFrom('\u0000', 'a\u0000b', '💥'.repeat(1000), 'x'.repeat(70_000), '__proto__', 'constructor', '-1', '1e309', 'NaN'),
  fc.integer(), fc.double(), fc.boolean(), fc.constant(null)
)
// Written as text: nesting this deep would overflow JSON.stringify in the test itself.
const deep = fc.tuple(fc.integer({ min: 50, max: 20_000 }), fc.constantFrom('body', 'data', 'ids', 'to')).map(([depth, key]) =>
  `{"${key}":${'{"v":['.repeat(depth)}1${']}'.repeat(depth)}}`)
const jsonValue = fc.oneof(
  { depthSize: 'small' },
  fc.jsonValue(), nasty,
  fc.record({ to: fc.oneof(nasty, fc.array(nasty, { maxLength: 5 })), body: nasty, priority: nasty, reply_to: nasty, data: fc.oneof(nasty, fc.jsonValue()) }, { requiredKeys: [] }),
  fc.record({ name: nasty, description: nasty, capabilities: fc.oneof(nasty, fc.array(nasty)), metadata: nasty, webhook_url: nasty }, { requiredKeys: [] }),
  fc.record({ ids: fc.oneof(nasty, fc.array(nasty, { maxLength: 2000 })) }, { requiredKeys: [] })
)
const rawBody = fc.oneof(
  jsonValue.map((v) => JSON.stringify(v) ?? ''),
  deep,
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom('{', '{"to":', '[]', '', '\u0000\u0000', '{"__proto__":{"x":1}}', '{"body":"x","body":"y"}')
)
const queryKey = fc.oneof(fc.constantFrom('unread', 'priority', 'limit', 'cursor', 'since', 'until', 'with', 'thread', 'x'), fc.string({ maxLength: 10 }))
const query = fc.dictionary(queryKey.filter((k) => k !== 'wait'), fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), nasty.map(String)), { maxKeys: 4 })
const segment = fc.oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 80 }), fc.constantFrom('1', '0', '-1', '99999999999999999999', 'alice', '..', '%00', 'a'.repeat(300)))
const contentType = fc.constantFrom('application/json', 'text/plain', 'application/json; charset=latin1', 'multipart/form-data', 'application/x-www-form-urlencoded', undefined)
const extraHeader = fc.record({
  'idempotency-key': fc.option(fc.string({ unit: 'binary', maxLength: 300 }), { nil: undefined }),
  'last-event-id': fc.option(fc.string({ maxLength: 80 }), { nil: undefined })
}, { requiredKeys: [] })

t.test('generated hostile requests to every route get a 4xx JSON error or a proper success, never a 5xx', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  await send(app, alice, { to: 'bob', body: 'existing' })
  const tokens = [undefined, `Bearer ${alice.token}`, `Bearer ${bob.token}`, 'Bearer \u0000', 'Basic x', `Bearer ${'z'.repeat(5000)}`]

  // Stored data, without presence columns (any authenticated request counts as activity). A broadcast's copy for an
  // agent is made when that agent next reads (db/messages.ts syncBroadcasts), even by a read that is then refused
  // (GET /threads/<unknown> syncs first): a copy not made yet counts here as the unread row it will become, so
  // making it is no change, while any other row, read mark or message is.
  const snapshot = async () => JSON.stringify([
    await app.db.selectFrom('agents').select(['id', 'name', 'description', 'capabilities', 'metadata', 'token_hash', 'webhook_url', 'deleted_at']).orderBy('id').execute(),
    await app.db.selectFrom('messages').selectAll().orderBy('seq').execute(),
    (await sql<{ message_seq: number, recipient_id: number, read_at: string | null }>`
      select message_seq, recipient_id, read_at from deliveries
      union
      select m.seq, a.id, null from agents a join messages m
        on m.recipients is null and m.seq > a.broadcasts_upto and m.sender_id != a.id
        where a.deleted_at is null
          and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = a.id)
      order by 1, 2`.execute(app.db)).rows
  ])

  let tried = 0
  let rejected = 0
  await fc.assert(fc.asyncProperty(
    fc.constantFrom(...ROUTES), segment, query, rawBody, contentType, fc.constantFrom(...tokens), extraHeader,
    async ([method, path], seg, q, body, type, authorization, extra) => {
      tried++
      const before = await snapshot()
      const url = path.replace(':x', encodeURIComponent(seg)) + (Object.keys(q).length ? `?${new URLSearchParams(q)}` : '')
      const headers: Record<string, string> = {}
      if (authorization) headers.authorization = authorization
      if (type && method !== 'GET') headers['content-type'] = type
      for (const [k, v] of Object.entries(extra)) if (v !== undefined) headers[k] = v
      const res = await app.inject({ method, url, headers, ...(method !== 'GET' && { payload: body }) })
      if (res.statusCode >= 500) throw new Error(`${method} ${url} → ${res.statusCode} ${res.body.slice(0, 300)}`)
      if (res.statusCode >= 400) {
        rejected++
        const error = res.json()
        if (error.statusCode !== res.statusCode || typeof error.message !== 'string') throw new Error(`not a JSON error: ${res.body.slice(0, 200)}`)
        if (await snapshot() !== before) throw new Error(`${method} ${url} was rejected (${res.statusCode}) but changed stored data`)
      }
    }
  ), { numRuns: 2500 })
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'the server is still up')
  t.comment(`fuzz: ${tried} generated requests, ${rejected} rejected with a 4xx JSON error, none answered 5xx`)
  t.ok(tried >= 2500)
})
