import assert from 'node:assert/strict'
import fc from 'fast-check'
import t from 'tap'
import type { AgentCaller } from '../bus/agents.js'
import { createBus } from '../bus/bus.js'
import { createLocalNotifier, Readers } from '../bus/events.js'
import { MessageCache } from '../db/message-cache.js'
import { createTargetPolicy } from '../webhooks/target.js'
import { testStorage } from './helper.js'

// Work queues against a model: random commands over a few agents and one small queue, with a manual clock, and after
// every command the bus's answers, its counts, its dead letters and each message's queue_status compared with a plain
// in-memory model of what each message should be doing.

const LEASE_S = 10
const RANK = { normal: 0, high: 1, urgent: 2 } as const
type Priority = keyof typeof RANK

// A pick names a message: one sent in this run (its index, modulo how many were sent), or for -1 (or when none was
// sent yet) a message that is not in the queue.
type Pick = number
type Command =
  | { kind: 'send', agent: number, priority: Priority }
  | { kind: 'claim', agent: number, limit: number }
  | { kind: 'ack', agent: number, picks: Pick[] }
  | { kind: 'release', agent: number, picks: Pick[], delay: number }
  | { kind: 'extend', agent: number, picks: Pick[], leaseS: number }
  | { kind: 'advance', ms: number }
  | { kind: 'sweep' }
  | { kind: 'requeue', picks: Pick[] | null }

const agent = fc.nat(2)
const pick = fc.oneof({ weight: 9, arbitrary: fc.nat(20) }, { weight: 1, arbitrary: fc.constant(-1) })
const picks = fc.array(pick, { minLength: 1, maxLength: 3 })
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('send' as const), agent, priority: fc.constantFrom<Priority>('normal', 'high', 'urgent') }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('claim' as const), agent, limit: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('ack' as const), agent, picks }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('release' as const), agent, picks, delay: fc.integer({ min: 0, max: 15 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), agent, picks, leaseS: fc.integer({ min: 1, max: 20 }) }) },
  // Whole seconds land exactly on lease ends (10 s); milliseconds fall anywhere.
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.oneof(fc.integer({ min: 0, max: 25 }).map((s) => s * 1000), fc.integer({ min: 0, max: 25_000 })) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('sweep' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('requeue' as const), picks: fc.option(picks, { nil: null }) }) }
)

// One queue message as the model sees it. `dead` is the database's dead_at: a lease that ended on a message that had
// had its max_deliveries is dead to listings at once, but only a claim or a sweep records it (db/queues.ts).
interface Entry {
  id: number
  rank: number
  sender: number
  holder: number | null
  until: number | null
  availableAt: number
  count: number
  claimedBy: number | null
  ackedBy: number | null
  dead: boolean
}

type State = 'available' | 'delayed' | 'leased' | 'acked' | 'dead'

class Model {
  readonly entries: Entry[] = []
  constructor (readonly maxDeliveries: number) {}

  byId (id: number): Entry | undefined { return this.entries.find((e) => e.id === id) }

  state (e: Entry, now: number): State {
    if (e.ackedBy !== null) return 'acked'
    if (e.dead) return 'dead'
    if (e.holder !== null) return (e.until as number) > now ? 'leased' : e.count >= this.maxDeliveries ? 'dead' : 'available'
    return e.availableAt > now ? 'delayed' : 'available'
  }

  counts (now: number) {
    const c = { available: 0, delayed: 0, leased: 0, dead: 0 }
    for (const e of this.entries) {
      const s = this.state(e, now)
      if (s !== 'acked') c[s]++
    }
    return c
  }

  // Ends the leases that have passed, as a claim or a sweep does; whether one of them made a message available.
  endLeases (now: number): boolean {
    let freed = false
    for (const e of this.entries) {
      if (e.holder === null || (e.until as number) > now) continue
      e.holder = null
      e.until = null
      if (e.count >= this.maxDeliveries) e.dead = true
      else freed = true
    }
    return freed
  }

  claim (agent: number, limit: number, now: number) {
    this.endLeases(now)
    const ready = this.entries.filter((e) => e.holder === null && e.ackedBy === null && !e.dead && e.availableAt <= now)
      .sort((a, b) => b.rank - a.rank || a.id - b.id).slice(0, limit)
    return ready.map((e) => {
      Object.assign(e, { holder: agent, claimedBy: agent, until: now + LEASE_S * 1000, count: e.count + 1 })
      return { id: e.id, delivery_count: e.count, lease_expires_at: iso(e.until as number) }
    })
  }

  // Acks, releases and extensions act on every id or on none: 404 for any id not in the queue, else 409 unless the
  // agent holds a running lease on each (skip: entries that need nothing done).
  asHolder<T> (agent: number, ids: number[], now: number, skip: (e: Entry) => boolean, act: (entries: Entry[]) => T): Outcome<T> {
    const entries = [...new Set(ids)].map((id) => this.byId(id))
    if (entries.some((e) => e === undefined)) return { error: 'BUS_MESSAGE_NOT_FOUND' }
    const todo = (entries as Entry[]).filter((e) => !skip(e))
    if (todo.some((e) => e.holder !== agent || (e.until as number) <= now)) return { error: 'BUS_LEASE_CONFLICT' }
    return { ok: act(todo) }
  }
}

type Outcome<T> = { ok: T } | { error: string }

async function outcome<T> (call: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: await call() }
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (typeof code !== 'string') throw err
    return { error: code }
  }
}

const iso = (ms: number): string => new Date(ms).toISOString()

t.test('work queues behave as a simple model of leases says, whatever the order of commands', async (t) => {
  const storage = await testStorage(t)
  // Never back: runs share the database (each with its own queue and agents), and a sweep ends every queue's leases.
  let now = Date.parse('2026-01-01T00:00:00Z')
  const bus = createBus({
    db: storage.db,
    write: storage.write,
    notifier: createLocalNotifier(),
    readers: new Readers(4),
    cache: new MessageCache(1 << 20, 16 << 10),
    maxMessageBytes: 64 << 10,
    exclusively: storage.exclusively,
    refuseWebhook: createTargetPolicy({ allow: [], allowPrivate: false }).refuse,
    claimRows: storage.claimRows,
    clock: () => now
  })
  let run = 0
  let commands = 0

  const property = fc.asyncProperty(fc.integer({ min: 2, max: 3 }), fc.integer({ min: 2, max: 3 }), fc.array(command, { minLength: 5, maxLength: 60, size: 'medium' }),
    async (agentCount, maxDeliveries, script) => {
      run++
      const queue = `q${run}`
      const agents: AgentCaller[] = []
      for (let i = 0; i < agentCount; i++) {
        const { token } = await bus.register(null, { name: `r${run}-a${i}` })
        const caller = await bus.authenticate(token, 1000)
        assert.ok(caller)
        agents.push(caller)
      }
      const names = agents.map((a) => a.agent.name)
      await bus.createQueue(agents[0], { name: queue, lease_s: LEASE_S, max_deliveries: maxDeliveries })
      // A message that exists but is in no queue: 404 for queue operations, not a dead letter for requeue.
      const stranger = (await bus.send(agents[0], { to: names[1], body: 'direct' })).sent.id
      const model = new Model(maxDeliveries)
      const sent: number[] = []
      const idOf = (p: Pick): number => p < 0 || sent.length === 0 ? stranger : sent[p % sent.length]

      for (const [step, cmd] of script.entries()) {
        commands++
        const at = `step ${step}: ${JSON.stringify(cmd)}`
        const me = 'agent' in cmd ? cmd.agent % agentCount : 0
        switch (cmd.kind) {
          case 'send': {
            const { sent: m } = await bus.send(agents[me], { queue, body: `job ${sent.length}`, priority: cmd.priority })
            sent.push(m.id)
            model.entries.push({ id: m.id, rank: RANK[cmd.priority], sender: me, holder: null, until: null, availableAt: now, count: 0, claimedBy: null, ackedBy: null, dead: false })
            break
          }
          case 'claim': {
            const { messages } = await bus.claim(agents[me], queue, { limit: cmd.limit })
            const got = messages.map((c) => ({ id: c.message.id, delivery_count: c.delivery_count, lease_expires_at: c.lease_expires_at }))
            // The invariants, on the bus's own answer: nothing held by another agent, nothing acked, is handed out.
            for (const { id } of got) {
              const e = model.byId(id)
              assert.ok(e, `${at}: claimed ${id}, which is not in the queue`)
              assert.ok(e.holder === null || (e.until as number) <= now, `${at}: claimed ${id}, leased to ${names[e.holder ?? 0]} until ${iso(e.until ?? 0)}`)
              assert.equal(e.ackedBy, null, `${at}: claimed ${id}, acked already`)
            }
            assert.deepEqual(got, model.claim(me, cmd.limit, now), at)
            break
          }
          case 'ack': {
            const ids = cmd.picks.map(idOf)
            const expected = model.asHolder(me, ids, now, (e) => e.ackedBy === me, (todo) => {
              for (const e of todo) Object.assign(e, { ackedBy: me, holder: null, until: null })
              return { acked: todo.length, already_acked: new Set(ids).size - todo.length }
            })
            assert.deepEqual(await outcome(() => bus.ackQueue(agents[me], queue, ids)), expected, at)
            break
          }
          case 'release': {
            const ids = cmd.picks.map(idOf)
            const expected = model.asHolder(me, ids, now, () => false, (todo) => {
              for (const e of todo) Object.assign(e, { holder: null, until: null, availableAt: now + cmd.delay * 1000, dead: e.count >= maxDeliveries })
              const dead = todo.filter((e) => e.dead).length
              return { released: todo.length - dead, dead }
            })
            assert.deepEqual(await outcome(() => bus.release(agents[me], queue, ids, cmd.delay)), expected, at)
            break
          }
          case 'extend': {
            const ids = cmd.picks.map(idOf)
            const until = now + cmd.leaseS * 1000
            const expected = model.asHolder(me, ids, now, () => false, (todo) => {
              for (const e of todo) e.until = until
              return { extended: todo.length, lease_expires_at: iso(until) }
            })
            assert.deepEqual(await outcome(() => bus.extend(agents[me], queue, ids, cmd.leaseS)), expected, at)
            break
          }
          case 'advance':
            now += cmd.ms
            break
          case 'sweep': {
            const { freed, overdue } = await bus.sweep()
            assert.deepEqual({ freed: freed.includes(queue), overdue }, { freed: model.endLeases(now), overdue: [] }, at)
            break
          }
          case 'requeue': {
            const ids = cmd.picks === null ? undefined : cmd.picks.map(idOf)
            const unique = ids === undefined ? undefined : [...new Set(ids)]
            model.endLeases(now)
            const back = model.entries.filter((e) => e.dead && e.ackedBy === null && (unique === undefined || unique.includes(e.id)))
            for (const e of back) Object.assign(e, { dead: false, count: 0, availableAt: now, holder: null, until: null })
            const requeued = back.map((e) => e.id).sort((a, b) => a - b)
            assert.deepEqual(await bus.requeue(agents[me], queue, ids),
              { requeued, not_dead: unique === undefined ? [] : unique.filter((id) => !requeued.includes(id)) }, at)
            break
          }
        }

        // What the bus shows now, against the model.
        const listed = (await bus.listQueues(agents[0])).queues.find((q) => q.name === queue)
        assert.ok(listed, `${at}: queue ${queue} not listed`)
        const counts = { available: listed.available, delayed: listed.delayed, leased: listed.leased, dead: listed.dead }
        assert.deepEqual(counts, model.counts(now), `${at}: counts`)
        const dead = (await bus.listDead(agents[0], queue, { limit: 100 })).dead
        assert.deepEqual(dead.map((d) => ({ id: d.message.id, delivery_count: d.delivery_count, claimed_by: d.claimed_by })),
          model.entries.filter((e) => model.state(e, now) === 'dead')
            .map((e) => ({ id: e.id, delivery_count: e.count, claimed_by: e.claimedBy === null ? null : names[e.claimedBy] })), `${at}: dead letters`)
        let acked = 0
        // Read together: on PostgreSQL each read is a round trip of its own.
        const messages = await Promise.all(model.entries.map((e) => bus.getMessage(agents[e.sender], e.id)))
        for (const [i, e] of model.entries.entries()) {
          const message = messages[i]
          assert.ok('queue_status' in message, `${at}: no queue_status for ${e.id}`)
          const state = model.state(e, now)
          assert.deepEqual(message.queue_status && {
            state: message.queue_status.state,
            delivery_count: message.queue_status.delivery_count,
            claimed_by: message.queue_status.claimed_by,
            acked_by: message.queue_status.acked_by,
            lease_expires_at: message.queue_status.lease_expires_at
          }, {
            state,
            delivery_count: e.count,
            claimed_by: e.claimedBy === null ? null : names[e.claimedBy],
            acked_by: e.ackedBy === null ? null : names[e.ackedBy],
            lease_expires_at: state === 'leased' ? iso(e.until as number) : null
          }, `${at}: queue_status of ${e.id}`)
          if (message.queue_status?.state === 'acked') acked++
        }
        // No message lost: every one sent is somewhere.
        assert.equal(counts.available + counts.delayed + counts.leased + counts.dead + acked, sent.length, `${at}: a message went missing`)
      }
    })

  await fc.assert(property, { numRuns: 25 })
  t.pass(`${run} runs, ${commands} commands, as the model says`)
})
