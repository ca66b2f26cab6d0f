import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { engine, testDb, until } from './helper.js'
import { startServer } from './process.js'

// Work queues with competing consumers in processes of their own (test/fixtures/queue-consumer.ts): on SQLite three
// consumer processes against one real server process; on PostgreSQL three server nodes on one database, one consumer
// on each. 2,000 messages, each acked exactly once and never held by two consumers at once; a consumer SIGKILLed while
// it holds leases loses nothing (its messages go to the others once the leases end); a message every consumer gives
// back becomes a dead letter after max_deliveries, and a requeue brings it back with a fresh count.
// Real processes, thousands of requests: far longer than the suite's default 120 s on a busy machine.
t.setTimeout(600_000)

const CONSUMER = fileURLToPath(new URL('./fixtures/queue-consumer.ts', import.meta.url))
const MESSAGES = 2000
const QUEUE = 'work'
// Sent before the consumers start: they begin on a full queue, all three claiming its oldest messages at once (the
// hardest case for never handing one message to two), and cost fewer requests than the rest, which they take as it
// arrives (woken by sends, on PostgreSQL through other nodes).
const BACKLOG = 1000
const SENDS_IN_FLIGHT = 8
const cluster = engine === 'postgresql'

interface Answer { status: number, json: any }

async function call (base: string, method: 'GET' | 'POST', path: string, token?: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(body !== undefined && { 'content-type': 'application/json' }),
      ...(token !== undefined && { authorization: `Bearer ${token}` })
    },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = text
  }
  return { status: res.status, json }
}

// The bus: one server process on SQLite; three nodes on one database on PostgreSQL. Answers three base URLs, one per
// consumer (the same one three times on SQLite).
async function startBus (t: Test) {
  // Not about durability (no server dies here): SQLite commits without waiting for fsync, to spare a busy machine.
  const env = { BUS_DB: await testDb(t), BUS_SYNC: 'normal' }
  // On PostgreSQL all at once: their migrations must not race (test/postgres/cluster.test.ts).
  const servers = Array.from({ length: cluster ? 3 : 1 }, () => startServer(env))
  for (const server of servers) t.teardown(() => { server.child.kill('SIGKILL') })
  const bases = await Promise.all(servers.map((s) => s.url))
  return { servers, nodes: [0, 1, 2].map((i) => bases[i % bases.length]) }
}

// One line of a consumer's log (the fixture's header lists them).
interface Line { ev: string, id: number, dc: number, exp: string, lease_s: number, t0: number, t1: number, dead?: boolean, [key: string]: unknown }

interface ConsumerConfig { base: string, token: string, queue: string, limit: number, wait_s: number, lease_s: number, mode: 'work' | 'hold' }

function startConsumer (t: Test, name: string, config: ConsumerConfig) {
  // Under this test's own loaders (tap's TypeScript import), as test/issues/09-orphan-servers.test.ts runs its fixture.
  const child = spawn(process.execPath, [...process.execArgv, CONSUMER, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = once(child, 'exit')
  const lines: Line[] = []
  let pending = ''
  let err = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    pending += chunk
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const text = pending.slice(0, nl)
      pending = pending.slice(nl + 1)
      try {
        lines.push(JSON.parse(text))
      } catch {
        lines.push({ ev: 'garbage', text } as unknown as Line)
      }
    }
  })
  child.stderr.on('data', (d) => { err += d })
  const of = (ev: string) => lines.filter((l) => l.ev === ev)
  return { name, child, exited, lines, of, errors: () => err }
}
type Consumer = ReturnType<typeof startConsumer>

// Whether the process exited within ms (an unref'd timer: it must not keep this test alive).
async function exitedWithin (consumer: Consumer, ms: number): Promise<boolean> {
  return Promise.race([consumer.exited.then(() => true), sleep(ms, false, { ref: false })])
}

// Sends the bodies to the queue, SENDS_IN_FLIGHT at a time, spread over the nodes; answers their ids, in order.
async function sendAll (nodes: string[], token: string, bodies: string[]): Promise<number[]> {
  const ids: number[] = new Array(bodies.length)
  let next = 0
  await Promise.all(Array.from({ length: SENDS_IN_FLIGHT }, async () => {
    while (next < bodies.length) {
      const i = next++
      const res = await call(nodes[i % nodes.length], 'POST', '/send', token, { queue: QUEUE, body: bodies[i] })
      if (res.status !== 201) throw new Error(`send ${i}: ${res.status} ${JSON.stringify(res.json)}`)
      ids[i] = res.json.id
    }
  }))
  return ids
}

const byNumber = (a: number, b: number) => a - b
const iso = (ms: number) => new Date(ms).toISOString()

t.test(`2,000 messages, three consumers (${cluster ? 'one on each of three nodes' : 'three processes, one bus'}): each acked once, ` +
  'none held by two at once; a SIGKILLed consumer\'s leases go to the others; a poison message dies and is requeued', async (t) => {
  const began = Date.now()
  const phase = (what: string) => t.comment(`${what}: ${((Date.now() - began) / 1000).toFixed(1)} s`)
  const { servers, nodes } = await startBus(t)
  phase('bus started')
  const diagnose = () => servers.map((s, i) => `node ${i + 1}:\n${s.errors()}${s.output().slice(-4000)}`).join('\n')

  const tokens: Record<string, string> = {}
  for (const [i, name] of ['sender', 'c1', 'c2', 'c3', 'doomed'].entries()) {
    const res = await call(nodes[i % 3], 'POST', '/agents', undefined, { name })
    if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${JSON.stringify(res.json)}`)
    tokens[name] = res.json.token
  }
  const sender = tokens.sender
  const created = await call(nodes[0], 'POST', '/queues', sender, { name: QUEUE, lease_s: 30, max_deliveries: 2 })
  t.equal(created.status, 201, 'queue created: lease_s 30, max_deliveries 2')

  // ---- a consumer SIGKILLed while it holds leases -----------------------------------------------------------------
  // Half the messages, waiting; then, before anyone else consumes, a consumer claims 20 of them for 2 s and is killed.
  const bodies = Array.from({ length: MESSAGES }, (_, i) => `job ${i}`)
  const firstIds = await sendAll(nodes, sender, bodies.slice(0, BACKLOG))
  phase('backlog sent')
  const doomed = startConsumer(t, 'doomed', { base: nodes[2], token: tokens.doomed, queue: QUEUE, limit: 20, wait_s: 5, lease_s: 2, mode: 'hold' })
  await until('the doomed consumer holds its claim', () => doomed.of('held').length > 0 || doomed.child.exitCode !== null, 60_000)
  doomed.child.kill('SIGKILL')
  await doomed.exited
  phase('doomed consumer killed')
  const held = doomed.of('claim')
  t.equal(held.length, 20, `the doomed consumer held 20 leases when it was SIGKILLed${doomed.errors() && `: ${doomed.errors()}`}`)
  t.strictSame(held.map((l) => l.id).sort(byNumber), [...firstIds].sort(byNumber).slice(0, 20), 'the oldest 20')
  t.ok(held.every((l) => l.dc === 1), 'each its first delivery')

  // ---- three consumers on the backlog; the rest of the messages, one of them poison, sent as they work -------------
  const names = ['c1', 'c2', 'c3']
  const consumers = names.map((name, i) =>
    startConsumer(t, name, { base: nodes[i], token: tokens[name], queue: QUEUE, limit: 10, wait_s: 1, lease_s: 60, mode: 'work' }))
  const rest = [...bodies.slice(BACKLOG, (BACKLOG + MESSAGES) / 2), 'poison', ...bodies.slice((BACKLOG + MESSAGES) / 2)]
  const restIds = await sendAll(nodes, sender, rest)
  phase('all sent')
  const poisonId = restIds[rest.indexOf('poison')]
  const workIds = [...firstIds, ...restIds.filter((id) => id !== poisonId)]
  const isWork = new Set(workIds)
  t.equal(isWork.size, MESSAGES, `${MESSAGES} messages and a poison one sent`)

  const queueNow = async () => {
    const res = await call(nodes[0], 'GET', '/queues', sender)
    return (res.json.queues as Array<Record<string, unknown>>).find((q) => q.name === QUEUE)
  }
  const ackedIds = () => new Set(consumers.flatMap((c) => c.of('ack').map((l) => l.id)))
  try {
    await until('every message is acked and the poison one dead', async () => {
      const gone = consumers.find((c) => c.child.exitCode !== null)
      if (gone !== undefined) throw new Error(`${gone.name} exited (${gone.child.exitCode}): ${gone.errors()}`)
      if (ackedIds().size < MESSAGES) return false
      const q = await queueNow()
      return q?.available === 0 && q.delayed === 0 && q.leased === 0 && q.dead === 1
    }, 240_000)
  } catch (err) {
    t.comment(`acked ${ackedIds().size} of ${MESSAGES}; queue ${JSON.stringify(await queueNow().catch(String))}`)
    t.comment(diagnose())
    for (const c of consumers) t.comment(`${c.name}: ${c.errors()} ${JSON.stringify(c.lines.slice(-5))}`)
    throw err
  }
  phase('all acked')
  t.match(await queueNow(), { available: 0, delayed: 0, leased: 0, dead: 1 }, 'GET /queues: nothing available, delayed or leased; one dead letter')

  // Stopped as the test stops them: stdin ends, each finishes the claim it is in (wait_s 1) and exits.
  for (const c of consumers) c.child.stdin.end()
  for (const c of consumers) {
    t.ok(await exitedWithin(c, 60_000), `${c.name} stopped when its stdin ended`)
    t.equal(c.child.exitCode, 0, `${c.name} exited 0${c.errors() && `: ${c.errors()}`}`)
  }

  phase('consumers stopped')
  // ---- what the consumers' logs say --------------------------------------------------------------------------------
  const everyone = [doomed, ...consumers]
  const failures = everyone.flatMap((c) => c.lines.filter((l) => l.ev === 'error' || l.ev === 'garbage').map((l) => ({ consumer: c.name, ...l })))
  t.strictSame(failures, [], 'no claim, ack or release failed')
  const conflicts = everyone.flatMap((c) => c.of('ack-conflict'))
  if (conflicts.length > 0) t.comment(`acks refused because a lease had ended first (allowed, then redelivered): ${JSON.stringify(conflicts)}`)

  interface Claim { who: string, id: number, dc: number, exp: number, start: number, t0: number, t1: number, end: number }
  const releasedAt = new Map<string, Line>()
  for (const c of everyone) for (const l of c.of('release')) releasedAt.set(`${c.name} ${l.id} ${l.dc}`, l)
  const claims = new Map<number, Claim[]>()
  for (const c of everyone) {
    for (const l of c.of('claim')) {
      const exp = Date.parse(l.exp)
      // A lease runs until lease_expires_at, or until its holder gave it back: the release request was sent after
      // t0, so the bus ended the lease no earlier than that.
      const released = releasedAt.get(`${c.name} ${l.id} ${l.dc}`)
      const claim = { who: c.name, id: l.id, dc: l.dc, exp, start: exp - l.lease_s * 1000, t0: l.t0, t1: l.t1, end: Math.min(exp, released?.t0 ?? Infinity) }
      claims.set(l.id, [...claims.get(l.id) ?? [], claim])
    }
  }
  const acks = consumers.flatMap((c) => c.of('ack').map((l) => ({ who: c.name, ...l })))

  // Each of the 2,000 acked once, by one consumer, and nothing else acked.
  const ackCount = new Map<number, number>()
  for (const a of acks) ackCount.set(a.id, (ackCount.get(a.id) ?? 0) + 1)
  t.strictSame({
    twice: [...ackCount].filter(([, n]) => n > 1).map(([id]) => id),
    missing: workIds.filter((id) => !ackCount.has(id)),
    others: [...ackCount.keys()].filter((id) => !isWork.has(id))
  }, { twice: [], missing: [], others: [] }, `the consumers' ack logs hold each of the ${MESSAGES} messages exactly once, and nothing else`)
  for (const c of consumers) t.ok(c.of('ack').length > 0, `${c.name} acked ${c.of('ack').length} messages`)
  t.strictSame([...claims.keys()].filter((id) => !isWork.has(id) && id !== poisonId), [], 'no message claimed that was not sent to the queue')

  // No message held by two at once. For each message, its claims in delivery order: deliveries 1, 2, ... with no
  // number twice; a later claim answered (t1, when the claimer had it) before an earlier lease ended, by that lease's
  // lease_expires_at as the bus reported it (or its release), is two holders at once. The ack is the last claimer's.
  const overlaps: string[] = []
  const histories: string[] = []
  const ackers: string[] = []
  // The bus's own account, stricter: a claim's time (lease_expires_at less its lease_s) before the previous lease
  // ended. Shown, not failed: a claim takes its time before it reaches the database, so under load on several nodes
  // it may come a little before the moment it actually took the message (which the check above bounds).
  const reportedOverlaps: string[] = []
  for (const [id, list] of claims) {
    const ordered = [...list].sort((a, b) => a.dc - b.dc)
    if (ordered.some((c, k) => c.dc !== k + 1)) histories.push(`message ${id}: deliveries ${ordered.map((c) => `${c.who}#${c.dc}`).join(', ')}`)
    for (let a = 0; a < ordered.length; a++) {
      for (let b = a + 1; b < ordered.length; b++) {
        const [A, B] = [ordered[a], ordered[b]]
        if (B.t1 < A.end) {
          overlaps.push(`message ${id}: ${B.who} had it (delivery ${B.dc}) by ${iso(B.t1)}, while ${A.who}'s lease (delivery ${A.dc}) ran until ${iso(A.end)}`)
        }
        if (B.start < A.end) reportedOverlaps.push(`message ${id}: ${B.who}'s claim at ${iso(B.start)} before ${A.who}'s lease ended at ${iso(A.end)}`)
      }
    }
    const last = ordered.at(-1) as Claim
    const acked = acks.filter((a) => a.id === id)
    if (isWork.has(id) && !(acked.length === 1 && acked[0].who === last.who && acked[0].dc === last.dc)) {
      ackers.push(`message ${id}: claims ${ordered.map((c) => `${c.who}#${c.dc}`).join(', ')}, acks ${acked.map((a) => `${a.who}#${a.dc}`).join(', ')}`)
    }
  }
  t.strictSame(overlaps, [], 'no message was claimed by one consumer while another\'s lease on it ran')
  t.strictSame(histories, [], 'each message\'s deliveries are counted 1, 2, ... one claim each')
  t.strictSame(ackers, [], 'each message was acked by the consumer of its last delivery, in that delivery')
  if (reportedOverlaps.length > 0) {
    t.comment(`${reportedOverlaps.length} claim times (lease_expires_at - lease_s) before the previous lease ended, e.g. ${reportedOverlaps.slice(0, 5).join('; ')}`)
  }
  const claimCount = [...claims.values()].reduce((n, list) => n + list.length, 0)
  t.comment(`${claimCount} claims of ${claims.size} messages; acks by consumer: ${consumers.map((c) => `${c.name} ${c.of('ack').length}`).join(', ')}`)

  // The killed consumer's 20: each claimed again by one of the three (delivery 2), after the lease (checked above
  // with the others), and acked; none lost.
  const taken = held.map((h) => (claims.get(h.id) ?? []).sort((a, b) => a.dc - b.dc).map((c) => `${c.who}#${c.dc}`))
  t.strictSame(taken.filter((list) => !(list.length === 2 && list[0] === 'doomed#1' && /^c[123]#2$/.test(list[1]))), [],
    'each of the killed consumer\'s messages went to one of the others, as its delivery 2')
  t.comment(`the killed consumer's messages were taken by ${[...new Set(taken.map((list) => list[1]))].join(', ')}`)
  t.ok(held.every((h) => acks.some((a) => a.id === h.id && a.dc === 2)), 'and was acked there')

  // ---- the poison message: given back by every consumer, dead after max_deliveries (2) ----------------------------
  const poisonClaims = (claims.get(poisonId) ?? []).sort((a, b) => a.dc - b.dc)
  t.strictSame(poisonClaims.map((c) => c.dc), [1, 2], 'the poison message was delivered twice')
  const poisonReleases = consumers.flatMap((c) => c.of('release').map((l) => ({ who: c.name, id: l.id, dc: l.dc, dead: l.dead })))
  t.strictSame(poisonReleases.sort((a, b) => a.dc - b.dc), [
    { who: poisonClaims[0]?.who, id: poisonId, dc: 1, dead: false },
    { who: poisonClaims[1]?.who, id: poisonId, dc: 2, dead: true }
  ], 'released by its claimers; the second release made it a dead letter')
  const lastHolder = poisonClaims[1]?.who

  const dead = await call(nodes[1], 'GET', `/queues/${QUEUE}/dead`, sender)
  t.equal(dead.status, 200, 'GET /queues/{name}/dead')
  t.match(dead.json, { dead: [{ message: { id: poisonId, body: 'poison', queue: QUEUE }, delivery_count: 2, claimed_by: lastHolder, dead_at: String }], next_cursor: null },
    'GET /queues/{name}/dead lists it')
  t.equal(dead.json.dead.length, 1, 'and nothing else')
  const poisonStatus = async () => (await call(nodes[2], 'GET', `/messages/${poisonId}`, sender)).json.queue_status
  t.match(await poisonStatus(), { queue: QUEUE, state: 'dead', delivery_count: 2, claimed_by: lastHolder, acked_by: null, dead_at: String },
    'its sender sees it dead')

  const requeued = await call(nodes[2], 'POST', `/queues/${QUEUE}/dead/requeue`, sender, { ids: [poisonId] })
  t.equal(requeued.status, 200, 'POST /queues/{name}/dead/requeue')
  t.strictSame(requeued.json, { requeued: [poisonId], not_dead: [] }, 'requeued')
  t.strictSame((await call(nodes[0], 'GET', `/queues/${QUEUE}/dead`, sender)).json.dead, [], 'no dead letters left')
  t.match(await poisonStatus(), { state: 'available', delivery_count: 0, dead_at: null }, 'available again, its delivery count reset')
  t.match(await queueNow(), { available: 1, leased: 0, dead: 0 }, 'GET /queues: one available, none dead')
  const again = await call(nodes[1], 'POST', `/queues/${QUEUE}/claim`, sender, { limit: 10, lease_s: 30 })
  t.equal(again.status, 200, 'claimed by the sender')
  t.match(again.json, { messages: [{ message: { id: poisonId, body: 'poison' }, delivery_count: 1, lease_expires_at: String }] }, 'claimed again: delivery 1')
  t.equal(again.json.messages.length, 1, 'the only message left')
  t.strictSame((await call(nodes[0], 'POST', `/queues/${QUEUE}/ack`, sender, { ids: [poisonId] })).json, { acked: 1, already_acked: 0 }, 'and acked')
  t.match(await poisonStatus(), { state: 'acked', delivery_count: 1, acked_by: 'sender', acked_at: String, dead_at: null }, 'its sender sees it acked')
  t.match(await queueNow(), { available: 0, delayed: 0, leased: 0, dead: 0 }, 'GET /queues: nothing available, delayed, leased or dead')

  phase('dead letter requeued and acked')
  // ---- the sender's view (GET /messages/{id}): acked, by the consumer whose log says so ---------------------------
  // The killed consumer's messages and every tenth of the others: all 2,000 would cost as many requests as the sends.
  const lastAck = new Map(acks.map((a) => [a.id, a]))
  const sample = [...new Set([...held.map((h) => h.id), ...workIds.filter((_, i) => i % 10 === 0)])]
  const wrong: string[] = []
  let next = 0
  await Promise.all(Array.from({ length: SENDS_IN_FLIGHT }, async () => {
    while (next < sample.length) {
      const i = next++
      const id = sample[i]
      const res = await call(nodes[i % 3], 'GET', `/messages/${id}`, sender)
      const status = res.json.queue_status
      const expected = { state: 'acked', acked_by: lastAck.get(id)?.who, delivery_count: claims.get(id)?.length }
      if (status?.state !== expected.state || status.acked_by !== expected.acked_by || status.delivery_count !== expected.delivery_count) {
        wrong.push(`message ${id}: ${res.status} ${JSON.stringify(status)}, expected ${JSON.stringify(expected)}`)
      }
    }
  }))
  phase('every message looked up')
  t.strictSame(wrong, [], `the sender sees each of ${sample.length} messages acked by the consumer that logged the ack, after the deliveries logged`)
})
