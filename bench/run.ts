// npm run bench [-- --quick]: the real server (dist/server.js) under load from a separate process on loopback,
// every figure beside the same work done by a bare Fastify route with no storage (bench/ceiling.ts).
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { request as httpRequest, Agent } from 'node:http'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import SQLite from 'better-sqlite3'
import autocannon from 'autocannon'
import pg from 'pg'
import { openPostgres } from '../db/dialects/postgres.js'
import { PRIORITIES, sendMessage } from '../db/messages.js'
import type { Cluster } from '../scripts/pg-cluster.mjs'
import { monotonicMs, rssBytes } from './proc.js'
import { createQueue, drain, fillQueue, paced, subscribeAll } from './work.js'

const quick = process.argv.includes('--quick')
// --only send|inbox|fanout|work|metrics: one group of workloads (and the ceiling), for working on one of them.
const onlyAt = process.argv.indexOf('--only')
const only = onlyAt < 0 ? undefined : process.argv[onlyAt + 1]
const runs = (group: 'send' | 'inbox' | 'fanout' | 'work' | 'metrics'): boolean => only === undefined || only === group
// --engine sqlite|postgresql: one engine's workloads (and the ceiling); both by default.
const engineAt = process.argv.indexOf('--engine')
const engine = engineAt < 0 ? undefined : process.argv[engineAt + 1]
const onEngine = (name: 'sqlite' | 'postgresql'): boolean => engine === undefined || engine === name
const DURATION_S = quick ? 5 : 10
const WARMUP_S = quick ? 1 : 3
// Push latency is measured at this steady rate (well below what any configuration sends) and again flat out.
const PUSH_RATE = 100
const CONNECTIONS = 64
// Agents whose first read after the broadcast run is timed.
const READERS = 10
const BODY = 'benchmark message body '.repeat(4)
const work = mkdtempSync(join(tmpdir(), 'agent-bus-bench-'))
const hasWrk = spawnSync('wrk', ['--version']).error === undefined
const json = { 'content-type': 'application/json' }
// The topic and the work queue of the work group.
const TOPIC = 'bench'
const QUEUE = 'bench'

const mb = (bytes: number): number => Math.round(bytes / 1048576)

async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  return port
}

interface Running { child: ChildProcess, base: string }

async function start (script: string, env: Record<string, string> = {}): Promise<Running> {
  const port = await freePort()
  // stdin is a pipe for the preload that stops the server if the bench dies without stopping it (killed, crashed).
  const child = spawn(process.execPath, ['--import', './test/fixtures/exit-with-parent.mjs', script], {
    // Every load generator here connects from 127.0.0.1, as one client: the per-address connection cap is for
    // strangers, and 1,000 stream readers would hit it.
    env: { ...process.env, PORT: String(port), LOG_LEVEL: 'warn', BUS_MAX_CONNECTIONS_PER_ADDRESS: '0', ...env }, stdio: ['pipe', 'ignore', 'inherit']
  })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(`${base}/health`)).ok) return { child, base } } catch { /* not listening yet */ }
    await sleep(50)
  }
  throw new Error(`${script} did not start`)
}

async function stop ({ child }: Running): Promise<void> {
  child.kill('SIGTERM')
  if (child.exitCode === null) await once(child, 'exit')
}

interface Load { rps: number, p50: number, p99: number, requests: number, errors: number }
// What each request of a load run does: a direct send, an inbox page, a broadcast, a publish to TOPIC.
type Kind = 'send' | 'inbox' | 'broadcast' | 'publish'

const inboxPathFor = (limit: number): string => `/inbox?unread=true&limit=${limit}`
// The value at fraction p of sorted values.
const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

// One load run: against several nodes (PostgreSQL), one generator per node at once, the connections split between
// them; the throughput is their sum, the latencies those of the slowest node.
async function load (target: string | string[], kind: Kind, tokens: string[], names: string[],
  seconds: number, inboxLimit: number): Promise<Load> {
  const bases = Array.isArray(target) ? target : [target]
  if (bases.length === 1) return loadOne(bases[0], kind, tokens, names, seconds, inboxLimit, CONNECTIONS, 2)
  const share = (i: number): number => Math.floor(CONNECTIONS * (i + 1) / bases.length) - Math.floor(CONNECTIONS * i / bases.length)
  const parts = await Promise.all(bases.map((base, i) => loadOne(base, kind, tokens, names, seconds, inboxLimit, share(i), 1)))
  const sum = (f: (l: Load) => number): number => parts.reduce((a, l) => a + f(l), 0)
  const max = (f: (l: Load) => number): number => Math.max(...parts.map(f))
  return { rps: sum((l) => l.rps), p50: max((l) => l.p50), p99: max((l) => l.p99), requests: sum((l) => l.requests), errors: sum((l) => l.errors) }
}

let luaFiles = 0

// One load run from a separate process: wrk when installed (lighter), else autocannon. Each request picks a random
// sender token and, for sends, a random recipient.
async function loadOne (base: string, kind: Kind, tokens: string[], names: string[], seconds: number,
  inboxLimit: number, connections: number, threads: number): Promise<Load> {
  const inboxPath = inboxPathFor(inboxLimit)
  if (hasWrk) {
    const lua = join(work, `${kind}-${luaFiles++}.lua`)
    writeFileSync(lua, `
local tokens = {${tokens.map((t) => `"${t}"`).join(',')}}
local names = {${names.map((n) => `"${n}"`).join(',')}}
local kind = "${kind}"
local counter = 0
function setup(thread) counter = counter + 1; thread:set("seed", counter) end
function init(args) math.randomseed(os.time() * 1000 + seed) end
function request()
  local i = math.random(#tokens)
  local headers = { ["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json" }
  if kind == "inbox" then return wrk.format("GET", "${inboxPath}", headers) end
  if kind == "broadcast" then return wrk.format("POST", "/send", headers, '{"body":"${BODY}"}') end
  if kind == "publish" then return wrk.format("POST", "/send", headers, '{"topic":"${TOPIC}","body":"${BODY}"}') end
  local j = math.random(#names)
  if j == i then j = (j % #names) + 1 end
  return wrk.format("POST", "/send", headers, '{"to":"' .. names[j] .. '","body":"${BODY}"}')
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"p50":%d,"p99":%d,"errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout + e.status))
end`)
    const run = spawn('wrk', [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', lua, base], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    run.stdout.on('data', (d) => { out += d })
    await once(run, 'exit')
    const result = JSON.parse(/RESULT (\{.*\})/.exec(out)?.[1] ?? 'null')
    if (!result) throw new Error(`wrk: ${out}`)
    return { rps: result.requests / (result.duration_us / 1e6), p50: result.p50 / 1000, p99: result.p99 / 1000, requests: result.requests, errors: result.errors }
  }
  return autocannonLoad(base, kind, tokens, names, seconds, inboxPath, connections)
}

async function autocannonLoad (base: string, kind: Kind, tokens: string[], names: string[],
  seconds: number, inboxPath: string, connections: number): Promise<Load> {
  let n = 0
  const result = await autocannon({
    url: base, connections, duration: seconds,
    requests: [{
      setupRequest: (req: autocannon.Request) => {
        const i = Math.floor(Math.random() * tokens.length)
        const to = names[(i + 1 + (n++ % (names.length - 1))) % names.length]
        const headers = { authorization: `Bearer ${tokens[i]}`, 'content-type': 'application/json' }
        if (kind === 'inbox') return { ...req, method: 'GET', path: inboxPath, headers }
        return { ...req, method: 'POST', path: '/send', headers, body: JSON.stringify(kind === 'broadcast' ? { body: BODY } : kind === 'publish' ? { topic: TOPIC, body: BODY } : { to, body: BODY }) }
      }
    }]
  })
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total, errors: result.errors + result.non2xx }
}

async function measure (base: string | string[], kind: Kind, tokens: string[], names: string[], pid?: number,
  inboxLimit = 50) {
  await load(base, kind, tokens, names, WARMUP_S, inboxLimit)
  let rssUnderLoad = 0
  const sampler = pid === undefined ? undefined : setInterval(() => { rssUnderLoad = Math.max(rssUnderLoad, rssBytes(pid)) }, 250)
  const result = await load(base, kind, tokens, names, DURATION_S, inboxLimit)
  clearInterval(sampler)
  return { ...result, rssUnderLoad }
}

// Latency at half the rate the server sustained at full load: what an agent waits on a busy bus that keeps up,
// rather than in the queue a saturating load builds (at 64 connections the p50 there is 64 / throughput). An open
// loop: requests are due at an even pace whatever the answers do, and each latency counts from when its request was
// due, so a stall delays every request due during it (no coordinated omission). autocannon's rate option sends each
// second's quota in a burst, and wrk has none, hence this small generator.
async function atHalfLoad (base: string, kind: 'send' | 'inbox', tokens: string[], names: string[], peakRps: number, inboxLimit = 50) {
  const rate = Math.round(peakRps / 2)
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS })
  const latencies: number[] = []
  let errors = 0
  const one = (due: number): Promise<void> => new Promise((resolve) => {
    const i = Math.floor(Math.random() * tokens.length)
    const body = kind === 'send' ? JSON.stringify({ to: names[(i + 1 + Math.floor(Math.random() * (names.length - 1))) % names.length], body: BODY }) : undefined
    const req = httpRequest(`${base}${kind === 'send' ? '/send' : inboxPathFor(inboxLimit)}`, {
      agent, method: kind === 'send' ? 'POST' : 'GET', headers: { ...json, authorization: `Bearer ${tokens[i]}` }
    }, (res) => {
      res.resume()
      res.on('end', () => {
        if (res.statusCode !== undefined && res.statusCode >= 400) errors++
        latencies.push(performance.now() - due)
        resolve()
      })
    })
    req.on('error', () => { errors++; resolve() })
    req.end(body)
  })
  const inFlight: Array<Promise<void>> = []
  const began = performance.now()
  for (let sent = 0; performance.now() - began < DURATION_S * 1000;) {
    const due = Math.floor((performance.now() - began) * rate / 1000)
    for (; sent < due; sent++) inFlight.push(one(began + sent * 1000 / rate))
    await sleep(1)
  }
  await Promise.all(inFlight)
  agent.destroy()
  latencies.sort((a, b) => a - b)
  return { rate, rps: latencies.length / DURATION_S, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), errors }
}

async function registerAgents (base: string, count: number): Promise<{ tokens: string[], names: string[] }> {
  const tokens: string[] = []
  const names: string[] = []
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, count - i) }, async (_, k) => {
      const name = `agent-${i + k}`
      const res = await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify({ name }) })
      return { name, token: (await res.json()).token as string }
    }))
    for (const a of batch) { names.push(a.name); tokens.push(a.token) }
  }
  return { tokens, names }
}

// Fills the database directly (the bus stopped): `count` direct messages between random agents, all unread.
function seed (path: string, count: number): void {
  const db = new SQLite(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = OFF')
  const ids = (db.prepare('select id from agents').all() as Array<{ id: number }>).map((r) => r.id)
  const names = new Map((db.prepare('select id, name from agents').all() as Array<{ id: number, name: string }>).map((r) => [r.id, r.name]))
  const insertMessage = db.prepare(`insert into messages (sender_id, recipients, subject, body, data, priority, reply_to, thread_id, created_at)
    values (?, ?, null, ?, null, ?, null, 0, ?) returning seq`)
  const setThread = db.prepare('update messages set thread_id = seq where seq = ?')
  const insertDelivery = db.prepare('insert into deliveries (message_seq, recipient_id, priority) values (?, ?, ?)')
  const now = new Date().toISOString()
  const fill = db.transaction((n: number) => {
    for (let i = 0; i < n; i++) {
      const from = ids[i % ids.length]
      const to = ids[(i * 7 + 1) % ids.length] === from ? ids[(i + 1) % ids.length] : ids[(i * 7 + 1) % ids.length]
      const priority = i % 10 === 0 ? 2 : i % 5 === 0 ? 1 : 0
      const { seq } = insertMessage.get(from, JSON.stringify([names.get(to)]), BODY, priority, now) as { seq: number }
      setThread.run(seq)
      insertDelivery.run(seq, to, priority)
    }
  })
  for (let done = 0; done < count; done += 100_000) fill(Math.min(100_000, count - done))
  db.pragma('wal_checkpoint(TRUNCATE)')
  db.close()
}

// Time from a send's 201 at its sender to the event at the recipient's open stream, with `streams` streams open.
// The streams are read by another process (bench/readers.ts), as they would be by other agents: read in this one,
// their thousand sockets delayed the senders' own clock readings. Both sides read the machine's monotonic clock. An
// event often arrives before its sender has read the 201 (the bus publishes just before it answers): those count 0.
// On PostgreSQL the streams are open on one node and the sends go to others (sendBases), so each event crosses nodes.
// With `rate`, the ten senders share a fixed schedule of that many messages a second (open loop): the latency of one
// event on a bus that is not saturated. Without, each sends as fast as its 201s come back.
async function push (base: string, tokens: string[], names: string[], pid: number, sendBases: string[] = [base], rate?: number) {
  const readers = fork('dist/bench/readers.js', [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const message = (): Promise<unknown> => new Promise((resolve, reject) => {
    readers.once('message', resolve)
    readers.once('exit', (code) => reject(new Error(`bench/readers exited with ${code}`)))
  })
  readers.send({ base, tokens })
  await message()
  await sleep(500)
  const rssStreams = rssBytes(pid)
  const sentAt = new Map<number, number>()
  // Ten senders to random open streams: first a warm-up, as in every other measurement here (a node's first
  // requests compile queries and JIT the send path, and the streams' own first reads may still be under way), then
  // the measured run.
  const run = async (seconds: number, record: boolean): Promise<void> => {
    const began = performance.now()
    const deadline = began + seconds * 1000
    await Promise.all(Array.from({ length: 10 }, async (_, s) => {
      for (let k = 0; performance.now() < deadline; k++) {
        if (rate !== undefined) {
          const due = began + (k * 10 + s) * 1000 / rate
          if (due >= deadline) break
          await sleep(Math.max(0, due - performance.now()))
        }
        const to = names[Math.floor(Math.random() * names.length)]
        const res = await fetch(`${sendBases[s % sendBases.length]}/send`, { method: 'POST', headers: { ...json, authorization: `Bearer ${tokens[s]}` }, body: JSON.stringify({ to, body: BODY }) })
        const at = monotonicMs()
        const { id } = await res.json() as { id: number }
        if (record) sentAt.set(id, at)
      }
    }))
  }
  await run(WARMUP_S, false)
  await run(DURATION_S, true)
  await sleep(1000)
  readers.send('done')
  const arrived = new Map(await message() as Array<[number, number]>)
  const latencies = [...sentAt].map(([id, at]) => Math.max(0, (arrived.get(id) ?? Infinity) - at)).sort((a, b) => a - b)
  const pct = (p: number): number => percentile(latencies, p)
  const beforeAnswer = latencies.filter((l) => l === 0).length / latencies.length
  return { streams: tokens.length, messages: latencies.length, lost: latencies.filter((l) => l === Infinity).length, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), beforeAnswer, rssStreams }
}

// ---- PostgreSQL: nodes on one database of a throwaway server -----------------------------------------------------

type PgCluster = typeof import('../scripts/pg-cluster.mjs')
// Compiled, this file is dist/bench/run.js; the script is plain JS at the repo root.
const loadPgCluster = async (): Promise<PgCluster> => await import(new URL('../../scripts/pg-cluster.mjs', import.meta.url).href) as PgCluster

const NODE_COUNTS = [1, 2, 3] as const
const nodesLabel = (n: number): string => `${n} node${n === 1 ? '' : 's'}`

// `count` bus processes on the database at url, started one after the other (the first one migrates).
async function startNodes (count: number, url: string, script = 'dist/server.js'): Promise<Running[]> {
  const nodes: Running[] = []
  try {
    for (let i = 0; i < count; i++) {
      const node = await start(script, { BUS_DB: url })
      nodes.push(node)
      await sleep(100)
      if (node.child.exitCode !== null) throw new Error(`${script} exited with ${node.child.exitCode}`)
    }
  } catch (err) {
    await stopAll(nodes)
    throw err
  }
  return nodes
}

const stopAll = async (nodes: Running[]): Promise<void> => { await Promise.all(nodes.map(stop)) }

async function pgQuery<T> (url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(text)).rows as T[]
  } finally {
    await client.end()
  }
}

// The whole machine's CPU in use (all cores), from /proc/stat: call it at the start, and what it returns at the end.
function cpuBusy (): () => number {
  const read = (): number[] => readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number)
  const before = read()
  return () => {
    const after = read()
    const total = after.reduce((a, v, i) => a + v - (before[i] ?? 0), 0)
    const idle = after[3] + after[4] - before[3] - before[4]
    return total > 0 ? 1 - idle / total : 0
  }
}

// What the database's connections from the bus are doing, sampled every 100 ms while a run lasts: the average
// number of them in each state, and the deadlocks the server broke meanwhile (each one a 1 s wait, deadlock_timeout,
// and a 503 the client retries).
async function watchPostgres (url: string): Promise<() => Promise<{ backends: Record<string, number>, deadlocks: number }>> {
  const client = new pg.Client({ connectionString: url, application_name: 'agent-bus-bench' })
  await client.connect()
  const deadlocks = async (): Promise<number> => Number((await client.query('select deadlocks from pg_stat_database where datname = current_database()')).rows[0].deadlocks)
  const first = await deadlocks()
  const counts: Record<string, number> = {}
  let samples = 0
  let running = true
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query<{ state: string, type: string | null, event: string | null, query: string }>(`select state,
        wait_event_type as type, wait_event as event, query from pg_stat_activity
        where datname = current_database() and application_name = 'agent-bus' and state <> 'idle'`)
      for (const { state, type, event, query } of rows) {
        // A row lock is named by the statement that waits for it: `update "counters"`, `update "agents"`.
        const statement = /^\s*(update|insert into|delete from)\s+"?(\w+)"?/i.exec(query)
        const what = state === 'idle in transaction' ? 'transaction open, waiting for its node'
          : type === null ? 'running'
            : type === 'Lock' && event === 'advisory' ? 'waiting for the order lock'
              : type === 'Lock' && (event === 'transactionid' || event === 'tuple')
                ? `waiting for a row lock${statement === null ? '' : ` (${statement[1].toLowerCase()} ${statement[2]})`}`
                : type === 'IO' && /^WAL/.test(event ?? '') ? 'flushing WAL' : `${type}:${event}`
        counts[what] = (counts[what] ?? 0) + 1
      }
      samples++
      await sleep(100)
    }
  })()
  return async () => {
    running = false
    await loop
    const result = { backends: Object.fromEntries(Object.entries(counts).map(([k, v]): [string, number] => [k, v / Math.max(1, samples)]).sort((a, b) => b[1] - a[1])), deadlocks: await deadlocks() - first }
    await client.end()
    return result
  }
}

// measure() on PostgreSQL nodes, with the machine's CPU and the database's connections watched during the timed run.
async function measurePostgres (bases: string[], kind: Kind, tokens: string[], names: string[], url: string,
  inboxLimit = 50) {
  await load(bases, kind, tokens, names, WARMUP_S, inboxLimit)
  const cpu = cpuBusy()
  const stopWatching = await watchPostgres(url)
  const result = await load(bases, kind, tokens, names, DURATION_S, inboxLimit)
  const cpuBusyShare = cpu()
  return { ...result, cpuBusy: cpuBusyShare, ...await stopWatching() }
}

// The table's words for what measurePostgres saw: CPU, the states that held connections (≥ 0.1 on average), deadlocks.
const watched = (m: { cpuBusy: number, backends: Record<string, number>, deadlocks: number }): string =>
  `; CPU ${fmt(m.cpuBusy * 100)}% busy; connections: ` +
  (Object.entries(m.backends).filter(([, v]) => v >= 0.1).map(([k, v]) => `${fmt(v, 1)} ${k}`).join(', ') || 'none busy') +
  (m.deadlocks > 0 ? `; ${m.deadlocks} deadlocks` : '')

// `count` unread direct messages between the registered agents, stored by the bus's own sendMessage from this
// process (no HTTP): many writes in flight, so group commit stores them a few hundred per transaction.
async function seedPostgres (url: string, count: number): Promise<void> {
  const storage = await openPostgres({ url })
  try {
    const agents = await storage.db.selectFrom('agents').select(['id', 'name']).orderBy('id').execute()
    const now = new Date().toISOString()
    for (let done = 0; done < count; done += 1000) {
      await Promise.all(Array.from({ length: Math.min(1000, count - done) }, async (_, k) => {
        const i = done + k
        const from = agents[i % agents.length]
        let to = agents[(i * 7 + 1) % agents.length]
        if (to.id === from.id) to = agents[(i + 1) % agents.length]
        const priority = PRIORITIES[i % 10 === 0 ? 2 : i % 5 === 0 ? 1 : 0]
        const outcome = await storage.write((trx) => sendMessage(trx, { senderId: from.id, senderName: from.name, to: [to.name], body: BODY, priority, now }), { ordered: true })
        if (!outcome.ok) throw new Error(`seeding PostgreSQL: ${JSON.stringify(outcome)}`)
      }))
    }
  } finally {
    await storage.close()
  }
}

// ---- Topics and work queues (--only work) -------------------------------------------------------------------------

// Messages put on the queue before the consumers start, and the consumers that drain it.
const QUEUE_FILL = 5_000
const CONSUMERS = 8

// One engine's bus for the work group: a fresh database and one server (one node on PostgreSQL).
interface WorkBus {
  base: string
  // measure() on SQLite, measurePostgres() on PostgreSQL, with the table's words for what the latter watched.
  measure: (kind: Kind, tokens: string[], names: string[]) => Promise<Load & { notes: string }>
  // A run of the bench's own clients, with the same words (PostgreSQL: CPU, connections, deadlocks).
  around: <T>(run: () => Promise<T>) => Promise<T & { notes: string }>
  // Stored messages matching a condition.
  count: (where: string) => Promise<number>
  stop: () => Promise<void>
}

interface WorkEngine {
  // A row's label on this engine, and the words for the engine in a target's row.
  label: (what: string) => string
  target: string
  fresh: (name: string) => Promise<WorkBus>
  // The rows to compare with, when this run measured them (the fanout and send groups); measured here when not.
  broadcast?: { rps: number, catchUp?: { copiesPerS: number } }
  send?: { rps: number }
  sendRow: string
}

// The first inbox read of agents that missed every broadcast or publish of a run: the copies made at read.
async function firstReads (base: string, tokens: string[], stored: number) {
  const waits: number[] = []
  for (const token of tokens) {
    const began = performance.now()
    const res = await fetch(`${base}/inbox?limit=1`, { headers: { authorization: `Bearer ${token}` } })
    if (!res.ok) throw new Error(`inbox after broadcasts: ${res.status}`)
    await res.arrayBuffer()
    waits.push(performance.now() - began)
  }
  const msPerReader = waits.reduce((a, b) => a + b) / tokens.length
  return { broadcasts: stored, readers: tokens.length, msPerReader, copiesPerS: stored / (msPerReader / 1000) }
}

// 7. Topics and work queues, on one engine: a publish to a topic every one of 1,000 agents subscribes to, beside a
// broadcast to 1,000 agents (the same 100 senders and connections: the issue's target is that a topic publishes at
// least as fast); then a queue filled with QUEUE_FILL messages and drained by CONSUMERS agents, each claiming up to
// 10 (waiting up to 1 s) and acking them, beside a direct send; then enqueueing and draining at once, at half the
// drain rate, for the latency of a queue that keeps up.
async function workGroup (e: WorkEngine): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  const latency = (l: Load): string => `p50 ${fmt(l.p50, 2)} ms, p99 ${fmt(l.p99, 2)} ms, errors ${l.errors}`

  let broadcast = e.broadcast
  let broadcastFrom = 'the broadcast row'
  if (broadcast === undefined) {
    const bus = await e.fresh('broadcast')
    const { tokens, names } = await registerAgents(bus.base, 1000)
    const m = await bus.measure('broadcast', tokens.slice(0, 100), names)
    const catchUp = await firstReads(bus.base, tokens.slice(100, 100 + READERS), await bus.count('recipients is null'))
    await bus.stop()
    broadcast = { ...m, catchUp }
    broadcastFrom = 'the broadcast measured here'
    out.broadcast = broadcast
    rows.push([e.label('work baseline: broadcast to 1,000 agents (fanout group not run)'), `${fmt(m.rps)} broadcasts/s`,
      `${latency(m)}; first read after ${fmt(catchUp.broadcasts)} broadcasts: ${fmt(catchUp.msPerReader)} ms${m.notes}`])
  }

  {
    // Every agent subscribes, the senders too, so that each publish has 999 recipients as a broadcast has.
    const bus = await e.fresh('topic')
    const { tokens, names } = await registerAgents(bus.base, 1000)
    await subscribeAll(bus.base, tokens, TOPIC)
    const publish = await bus.measure('publish', tokens.slice(0, 100), names)
    const catchUp = await firstReads(bus.base, tokens.slice(100, 100 + READERS), await bus.count(`topic = '${TOPIC}'`))
    await bus.stop()
    const r = publish.rps / broadcast.rps
    out.publish = { ...publish, deliveriesPerS: publish.rps * 999, ofBroadcast: r, catchUp, broadcastFrom }
    out.target = { value: r, target: 1, met: r >= 1, against: broadcastFrom }
    rows.push([e.label('topic publish, 1,000 subscribers'), `${fmt(publish.rps)} publishes/s (${ratio(publish.rps, broadcast.rps)} of broadcast to 1,000 agents)`,
      `${fmt(publish.rps * 999)} deliveries/s made available, ${latency(publish)}${publish.notes}`])
    rows.push([e.label(`topic copies made at read (${READERS} subscribers)`), `${fmt(catchUp.copiesPerS)} copies/s` +
      (broadcast.catchUp === undefined ? '' : ` (${ratio(catchUp.copiesPerS, broadcast.catchUp.copiesPerS)} of broadcast's)`),
      `first read after ${fmt(catchUp.broadcasts)} publishes: ${fmt(catchUp.msPerReader)} ms`])
    rows.push([`target: ${e.target}topic publish (1,000 subscribers) ≥ broadcast to 1,000 agents`, `${ratio(publish.rps, broadcast.rps)}: ${r >= 1 ? 'met' : 'missed'}`,
      `against ${broadcastFrom}`])
  }

  let send = e.send
  let sendFrom = e.sendRow
  if (send === undefined) {
    const bus = await e.fresh('send')
    const { tokens, names } = await registerAgents(bus.base, 100)
    const m = await bus.measure('send', tokens, names)
    await bus.stop()
    send = m
    sendFrom = 'the send measured here'
    out.send = m
    rows.push([e.label('work baseline: send (send group not run)'), `${fmt(m.rps)} req/s`, `${latency(m)}${m.notes}`])
  }

  {
    // 100 agents, as for sends: the first CONSUMERS consume, all of them send.
    const bus = await e.fresh('queue')
    const { tokens } = await registerAgents(bus.base, 100)
    const consumers = tokens.slice(0, CONSUMERS)
    await createQueue(bus.base, tokens[0], QUEUE)
    const fill = await bus.around(() => fillQueue(bus.base, tokens, QUEUE, QUEUE_FILL, BODY, CONNECTIONS))
    const drained = await bus.around(() => drain(bus.base, consumers, QUEUE, QUEUE_FILL, 300))
    // Half the slower of filling and draining: each message is both sent and claimed, on one writer.
    const rate = Math.max(1, Math.round(Math.min(fill.perS, drained.messagesPerS) / 2))
    const both = await bus.around(() => paced(bus.base, tokens.slice(CONSUMERS), consumers, QUEUE, rate, DURATION_S, BODY))
    await bus.stop()
    const ofSend = drained.messagesPerS / send.rps
    out.queue = { fill, drain: { ...drained, ofSend, sendFrom }, paced: both }
    rows.push([e.label(`queue fill: ${fmt(QUEUE_FILL)} messages, ${CONNECTIONS} sends at a time from the bench process`), `${fmt(fill.perS)} messages/s`,
      `errors ${fill.errors}${fill.notes}`])
    rows.push([e.label(`queue drain: ${CONSUMERS} consumers, claim 10 (wait_s 1) + ack, ${fmt(QUEUE_FILL)} prefilled`),
      `${fmt(drained.messagesPerS)} messages/s (${ratio(drained.messagesPerS, send.rps)} of ${sendFrom})`,
      `${fmt(drained.claimsPerS)} claims/s, ${fmt(drained.acksPerS)} acks/s, ${fmt(drained.perClaim, 1)} per claim; created_at → ack ` +
      `p50 ${fmt(drained.latency.p50)} ms, p99 ${fmt(drained.latency.p99)} ms (the wait in the backlog); ${drained.missing} not drained, errors ${drained.errors}${drained.notes}`])
    rows.push([e.label('queue, enqueue and drain at once at half the slower of fill and drain'), `${fmt(both.rate)} messages/s, open loop`,
      `created_at → ack p50 ${fmt(both.latency.p50, 1)} ms, p99 ${fmt(both.latency.p99, 1)} ms; ${fmt(both.sent)} sent, ${both.lost} not acked, ` +
      `${fmt(both.perClaim, 1)} per claim, errors ${both.sendErrors + both.errors}${both.notes}`])
  }
  return out
}

// The work group's bus on SQLite: a database file in the bench's folder, the default settings (BUS_SYNC=full).
async function sqliteWorkBus (name: string): Promise<WorkBus> {
  const db = join(work, `work-${name}.db`)
  const bus = await start('dist/server.js', { BUS_DB: db })
  return {
    base: bus.base,
    measure: async (kind, tokens, names) => ({ ...await measure(bus.base, kind, tokens, names, bus.child.pid), notes: '' }),
    around: async (run) => ({ ...await run(), notes: '' }),
    count: async (where) => {
      const reader = new SQLite(db, { readonly: true })
      try {
        return (reader.prepare(`select count(*) n from messages where ${where}`).get() as { n: number }).n
      } finally {
        reader.close()
      }
    },
    stop: () => stop(bus)
  }
}

// The work group's bus on PostgreSQL: a database of the cluster, one node.
async function postgresWorkBus (admin: string, createDatabase: (admin: string, name: string) => Promise<string>, name: string): Promise<WorkBus> {
  const url = await createDatabase(admin, `work_${name}`)
  const nodes = await startNodes(1, url)
  const base = nodes[0].base
  return {
    base,
    measure: async (kind, tokens, names) => {
      const m = await measurePostgres([base], kind, tokens, names, url)
      return { ...m, notes: watched(m) }
    },
    around: async (run) => {
      const cpu = cpuBusy()
      const stopWatching = await watchPostgres(url)
      const value = await run()
      const cpuBusyShare = cpu()
      const seen = { cpuBusy: cpuBusyShare, ...await stopWatching() }
      return { ...value, ...seen, notes: watched(seen) }
    },
    count: async (where) => (await pgQuery<{ n: number }>(url, `select count(*)::int as n from messages where ${where}`))[0].n,
    stop: () => stopAll(nodes)
  }
}

const results: Record<string, unknown> = {}
let cluster: Cluster | undefined
let postgresServer: { version: string, fsync: string, synchronous_commit: string } | undefined
const rows: Array<[string, string, string]> = []
const fmt = (n: number, d = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
const ratio = (a: number, b: number): string => `${fmt(a / b * 100)}%`

try {
  // 1. The ceiling: bare routes, no storage.
  const ceiling = await start('dist/bench/ceiling.js')
  const fake = { tokens: Array.from({ length: 100 }, (_, i) => `t${i}`), names: Array.from({ length: 100 }, (_, i) => `agent-${i}`) }
  const ceilingSend = await measure(ceiling.base, 'send', fake.tokens, fake.names)
  const ceilingInbox = await measure(ceiling.base, 'inbox', fake.tokens, fake.names)
  await stop(ceiling)
  results.ceiling = { send: ceilingSend, inbox: ceilingInbox }
  rows.push(['ceiling send (bare route)', `${fmt(ceilingSend.rps)} req/s`, `p50 ${fmt(ceilingSend.p50, 2)} ms, p99 ${fmt(ceilingSend.p99, 2)} ms`])
  rows.push(['ceiling inbox (constant page of 50)', `${fmt(ceilingInbox.rps)} req/s`, `p50 ${fmt(ceilingInbox.p50, 2)} ms, p99 ${fmt(ceilingInbox.p99, 2)} ms`])

  // 2. Sends between random pairs of 100 agents, with each durability setting.
  for (const sync of runs('send') && onEngine('sqlite') ? ['full', 'normal'] as const : []) {
    const db = join(work, `send-${sync}.db`)
    const bus = await start('dist/server.js', { BUS_DB: db, BUS_SYNC: sync })
    const { tokens, names } = await registerAgents(bus.base, 100)
    const rssIdle = rssBytes(bus.child.pid as number)
    const send = await measure(bus.base, 'send', tokens, names, bus.child.pid)
    const half = await atHalfLoad(bus.base, 'send', tokens, names, send.rps)
    await stop(bus)
    results[`send_${sync}`] = { ...send, rssIdle, half }
    rows.push([`send, BUS_SYNC=${sync}`, `${fmt(send.rps)} req/s (${ratio(send.rps, ceilingSend.rps)} of ceiling)`,
      `p50 ${fmt(send.p50, 2)} ms, p99 ${fmt(send.p99, 2)} ms, errors ${send.errors}; RSS idle ${mb(rssIdle)} MB, under load ${mb(send.rssUnderLoad)} MB`])
    rows.push([`send, BUS_SYNC=${sync}, at half that rate`, `${fmt(half.rate)} req/s, open loop`,
      `p50 ${fmt(half.p50, 2)} ms, p99 ${fmt(half.p99, 2)} ms, errors ${half.errors}`])
  }

  // 3. Unread inbox reads, ~100 messages per agent; 5. the same at 1,000 and 1,000,000 stored messages.
  const scale: Record<string, unknown> = {}
  for (const stored of runs('inbox') && onEngine('sqlite') ? [10_000, 1_000, quick ? 100_000 : 1_000_000] : []) {
    const db = join(work, `inbox-${stored}.db`)
    let bus = await start('dist/server.js', { BUS_DB: db })
    const { tokens, names } = await registerAgents(bus.base, 100)
    await stop(bus)
    const seeding = performance.now()
    seed(db, stored)
    const seedS = (performance.now() - seeding) / 1000
    bus = await start('dist/server.js', { BUS_DB: db })
    // The scale runs compare like with like: at 1,000 stored messages each agent holds exactly 10, so both sizes
    // read full pages of 10; the 10,000 run reads pages of 50, as the ceiling does.
    const pageSize = stored === 10_000 ? 50 : 10
    const inbox = await measure(bus.base, 'inbox', tokens, names, undefined, pageSize)
    const half = await atHalfLoad(bus.base, 'inbox', tokens, names, inbox.rps, pageSize)
    const send = stored === 10_000 ? undefined : await measure(bus.base, 'send', tokens, names)
    await stop(bus)
    if (stored === 10_000) {
      results.inbox = { ...inbox, half }
      rows.push(['inbox, unread, 100 agents × ~100 messages', `${fmt(inbox.rps)} req/s (${ratio(inbox.rps, ceilingInbox.rps)} of ceiling)`,
        `p50 ${fmt(inbox.p50, 2)} ms, p99 ${fmt(inbox.p99, 2)} ms, errors ${inbox.errors}`])
      rows.push(['inbox, at half that rate', `${fmt(half.rate)} req/s, open loop`,
        `p50 ${fmt(half.p50, 2)} ms, p99 ${fmt(half.p99, 2)} ms, errors ${half.errors}`])
    } else {
      scale[stored] = { inbox, half, send, seedS }
      rows.push([`scale: ${fmt(stored)} stored messages`, `inbox (pages of 10) ${fmt(inbox.rps)} req/s, p99 ${fmt(inbox.p99, 2)} ms`,
        `at half that rate p99 ${fmt(half.p99, 2)} ms; send ${fmt(send?.rps ?? 0)} req/s (seeded in ${fmt(seedS, 1)} s)`])
    }
  }
  if (onEngine('sqlite')) results.scale = scale

  // 4. Push latency with 1,000 open streams, then 3. broadcasts to the same 1,000 agents.
  if (runs('fanout') && onEngine('sqlite')) {
    const db = join(work, 'fanout.db')
    const bus = await start('dist/server.js', { BUS_DB: db })
    const { tokens, names } = await registerAgents(bus.base, 1000)
    const paced = await push(bus.base, tokens, names, bus.child.pid as number, [bus.base], PUSH_RATE)
    rows.push([`push at ${PUSH_RATE} messages/s: 201 → SSE event, 1,000 streams open`, `p50 ${fmt(paced.p50, 2)} ms, p90 ${fmt(paced.p90, 2)} ms, p99 ${fmt(paced.p99, 2)} ms`,
      `${fmt(paced.messages)} messages, ${paced.lost} lost, ${fmt(paced.beforeAnswer * 100)}% there before the 201`])
    const pushed = await push(bus.base, tokens, names, bus.child.pid as number)
    results.push = { ...pushed, paced }
    rows.push(['push, 10 senders flat out: 201 → SSE event, 1,000 streams open', `p50 ${fmt(pushed.p50, 2)} ms, p90 ${fmt(pushed.p90, 2)} ms, p99 ${fmt(pushed.p99, 2)} ms`,
      `${fmt(pushed.messages)} messages, ${pushed.lost} lost, ${fmt(pushed.beforeAnswer * 100)}% there before the 201; ` +
      `RSS with 1,000 streams ${mb(pushed.rssStreams)} MB`])
    await sleep(500)
    const broadcast = await measure(bus.base, 'broadcast', tokens.slice(0, 100), names)
    // Broadcasts are fanned out on read: each agent's copies are made when it next reads. The other half of the
    // cost: the first inbox read of agents that missed every broadcast of the run.
    const reader = new SQLite(db, { readonly: true })
    const stored = (reader.prepare('select count(*) n from messages where recipients is null').get() as { n: number }).n
    reader.close()
    const waits: number[] = []
    for (const token of tokens.slice(100, 100 + READERS)) {
      const began = performance.now()
      const res = await fetch(`${bus.base}/inbox?limit=1`, { headers: { authorization: `Bearer ${token}` } })
      if (!res.ok) throw new Error(`inbox after broadcasts: ${res.status}`)
      await res.arrayBuffer()
      waits.push(performance.now() - began)
    }
    await stop(bus)
    const catchUp = { broadcasts: stored, readers: READERS, msPerReader: waits.reduce((a, b) => a + b) / READERS, copiesPerS: stored * READERS / (waits.reduce((a, b) => a + b) / 1000) }
    results.broadcast = { ...broadcast, deliveriesPerS: broadcast.rps * 999, catchUp }
    rows.push(['broadcast to 1,000 agents', `${fmt(broadcast.rps)} broadcasts/s`, `${fmt(broadcast.rps * 999)} deliveries/s made available, p99 ${fmt(broadcast.p99, 2)} ms`])
    rows.push([`broadcast copies made at read (${READERS} agents)`, `${fmt(catchUp.copiesPerS)} copies/s`,
      `first read after ${fmt(stored)} broadcasts: ${fmt(catchUp.msPerReader)} ms`])
  }
  // 7. Topics and work queues (workGroup), against the send and broadcast rows above when they ran; 6. is PostgreSQL.
  if (runs('work') && onEngine('sqlite')) {
    results.work = await workGroup({
      label: (what) => what,
      target: '',
      fresh: sqliteWorkBus,
      broadcast: results.broadcast as { rps: number, catchUp: { copiesPerS: number } } | undefined,
      send: results.send_full as Load | undefined,
      sendRow: 'send, BUS_SYNC=full'
    })
  }

  // 8. What metrics cost: inbox reads and sends with BUS_METRICS off (the baseline) and on, on identical databases
  // (100 agents, 10,000 seeded messages), alternated three times so that a drift of the machine meets both alike;
  // and how long a scrape of /metrics takes.
  if (runs('metrics') && onEngine('sqlite')) {
    const ROUNDS = 3
    const sum = { send: { false: 0, true: 0 }, inbox: { false: 0, true: 0 } }
    const scrapes: number[] = []
    for (let round = 1; round <= ROUNDS; round++) {
      for (const metrics of ['false', 'true'] as const) {
        const db = join(work, `metrics-${metrics}-${round}.db`)
        let bus = await start('dist/server.js', { BUS_DB: db })
        const { tokens, names } = await registerAgents(bus.base, 100)
        await stop(bus)
        seed(db, 10_000)
        bus = await start('dist/server.js', { BUS_DB: db, BUS_METRICS: metrics })
        sum.inbox[metrics] += (await measure(bus.base, 'inbox', tokens, names)).rps
        sum.send[metrics] += (await measure(bus.base, 'send', tokens, names)).rps
        for (let i = 0; metrics === 'true' && i < 20; i++) {
          const began = performance.now()
          const res = await fetch(`${bus.base}/metrics`)
          if (!res.ok) throw new Error(`GET /metrics: ${res.status}`)
          await res.arrayBuffer()
          scrapes.push(performance.now() - began)
        }
        await stop(bus)
      }
    }
    const cost = (kind: 'send' | 'inbox') => ({ off: sum[kind].false / ROUNDS, on: sum[kind].true / ROUNDS, ratio: sum[kind].true / sum[kind].false })
    const scrapeMs = scrapes.sort((a, b) => a - b)[Math.floor(scrapes.length / 2)]
    results.metrics = { send: cost('send'), inbox: cost('inbox'), scrapeMsP50: scrapeMs }
    for (const kind of ['inbox', 'send'] as const) {
      const c = cost(kind)
      rows.push([`${kind} with metrics on, vs off (BUS_METRICS=false)`, `${fmt(c.on)} vs ${fmt(c.off)} req/s = ${ratio(c.on, c.off)}`,
        `${fmt((1 / c.on - 1 / c.off) * 1e6, 1)} µs more per request at saturation; mean of ${ROUNDS} alternated runs each`])
    }
    rows.push(['GET /metrics, 100 agents, 10,000+ messages', `p50 ${fmt(scrapeMs, 2)} ms per scrape`, '20 scrapes after each loaded run'])
  }

  // 6. PostgreSQL (fsync and synchronous_commit on, as a real server): nodes on one database, 1 to 3 of them.
  if (onEngine('postgresql') && (only === undefined || ['send', 'inbox', 'fanout', 'work'].includes(only))) {
    const { startCluster, createDatabase, findPostgresBinDir } = await loadPgCluster()
    if (findPostgresBinDir() === undefined) {
      process.stdout.write('PostgreSQL: skipped, no server binaries found (install the postgresql package)\n')
      rows.push(['PostgreSQL', 'skipped', 'no server binaries found (initdb, pg_ctl)'])
      results.postgresql = { skipped: 'no server binaries found' }
    } else {
      cluster = await startCluster({ fsync: true })
      const admin = cluster.url
      const [server] = await pgQuery<{ version: string, fsync: string, synchronous_commit: string }>(admin,
        "select current_setting('server_version') as version, current_setting('fsync') as fsync, current_setting('synchronous_commit') as synchronous_commit")
      const sqliteSend = (results.send_full as Load | undefined)?.rps
      const sqliteInbox = (results.inbox as Load | undefined)?.rps
      postgresServer = server
      const pgResults: Record<string, unknown> = { server }
      results.postgresql = pgResults
      // A figure against another one, or n/a when that one was not measured in this run (--only, --engine).
      const of = (a: number, b: number | undefined, what: string): string => b === undefined ? `n/a of ${what}` : `${ratio(a, b)} of ${what}`
      const latency = (l: Load): string => `p50 ${fmt(l.p50, 2)} ms, p99 ${fmt(l.p99, 2)} ms, errors ${l.errors}`
      const slowest = (n: number): string => n === 1 ? '' : ' (slowest node)'

      if (runs('send')) {
        // Sends between random pairs of 100 agents, spread over the nodes; beside each, the same with the order lock off.
        const send: Record<number, unknown> = {}
        const unordered: Record<number, unknown> = {}
        const total: Record<number, number> = {}
        for (const n of NODE_COUNTS) {
          for (const lock of n <= 2 ? ['on', 'off'] as const : ['on'] as const) {
            const url = await createDatabase(admin, `send_${n}_lock_${lock}`)
            const nodes = await startNodes(n, url, lock === 'on' ? 'dist/server.js' : 'dist/bench/unordered-server.js')
            const { tokens, names } = await registerAgents(nodes[0].base, 100)
            const result = await measurePostgres(nodes.map((b) => b.base), 'send', tokens, names, url)
            const half = n === 1 && lock === 'on' ? await atHalfLoad(nodes[0].base, 'send', tokens, names, result.rps) : undefined
            await stopAll(nodes)
            if (lock === 'on') {
              total[n] = result.rps
              send[n] = { ...result, half, ofCeiling: result.rps / ceilingSend.rps, ofOneNode: result.rps / total[1], ofSqliteFull: sqliteSend === undefined ? undefined : result.rps / sqliteSend }
              rows.push([`PostgreSQL send, ${nodesLabel(n)}`, `${fmt(result.rps)} req/s (${ratio(result.rps, ceilingSend.rps)} of ceiling, ` +
                (n === 1 ? `${of(result.rps, sqliteSend, 'SQLite full')})` : `${ratio(result.rps, total[1])} of 1 node)`), latency(result) + slowest(n) + watched(result)])
              if (half !== undefined) {
                rows.push([`PostgreSQL send, ${nodesLabel(n)}, at half that rate`, `${fmt(half.rate)} req/s, open loop`,
                  `p50 ${fmt(half.p50, 2)} ms, p99 ${fmt(half.p99, 2)} ms, errors ${half.errors}`])
              }
            } else {
              unordered[n] = { ...result, ofCeiling: result.rps / ceilingSend.rps, orderedOfUnordered: total[n] / result.rps }
              rows.push([`PostgreSQL send, ${nodesLabel(n)}, order lock off (bench/unordered-server)`,
                `${fmt(result.rps)} req/s (${ratio(result.rps, ceilingSend.rps)} of ceiling; with the lock ${ratio(total[n], result.rps)} of this)`,
                latency(result) + slowest(n) + watched(result)])
            }
          }
        }
        pgResults.send = send
        pgResults.sendLockOff = unordered
      }

      if (runs('inbox')) {
        // Unread pages of 50, ~100 messages per agent as on SQLite; one database read by 1, 2, then 3 nodes.
        const url = await createDatabase(admin, 'inbox')
        let nodes = await startNodes(1, url)
        const { tokens, names } = await registerAgents(nodes[0].base, 100)
        const seeding = performance.now()
        await seedPostgres(url, 10_000)
        const seedS = (performance.now() - seeding) / 1000
        // The first reads mark the pages delivered (10,000 row updates): done, then vacuumed and analysed, before any
        // run, so that autovacuum does not pick one of the runs to catch up in, and every node count reads alike.
        await load(nodes[0].base, 'inbox', tokens, names, WARMUP_S, 50)
        await pgQuery(url, 'vacuum analyze')
        const inbox: Record<string, unknown> = { seedS }
        let one = 0
        for (const n of NODE_COUNTS) {
          if (nodes.length !== n) {
            await stopAll(nodes)
            nodes = await startNodes(n, url)
          }
          const result = await measurePostgres(nodes.map((b) => b.base), 'inbox', tokens, names, url)
          if (n === 1) one = result.rps
          inbox[n] = { ...result, ofCeiling: result.rps / ceilingInbox.rps, ofOneNode: result.rps / one, ofSqlite: sqliteInbox === undefined ? undefined : result.rps / sqliteInbox }
          rows.push([`PostgreSQL inbox, unread, ${nodesLabel(n)}`, `${fmt(result.rps)} req/s (${ratio(result.rps, ceilingInbox.rps)} of ceiling, ` +
            (n === 1 ? `${of(result.rps, sqliteInbox, 'SQLite')})` : `${ratio(result.rps, one)} of 1 node)`), latency(result) + slowest(n) + watched(result)])
        }
        await stopAll(nodes)
        pgResults.inbox = inbox
      }

      if (runs('fanout')) {
        // Push latency with 1,000 streams open on node 2 and the sends to the other nodes (one node: both on it), then
        // broadcasts to the same 1,000 agents spread over the nodes.
        const pushed: Record<number, unknown> = {}
        const broadcasts: Record<number, unknown> = {}
        const sqlitePush = (results.push as { p99: number } | undefined)?.p99
        const sqlitePaced = (results.push as { paced: { p99: number } } | undefined)?.paced.p99
        let one = 0
        for (const n of NODE_COUNTS) {
          const url = await createDatabase(admin, `fanout_${n}`)
          const nodes = await startNodes(n, url)
          const { tokens, names } = await registerAgents(nodes[0].base, 1000)
          const reader = nodes[Math.min(1, n - 1)]
          const senders = n === 1 ? nodes : nodes.filter((node) => node !== reader)
          const cpu = cpuBusy()
          const stopWatching = await watchPostgres(url)
          const where = n === 1 ? 'sends and streams on node 1' : `sends to node ${senders.map((node) => nodes.indexOf(node) + 1).join(' & ')}, streams on node 2`
          const paced = { ...await push(reader.base, tokens, names, reader.child.pid as number, senders.map((node) => node.base), PUSH_RATE), cpuBusy: cpu(), ...await stopWatching() }
          rows.push([`PostgreSQL push at ${PUSH_RATE} messages/s, ${nodesLabel(n)}: ${where}`,
            `p50 ${fmt(paced.p50, 2)} ms, p90 ${fmt(paced.p90, 2)} ms, p99 ${fmt(paced.p99, 2)} ms (${ratio(paced.p99, 10)} of the 10 ms target` +
            (n === 1 && sqlitePaced !== undefined ? `, ${ratio(paced.p99, sqlitePaced)} of SQLite's)` : ')'),
            `${fmt(paced.messages)} messages, ${paced.lost} lost, ${fmt(paced.beforeAnswer * 100)}% there before the 201; 1,000 streams` + watched(paced)])
          const cpuSaturated = cpuBusy()
          const stopWatchingSaturated = await watchPostgres(url)
          const p = { ...await push(reader.base, tokens, names, reader.child.pid as number, senders.map((node) => node.base)), cpuBusy: cpuSaturated(), ...await stopWatchingSaturated() }
          pushed[n] = { ...p, paced, readerNode: nodes.indexOf(reader) + 1, senderNodes: senders.map((node) => nodes.indexOf(node) + 1), p99OfTarget: paced.p99 / 10 }
          rows.push([`PostgreSQL push, 10 senders flat out, ${nodesLabel(n)}: ${where}`,
            `p50 ${fmt(p.p50, 2)} ms, p90 ${fmt(p.p90, 2)} ms, p99 ${fmt(p.p99, 2)} ms` +
            (n === 1 && sqlitePush !== undefined ? ` (${ratio(p.p99, sqlitePush)} of SQLite's)` : ''),
            `${fmt(p.messages)} messages, ${p.lost} lost, ${fmt(p.beforeAnswer * 100)}% there before the 201; 1,000 streams` + watched(p)])
          await sleep(500)
          const broadcast = await measurePostgres(nodes.map((b) => b.base), 'broadcast', tokens.slice(0, 100), names, url)
          const [{ stored }] = await pgQuery<{ stored: number }>(url, 'select count(*)::int as stored from messages where recipients is null')
          const waits: number[] = []
          for (const token of tokens.slice(100, 100 + READERS)) {
            const began = performance.now()
            const res = await fetch(`${nodes[0].base}/inbox?limit=1`, { headers: { authorization: `Bearer ${token}` } })
            if (!res.ok) throw new Error(`inbox after broadcasts: ${res.status}`)
            await res.arrayBuffer()
            waits.push(performance.now() - began)
          }
          await stopAll(nodes)
          if (n === 1) one = broadcast.rps
          const msPerReader = waits.reduce((a, b) => a + b) / READERS
          broadcasts[n] = { ...broadcast, deliveriesPerS: broadcast.rps * 999, ofOneNode: broadcast.rps / one, catchUp: { broadcasts: stored, readers: READERS, msPerReader, copiesPerS: stored * READERS / (msPerReader * READERS / 1000) } }
          rows.push([`PostgreSQL broadcast to 1,000 agents, ${nodesLabel(n)}`, `${fmt(broadcast.rps)} broadcasts/s` + (n === 1 ? '' : ` (${ratio(broadcast.rps, one)} of 1 node)`),
            `${fmt(broadcast.rps * 999)} deliveries/s made available, p99 ${fmt(broadcast.p99, 2)} ms${slowest(n)}; first read after ${fmt(stored)} broadcasts: ${fmt(msPerReader)} ms` + watched(broadcast)])
        }
        pgResults.push = pushed
        pgResults.broadcast = broadcasts
      }

      if (runs('work')) {
        // 7. on one node, against the 1-node send and broadcast rows above when they ran.
        pgResults.work = await workGroup({
          label: (what) => `PostgreSQL ${what}, 1 node`,
          target: 'PostgreSQL 1-node ',
          fresh: (name) => postgresWorkBus(admin, createDatabase, name),
          broadcast: (pgResults.broadcast as Record<number, { rps: number, catchUp: { copiesPerS: number } }> | undefined)?.[1],
          send: (pgResults.send as Record<number, Load> | undefined)?.[1],
          sendRow: 'PostgreSQL send, 1 node'
        })
      }

      // The targets, met or not.
      const send = pgResults.send as Record<number, { rps: number }> | undefined
      const pushes = pgResults.push as Record<number, { p99: number, paced: { p99: number } }> | undefined
      const targets: Record<string, unknown> = {}
      if (send !== undefined && sqliteSend !== undefined) {
        const r = send[1].rps / sqliteSend
        targets.sendOneNodeOfSqlite = { value: r, target: 0.5, met: r >= 0.5 }
        rows.push(['target: PostgreSQL 1-node send ≥ 50% of SQLite full', `${ratio(send[1].rps, sqliteSend)}: ${r >= 0.5 ? 'met' : 'missed'}`, ''])
      }
      if (send !== undefined) {
        for (const n of [2, 3]) {
          const r = send[n].rps / send[1].rps
          targets[`send${n}NodesOfOne`] = { value: r, target: 1, met: r >= 1 }
          rows.push([`target: send on ${n} nodes ≥ 1 node`, `${ratio(send[n].rps, send[1].rps)}: ${r >= 1 ? 'met' : 'missed'}`, ''])
        }
      }
      if (pushes !== undefined) {
        for (const n of [2, 3]) {
          const { p99 } = pushes[n].paced
          targets[`push${n}NodesP99`] = { valueMs: p99, targetMs: 10, met: p99 < 10, atMessagesPerS: PUSH_RATE, flatOutMs: pushes[n].p99 }
          rows.push([`target: push p99 across nodes (${n}) < 10 ms`, `${fmt(p99, 2)} ms at ${PUSH_RATE} messages/s: ${p99 < 10 ? 'met' : 'missed'}`,
            `flat out: ${fmt(pushes[n].p99, 2)} ms`])
        }
      }
      pgResults.targets = targets
    }
  }
} finally {
  await cluster?.stop()
  rmSync(work, { recursive: true, force: true })
}

const machine = { cores: cpus().length, cpu: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version }
const report = { date: new Date().toISOString(), quick, only, engine, durationS: DURATION_S, connections: CONNECTIONS, loadGenerator: hasWrk ? 'wrk' : 'autocannon', machine, results }
mkdirSync('bench', { recursive: true })
writeFileSync('bench/results.json', JSON.stringify(report, null, 2) + '\n')
const width = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)))
process.stdout.write(`agent-bus benchmark, ${report.date}: ${machine.cores} × ${machine.cpu}, Node ${machine.node}; ` +
  `load from ${report.loadGenerator}, ${CONNECTIONS} connections, ${DURATION_S} s per run after ${WARMUP_S} s warm-up` +
  (postgresServer === undefined ? '' : `; PostgreSQL ${postgresServer.version}, fsync ${postgresServer.fsync}, synchronous_commit ${postgresServer.synchronous_commit}`) + '\n\n')
process.stdout.write(`| ${['workload', 'throughput', 'latency and memory'].map((h, i) => h.padEnd(width[i])).join(' | ')} |\n`)
process.stdout.write(`|${width.map((w) => '-'.repeat(w + 2)).join('|')}|\n`)
for (const row of rows) process.stdout.write(`| ${row.map((c, i) => c.padEnd(width[i])).join(' | ')} |\n`)
process.stdout.write('\nwritten to bench/results.json\n')
