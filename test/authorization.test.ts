import t from 'tap'
import { build, register, send } from './helper.js'

const ADMIN = 'admin-token-for-the-matrix'
type Caller = 'none' | 'bad' | 'other' | 'self' | 'admin'
const CALLERS: Caller[] = ['none', 'bad', 'other', 'self', 'admin']

interface Row {
  method: string
  url: string
  body?: unknown
  // The documented answer for each kind of caller. "self" is the agent the resource belongs to, or a party to the message.
  expect: Record<Caller, number>
}

const agentOnly = (ok: number): Record<Caller, number> => ({ none: 401, bad: 401, other: ok, self: ok, admin: 403 })
const anyone = (ok: number): Record<Caller, number> => ({ none: 401, bad: 401, other: ok, self: ok, admin: ok })
const ownerOrAdmin = (ok: number): Record<Caller, number> => ({ none: 401, bad: 401, other: 403, self: ok, admin: ok })

t.test('every route gives every kind of caller the documented answer, and nobody sees another\'s mail', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const adminAuth = { authorization: `Bearer ${ADMIN}` }
  const fresh = async (name: string) => register(app, name, {}, adminAuth)
  const alice = await fresh('alice')
  const bob = await fresh('bob')
  const carol = await fresh('carol')
  const SECRET = 'SECRET-between-alice-and-bob'
  const id = (await send(app, alice, { to: 'bob', body: SECRET, subject: SECRET, data: { s: SECRET } })).json().id
  await send(app, bob, { to: 'alice', body: SECRET, reply_to: id })

  // Deregistration and token rotation change who may call afterwards: each caller gets its own fresh target.
  let n = 0
  const victimTokens = new Map<string, string>()
  const target = async (): Promise<{ name: string, token: string }> => {
    const victim = await fresh(`victim-${n++}`)
    victimTokens.set(victim.name, victim.token)
    return victim
  }

  const rows: Array<(caller: Caller) => Promise<Row>> = [
    async () => ({ method: 'POST', url: '/agents', body: { name: `new-${n++}` }, expect: { none: 401, bad: 401, other: 403, self: 403, admin: 201 } }),
    async () => ({ method: 'GET', url: '/agents', expect: anyone(200) }),
    async () => ({ method: 'GET', url: '/agents/alice', expect: anyone(200) }),
    async () => ({ method: 'PATCH', url: '/agents/alice', body: { description: 'x' }, expect: ownerOrAdmin(200) }),
    async () => ({ method: 'POST', url: '/agents/alice/token', expect: ownerOrAdmin(200) }),
    async () => ({ method: 'DELETE', url: `/agents/${(await target()).name}`, expect: ownerOrAdmin(204) }),
    async () => ({ method: 'POST', url: '/heartbeat', expect: agentOnly(200) }),
    async () => ({ method: 'POST', url: '/send', body: { to: 'alice', body: 'hi' }, expect: agentOnly(201) }),
    async () => ({ method: 'GET', url: '/inbox', expect: agentOnly(200) }),
    async () => ({ method: 'POST', url: '/ack', body: { ids: [id] }, expect: agentOnly(200) }),
    async () => ({ method: 'GET', url: `/messages/${id}`, expect: { none: 401, bad: 401, other: 404, self: 200, admin: 403 } }),
    async () => ({ method: 'GET', url: `/threads/${id}`, expect: { none: 401, bad: 401, other: 404, self: 200, admin: 403 } }),
    async () => ({ method: 'GET', url: `/history?with=alice&thread=${id}`, expect: agentOnly(200) }),
    async () => ({ method: 'GET', url: '/stream', expect: agentOnly(200) }),
    async () => ({ method: 'GET', url: '/stats', expect: { none: 401, bad: 401, other: 403, self: 403, admin: 200 } }),
    async () => ({ method: 'GET', url: '/health', expect: { none: 200, bad: 200, other: 200, self: 200, admin: 200 } })
  ]

  let checked = 0
  for (const makeRow of rows) {
    for (const caller of CALLERS) {
      const row = await makeRow(caller)
      // "self" acts on its own resource: for the fresh deregistration target that is the target itself.
      const victim = row.url.match(/^\/agents\/(victim-\d+)$/)?.[1]
      let token: string | undefined
      if (caller === 'bad') token = 'bus_not-a-real-token'
      if (caller === 'admin') token = ADMIN
      if (caller === 'other') token = carol.token
      if (caller === 'self') {
        const ownedByAlice = row.url.startsWith('/agents/alice') || row.url.startsWith('/messages') || row.url.startsWith('/threads')
        token = victim ? victimTokens.get(victim) : ownedByAlice ? alice.token : bob.token
      }
      const abort = new AbortController()
      const res = await fetch(`${base}${row.url}`, {
        method: row.method,
        signal: abort.signal,
        headers: { ...(token && { authorization: `Bearer ${token}` }), ...(row.body !== undefined && { 'content-type': 'application/json' }) },
        body: row.body === undefined ? undefined : JSON.stringify(row.body)
      })
      const text = res.headers.get('content-type')?.startsWith('text/event-stream') ? '' : await res.text()
      abort.abort()
      t.equal(res.status, row.expect[caller], `${row.method} ${row.url} as ${caller}`)
      if (caller === 'other' || caller === 'admin' || caller === 'none' || caller === 'bad') {
        t.notMatch(text, SECRET, `${row.method} ${row.url} as ${caller} shows no message it is not a party to`)
      }
      if (row.url === '/agents/alice/token' && res.status === 200) alice.token = JSON.parse(text).token
      checked++
    }
  }
  t.equal(checked, rows.length * CALLERS.length)
  t.comment(`authorization matrix: ${rows.length} routes × ${CALLERS.length} kinds of caller = ${checked} checks`)
})
