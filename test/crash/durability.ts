// npm run test:crash: a send answered 201 survives SIGKILL of the bus, and a graceful shutdown under load loses
// nothing. Starts the real server (dist/server.js) again and again on one database: a SQLite file, then (run by
// scripts/test.mjs) a database on a throwaway PostgreSQL.
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import t, { type Test } from 'tap'
import { openStorage } from '../../db/dialects/index.js'
import { engine, testDb } from '../helper.js'
import { startServer } from '../process.js'

const CYCLES = Number(process.env.CRASH_CYCLES ?? 20)
const WORKERS = 16
const json = { 'content-type': 'application/json' }

interface Outcome { answered: Map<string, number>, tried: Set<string>, other: string[] }

// Senders that keep sending until the server goes away; each body is unique so a duplicate would show.
async function load (base: string, tokens: string[], tag: string, outcome: Outcome, stop: AbortSignal): Promise<void> {
  await Promise.all(Array.from({ length: WORKERS }, async (_, w) => {
    for (let n = 0; !stop.aborted; n++) {
      const body = `${tag}-w${w}-${n}`
      outcome.tried.add(body)
      try {
        const res = await fetch(`${base}/send`, {
          method: 'POST',
          headers: { ...json, authorization: `Bearer ${tokens[w % tokens.length]}` },
          body: JSON.stringify({ to: w % 3 === 0 ? undefined : ['sink', 'sink2'].slice(0, 1 + (w % 2)), body })
        })
        if (res.status === 201) outcome.answered.set(body, (await res.json()).id)
        else if (res.status !== 503) outcome.other.push(`${res.status} ${await res.text()}`)
        else await res.text()
      } catch {
        return // the server is gone: this request may or may not have been stored, but was never answered 201
      }
    }
  }))
}

async function verify (t: Test, url: string, outcome: Outcome): Promise<void> {
  const storage = await openStorage({ url, sync: 'normal' })
  if (engine === 'sqlite') t.equal((await sql<{ integrity_check: string }>`pragma integrity_check`.execute(storage.db)).rows[0].integrity_check, 'ok', 'integrity_check passes')
  const rows = await storage.db.selectFrom('messages').select(['seq', 'body', 'recipients']).execute()
  const deliveries = new Map((await storage.db.selectFrom('deliveries').select((eb) => ['message_seq', eb.fn.countAll<number>().as('n')])
    .groupBy('message_seq').execute()).map((r) => [r.message_seq, Number(r.n)]))
  await storage.close()
  const byBody = new Map<string, number[]>()
  for (const row of rows) byBody.set(row.body, [...(byBody.get(row.body) ?? []), row.seq])
  let missing = 0
  let wrongId = 0
  for (const [body, id] of outcome.answered) {
    const stored = byBody.get(body)
    if (!stored) missing++
    else if (stored[0] !== id) wrongId++
  }
  t.equal(missing, 0, `every one of ${outcome.answered.size} sends answered 201 is stored`)
  t.equal(wrongId, 0, 'under the id it was answered with')
  t.equal([...byBody.values()].filter((ids) => ids.length > 1).length, 0, 'nothing is stored twice')
  t.equal(rows.filter((r) => !outcome.tried.has(r.body)).length, 0, 'nothing was stored that was not sent')
  // A broadcast is one row until its recipients read (no one reads here); a direct message has a row per recipient.
  const partial = rows.filter((r) => deliveries.get(r.seq) !== (r.recipients === null ? undefined : JSON.parse(r.recipients).length))
  t.equal(partial.length, 0, 'no message is half-written: each direct message has all its deliveries')
}

async function setup (t: Test, env: Record<string, string>) {
  const server = startServer(env)
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.url
  const tokens: string[] = []
  for (const name of ['sink', 'sink2', 'a1', 'a2', 'a3', 'a4']) {
    const res = await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify({ name }) })
    if (name.startsWith('a')) tokens.push((await res.json()).token)
  }
  return { server, tokens }
}

t.test(`${CYCLES} SIGKILLs under concurrent sends lose no acknowledged message`, async (t) => {
  const path = await testDb(t)
  const env = { BUS_DB: path }
  const outcome: Outcome = { answered: new Map(), tried: new Set(), other: [] }
  let { server, tokens } = await setup(t, env)
  // Reads the variable at teardown, so it stops whichever cycle's server is running if the test fails mid-way.
  t.teardown(() => server.child.kill('SIGKILL'))
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    if (cycle > 0) server = startServer(env)
    const base = await server.url
    const stop = new AbortController()
    const answeredBefore = outcome.answered.size
    const running = load(base, tokens, `c${cycle}`, outcome, stop.signal)
    // Killed while sends are being answered, not before the first (a busy machine, a node's first connections).
    for (let waited = 0; outcome.answered.size === answeredBefore && waited < 10_000; waited += 10) await sleep(10)
    await sleep(150 + Math.random() * 450)
    server.child.kill('SIGKILL')
    await once(server.child, 'exit')
    stop.abort()
    await running
  }
  t.equal(outcome.other.length, 0, `no answer but 201 or 503 (${outcome.other.slice(0, 3).join('; ')})`)
  t.ok(outcome.answered.size >= CYCLES, `${outcome.answered.size} sends answered 201 across ${CYCLES} crashes (each cycle is killed after its first)`)
  await verify(t, path, outcome)
  t.comment(`${engine}: crash cycles: ${CYCLES}, sends answered 201 and verified: ${outcome.answered.size}, sends tried: ${outcome.tried.size}`)
})

t.test('a graceful shutdown under load completes or refuses every request, losing none', async (t) => {
  const path = await testDb(t)
  const { server, tokens } = await setup(t, { BUS_DB: path })
  const outcome: Outcome = { answered: new Map(), tried: new Set(), other: [] }
  const stop = new AbortController()
  const running = load(await server.url, tokens, 'g', outcome, stop.signal)
  await sleep(500)
  server.child.kill('SIGTERM')
  const [code] = await once(server.child, 'exit')
  stop.abort()
  await running
  t.equal(code, 0, 'exited cleanly')
  t.equal(outcome.other.length, 0, `no answer but 201 or 503 (${outcome.other.slice(0, 3).join('; ')})`)
  await verify(t, path, outcome)
  t.comment(`${engine}: graceful shutdown: ${outcome.answered.size} sends answered 201 and verified`)
})
