// npm run test:crash: a send answered 201 survives SIGKILL of the bus, and a graceful shutdown under load loses
// nothing. Starts the real server (dist/server.js) again and again on one database file.
import { once } from 'node:events'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import SQLite from 'better-sqlite3'
import t, { type Test } from 'tap'
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

function verify (t: Test, path: string, outcome: Outcome): void {
  const db = new SQLite(path, { readonly: true })
  t.equal(db.pragma('integrity_check', { simple: true }), 'ok', 'integrity_check passes')
  const rows = db.prepare('select seq, body, recipients from messages').all() as Array<{ seq: number, body: string, recipients: string | null }>
  const deliveries = new Map((db.prepare('select message_seq, count(*) n from deliveries group by message_seq').all() as Array<{ message_seq: number, n: number }>)
    .map((r) => [r.message_seq, r.n]))
  db.close()
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
  const path = join(t.testdir(), 'bus.db')
  const env = { BUS_DB: path }
  const outcome: Outcome = { answered: new Map(), tried: new Set(), other: [] }
  let { server, tokens } = await setup(t, env)
  // Reads the variable at teardown, so it stops whichever cycle's server is running if the test fails mid-way.
  t.teardown(() => server.child.kill('SIGKILL'))
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    if (cycle > 0) server = startServer(env)
    const base = await server.url
    const stop = new AbortController()
    const running = load(base, tokens, `c${cycle}`, outcome, stop.signal)
    await sleep(150 + Math.random() * 450)
    server.child.kill('SIGKILL')
    await once(server.child, 'exit')
    stop.abort()
    await running
  }
  t.equal(outcome.other.length, 0, `no answer but 201 or 503 (${outcome.other.slice(0, 3).join('; ')})`)
  t.ok(outcome.answered.size > CYCLES * 10, `${outcome.answered.size} sends answered 201 across ${CYCLES} crashes`)
  verify(t, path, outcome)
  t.comment(`crash cycles: ${CYCLES}, sends answered 201 and verified: ${outcome.answered.size}, sends tried: ${outcome.tried.size}`)
})

t.test('a graceful shutdown under load completes or refuses every request, losing none', async (t) => {
  const path = join(t.testdir(), 'bus.db')
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
  verify(t, path, outcome)
  t.comment(`graceful shutdown: ${outcome.answered.size} sends answered 201 and verified`)
})
