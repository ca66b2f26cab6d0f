import { CompiledQuery, type QueryExecutor } from 'kysely'
import t from 'tap'
import { ackMessages, syncBroadcasts } from '../../db/messages.js'
import { messageStats } from '../../db/stats.js'
import { archiveRead } from '../../plugins/archiver.js'
import { build, engine, register, send, type Registered, type TestApp } from '../helper.js'

const DAY = 86_400_000
const PRIORITIES = ['normal', 'high', 'urgent'] as const

// The figures counted from every row, in JavaScript: an oracle that shares no SQL with the counters or the migration.
async function recount (app: TestApp) {
  const agents = await app.db.selectFrom('agents').select(['id', 'online', 'deleted_at', 'broadcasts_upto']).execute()
  const live = await app.db.selectFrom('messages').select(['seq', 'sender_id', 'recipients', 'priority']).execute()
  const archived = await app.db.selectFrom('archived_messages').select(['priority']).execute()
  const deliveries = await app.db.selectFrom('deliveries').select(['message_seq', 'recipient_id', 'read_at']).execute()
  const registered = agents.filter((a) => a.deleted_at === null)
  const copies = new Set(deliveries.map((d) => `${d.recipient_id}:${d.message_seq}`))
  let unread = 0
  for (const a of registered) {
    unread += deliveries.filter((d) => d.recipient_id === a.id && d.read_at === null).length
    // Broadcasts not fanned out to it yet.
    unread += live.filter((m) => m.recipients === null && m.seq > a.broadcasts_upto && m.sender_id !== a.id && !copies.has(`${a.id}:${m.seq}`)).length
  }
  const byPriority = { normal: 0, high: 0, urgent: 0 }
  for (const m of [...live, ...archived]) byPriority[PRIORITIES[m.priority]]++
  return {
    agents: { total: registered.length, online: registered.filter((a) => a.online === 1).length },
    messages: { total: live.length + archived.length, unread, archived: archived.length, by_priority: byPriority }
  }
}

async function statsOf (app: TestApp, who: Registered) {
  const res = await app.inject({ url: '/stats', headers: who.auth })
  if (res.statusCode !== 200) throw new Error(`stats: ${res.statusCode} ${res.body}`)
  const { agents, messages } = res.json()
  return { agents, messages }
}

// A small deterministic generator (mulberry32), so a failing walk can be replayed step by step.
function random (seed: number) {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

t.test('the counters equal a full recount through sends, broadcasts, reads, acks, archiving and deregistration', async (t) => {
  const app = await build(t, { BUS_WEBHOOK_ALLOW: '127.0.0.1' })
  const rand = random(14)
  const pick = <T>(items: T[]): T => items[Math.floor(rand() * items.length)]
  const live: Registered[] = []
  let n = 0
  const join = async () => {
    // Every fourth agent has a webhook: its copy of a broadcast is made when the broadcast is sent, not on read.
    const webhook = n % 4 === 3 ? { webhook_url: 'http://127.0.0.1:9/h' } : {}
    live.push(await register(app, `agent-${n++}`, webhook))
  }
  for (let i = 0; i < 5; i++) await join()
  const ids: number[] = []
  const done = new Map<string, number>()

  const steps: Record<string, () => Promise<unknown>> = {
    direct: async () => {
      const from = pick(live)
      const to = [...new Set([pick(live).name, pick(live).name])]
      const res = await send(app, from, { to, body: 'x', priority: pick([...PRIORITIES]) })
      ids.push(res.json().id)
    },
    broadcast: async () => {
      ids.push((await send(app, pick(live), { body: 'all', priority: pick([...PRIORITIES]) })).json().id)
    },
    // A retry of a send stores nothing new; a send to an unknown agent stores nothing at all.
    retry: async () => {
      const from = live[0]
      const key = `k${Math.floor(rand() * 3)}`
      await send(app, from, { to: live[1].name, body: `retry ${key}` }, { 'idempotency-key': key })
      t.equal((await send(app, from, { to: 'nobody-here', body: 'x' })).statusCode, 404)
    },
    // Reading fans broadcasts out: pending copies become rows.
    read: async () => app.inject({ url: '/inbox?limit=5', headers: pick(live).auth }),
    heartbeat: async () => app.inject({ method: 'POST', url: '/heartbeat', headers: pick(live).auth }),
    ack: async () => {
      const who = pick(live)
      const inbox = (await app.inject({ url: '/inbox?unread=true', headers: who.auth })).json().messages as Array<{ id: number }>
      const chosen = inbox.filter(() => rand() < 0.6).map((m) => m.id)
      // Some acked twice, some never this agent's: neither may count.
      await app.inject({ method: 'POST', url: '/ack', headers: who.auth, payload: { ids: [...chosen, ...chosen, pick(ids) ?? 1, 999_999] } })
    },
    // An ack without reading first: the route fans out, then marks read.
    ackBlind: async () => {
      await app.inject({ method: 'POST', url: '/ack', headers: pick(live).auth, payload: { ids: ids.slice(-3) } })
    },
    register: join,
    deregister: async () => {
      if (live.length <= 3) return join()
      const gone = live.splice(Math.floor(rand() * live.length), 1)[0]
      t.equal((await app.inject({ method: 'DELETE', url: `/agents/${gone.name}`, headers: gone.auth })).statusCode, 204)
    },
    archive: async () => archiveRead(app.storage, new Date(Date.now() + 2 * DAY), DAY, 3)
  }
  const names = Object.keys(steps)
  const weights: Record<string, number> = { direct: 6, broadcast: 3, retry: 1, read: 4, heartbeat: 1, ack: 5, ackBlind: 1, register: 1, deregister: 1, archive: 2 }
  const bag = names.flatMap((name) => Array<string>(weights[name]).fill(name))

  for (let step = 0; step < 160; step++) {
    const name = pick(bag)
    await steps[name]()
    done.set(name, (done.get(name) ?? 0) + 1)
    const [counted, expected] = [await statsOf(app, live[0]), await recount(app)]
    if (JSON.stringify(counted) !== JSON.stringify(expected)) {
      t.strictSame(counted, expected, `after step ${step} (${name})`)
      return
    }
  }
  const final = await recount(app)
  t.strictSame(await statsOf(app, live[0]), final, 'equal to the recount after every one of 160 steps')
  // The walk did what it claims: every kind of step ran, and the figures it checked were not trivially zero.
  t.strictSame(names.filter((name) => !done.has(name)), [], 'every kind of step ran')
  t.ok(final.messages.unread > 0 && final.messages.archived > 0 && final.messages.total > final.messages.archived, JSON.stringify(final.messages))
  t.ok(n - live.length >= 2, 'agents were deregistered along the way')
})

t.test('an ack or a fan-out that raced its agent\'s deregistration changes no count', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  const direct = (await send(app, alice, { to: 'bob', body: 'direct' })).json().id
  const broadcast = (await send(app, alice, { body: 'everyone' })).json().id
  // Bob's request was authenticated, then he was deregistered before its write ran.
  const row = await app.db.selectFrom('agents').select(['id', 'broadcasts_upto']).where('name', '=', 'bob').executeTakeFirstOrThrow()
  t.match(await messageStats(app.db), { unread: 2 }, 'his direct copy, and the broadcast copy not made yet')
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: bob.auth })).statusCode, 204)
  t.match(await messageStats(app.db), { unread: 0 }, 'a deregistered agent\'s copies stop counting, made or not')
  // His stream's last wake-up makes no broadcast copy for a deregistered agent; his last ack marks the direct one read.
  await syncBroadcasts(app.db, app.write, row)
  t.equal(Number((await app.db.selectFrom('deliveries').select((eb) => eb.fn.countAll().as('n')).where('recipient_id', '=', row.id).executeTakeFirstOrThrow()).n), 1)
  t.match(await app.write((trx) => ackMessages(trx, row.id, [direct, broadcast], new Date().toISOString())), { acked: 1, not_found: [broadcast] })
  t.match(await messageStats(app.db), { unread: 0, total: 2 })
  t.match((await recount(app)).messages, { unread: 0, total: 2 })
})

t.test('GET /stats reads no message or delivery row: every statement it runs is a counter read or a small index', { skip: engine !== 'sqlite' && 'reads SQLite\'s query plans' }, async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  const bob = await register(app, 'bob')
  for (let i = 0; i < 20; i++) await send(app, alice, i % 2 === 0 ? { to: 'bob', body: `m${i}` } : { body: `b${i}` })
  await app.inject({ url: '/inbox', headers: bob.auth })
  await archiveRead(app.storage, new Date(Date.now() + 2 * DAY), DAY)

  // Every statement the route runs passes through the database's one executor: record them during one call.
  const executor = app.db.getExecutor() as QueryExecutor & { executeQuery: QueryExecutor['executeQuery'] }
  const run = executor.executeQuery.bind(executor)
  const seen: CompiledQuery[] = []
  executor.executeQuery = async (query) => {
    seen.push(query)
    return run(query)
  }
  const res = await app.inject({ url: '/stats', headers: alice.auth })
  executor.executeQuery = run
  t.equal(res.statusCode, 200)
  t.match(res.json().messages, { total: 20, by_priority: { normal: 20 } })

  // The caller's authentication is the same on every route; what is left is what /stats adds.
  const statements = seen.map((q) => q.sql).filter((sql) => !sql.includes('token_hash'))
  t.ok(statements.some((sql) => sql.includes('"counters"')), 'the message figures come from the counters')
  t.ok(statements.some((sql) => sql.includes('"agents"')), 'the agent figures from the agents index')
  for (const query of seen.filter((q) => statements.includes(q.sql))) {
    const plan = (await app.db.executeQuery<{ detail: string }>(CompiledQuery.raw(`explain query plan ${query.sql}`, [...query.parameters])))
      .rows.map((r) => r.detail)
    for (const line of plan.filter((l) => l.startsWith('SCAN'))) {
      // A scan of the counters reads five rows; one of the registered agents reads one small index entry each, and
      // deregistered agents, which only accumulate, are not in it.
      t.ok(line === 'SCAN counters' || line === 'SCAN agents USING COVERING INDEX agents_registered_online', `${query.sql}: ${line}`)
    }
    t.notMatch(plan.join('; '), /\b(messages|deliveries|archived_messages|archived_deliveries|all_messages|all_deliveries)\b/, query.sql)
  }
})
