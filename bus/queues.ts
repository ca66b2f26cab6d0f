import type { Transaction } from 'kysely'
import { messagesByIds } from '../db/messages.js'
import {
  ackEntries, claimable, claimEntries, createQueue, expireLeases, extendEntries, findQueue, LeaseChanged, listDead, listQueues, releaseEntries, requeueDead,
  type LeaseOutcome, type LeaseProblem, type QueueRow
} from '../db/queues.js'
import type { Database } from '../db/schema.js'
import { LeaseConflict, MessageNotFound, QueueNotFound, QueueTaken, Unauthorized } from '../errors.js'
import type { QueueCreate } from '../schemas/queue.js'
import { stillAuthorized, type AgentCaller } from './agents.js'
import type { BusOptions } from './bus.js'
import { Watch } from './events.js'
import { UNOBSERVED } from './observer.js'
import { decodeCursor, encodeCursor, refuseNul } from './pages.js'

export interface ClaimRequest {
  limit?: number
  // Long-poll: how long to hold an empty claim until work arrives.
  waitMs?: number
  leaseS?: number
}

// A waiting claim looks again at least this often, whatever the events: a lost wake-up costs at most this much, and a
// lease that ends is seen within it.
const CLAIM_RECHECK_MS = 1000

// What a 409 or 404 says: every id the request could not act on, and why.
function describe (problem: LeaseProblem): string {
  switch (problem.problem) {
    case 'held': return `message ${problem.id} is leased to ${problem.holder} until ${problem.until}`
    case 'expired': return `the lease on message ${problem.id} expired at ${problem.at}: it may be with another agent now`
    case 'not_leased': return `message ${problem.id} is not leased to the caller (it is ${problem.state})`
    case 'not_found': return `message ${problem.id}`
  }
}

// Work queues: competing consumers. Sending is a send with `queue` (bus/messages.ts); the rest is here. Times come
// from the bus's clock, so leases can be tested without sleeping.
export function queueOperations ({ db, write, notifier, cache, claimRows, clock = Date.now, observer = UNOBSERVED }: BusOptions) {
  const iso = (ms: number): string => new Date(ms).toISOString()

  async function queueNamed (name: string): Promise<QueueRow> {
    const queue = await findQueue(db, name)
    if (queue === undefined) throw new QueueNotFound(name)
    return queue
  }

  // A write on leases; a lease that changed under it (db/queues.ts LeaseChanged) is the client's 409 too.
  // The queue itself is looked up only when an id was not found in it (an unknown queue is a 404 of its own), not on
  // every ack.
  async function onLeases<T> (queue: string, work: (trx: Transaction<Database>) => Promise<LeaseOutcome<T>>): Promise<T> {
    let outcome: LeaseOutcome<T>
    try {
      outcome = await write(work)
    } catch (err) {
      if (err instanceof LeaseChanged) throw new LeaseConflict(err.message)
      throw err
    }
    if (!outcome.ok && outcome.problems.some((p) => p.problem === 'not_found')) await queueNamed(queue)
    return valueOf(queue, outcome)
  }

  function valueOf<T> (queue: string, outcome: LeaseOutcome<T>): T {
    if (outcome.ok) return outcome.value
    const missing = outcome.problems.filter((p) => p.problem === 'not_found')
    if (missing.length > 0) throw new MessageNotFound(`in queue ${queue}: ${missing.map((p) => p.id).join(', ')}`)
    throw new LeaseConflict(outcome.problems.map(describe).join('; '))
  }

  return {
    async createQueue ({ agent }: AgentCaller, { name, description, lease_s: leaseS = 60, max_deliveries: maxDeliveries = 5 }: QueueCreate) {
      refuseNul({ description })
      const row = { name, description: description ?? null, lease_s: leaseS, max_deliveries: maxDeliveries, created_by: agent.id, created_at: iso(clock()) }
      if (!await write((trx) => createQueue(trx, row))) throw new QueueTaken(name)
      return { ...row, created_by: agent.name, available: 0, delayed: 0, leased: 0, dead: 0 }
    },

    async listQueues (_caller: AgentCaller) {
      return { queues: await listQueues(db, iso(clock())) }
    },

    // Leases up to `limit` available messages to the caller, most urgent and then oldest first. With waitMs, an empty
    // claim waits for work (a send, a release, a lease that ends) until the time is up or the signal aborts.
    async claim (me: AgentCaller, name: string, { limit = 1, waitMs = 0, leaseS }: ClaimRequest, signal?: AbortSignal) {
      const { agent, tokenHash } = me
      const queue = await queueNamed(name)
      const leaseMs = (leaseS ?? queue.lease_s) * 1000
      // The time is read when the write runs, not when it is queued: a lease starts when its row is taken.
      const attempt = async () => write((trx) => {
        const at = clock()
        return claimEntries(trx, claimRows, name, agent.id, limit, iso(at), iso(at + leaseMs))
      })
      let leases = await attempt()
      if (leases.length === 0 && waitMs > 0) {
        // Not one of the agent's readers (Readers): a claim that waits must not end the agent's streams.
        const watch = new Watch(notifier, agent.id, (event) => event.kind === 'queue' && event.queue === name)
        const deadline = Date.now() + waitMs
        const done = observer.opened('claim')
        try {
          while (leases.length === 0 && !watch.closed && signal?.aborted !== true && Date.now() < deadline) {
            await watch.wait(Math.min(CLAIM_RECHECK_MS, deadline - Date.now()), signal)
            if (watch.closed) break
            // No work for a token that stopped working while it waited (a revocation event may have been lost).
            if (!await stillAuthorized(db, agent.id, tokenHash)) watch.end('revoked')
            // A read first: a claim that looks again every second writes only when there is something to take.
            else if (await claimable(db, name, iso(clock()))) leases = await attempt()
          }
        } finally {
          watch.close()
          done()
        }
        if (watch.ended === 'revoked') throw new Unauthorized('token revoked while waiting')
      }
      const messages = await messagesByIds(db, cache, leases.map((l) => l.seq), iso(clock()))
      observer.delivered('claim', leases.length)
      return { messages: leases.map((lease, i) => ({ message: messages[i], delivery_count: lease.delivery_count, lease_expires_at: lease.lease_expires_at })) }
    },

    // Done with these: they leave the queue. Every id must be leased to the caller, its lease still running.
    async ackQueue ({ agent }: AgentCaller, name: string, ids: number[]) {
      const now = iso(clock())
      const result = await onLeases(name, (trx) => ackEntries(trx, name, agent.id, ids, now))
      observer.acked('queue', result.acked)
      return result
    },

    // Gives work back unfinished: available again (after delaySeconds), or dead once it has had its max_deliveries.
    async release ({ agent }: AgentCaller, name: string, ids: number[], delaySeconds = 0) {
      const at = clock()
      const result = await onLeases(name, (trx) => releaseEntries(trx, name, agent.id, ids, iso(at), iso(at + delaySeconds * 1000)))
      if (result.released > 0) notifier.publish({ kind: 'queue', queue: name })
      return result
    },

    // More time: the leases now end leaseSeconds from now.
    async extend ({ agent }: AgentCaller, name: string, ids: number[], leaseSeconds: number) {
      const at = clock()
      return onLeases(name, (trx) => extendEntries(trx, name, agent.id, ids, iso(at), iso(at + leaseSeconds * 1000)))
    },

    async listDead (_caller: AgentCaller, name: string, { limit = 50, cursor }: { limit?: number, cursor?: string }) {
      await queueNamed(name)
      const rows = await listDead(db, name, iso(clock()), cursor === undefined ? 0 : decodeCursor(cursor, 1)[0], limit)
      const messages = await messagesByIds(db, cache, rows.map((r) => Number(r.message_seq)), iso(clock()))
      const dead = rows.map((row, i) => ({
        message: { ...messages[i], delivered_at: null }, delivery_count: Number(row.delivery_count), claimed_by: row.claimed_by, dead_at: row.dead_at
      }))
      const last = rows.at(-1)
      return { dead, next_cursor: rows.length === limit && last !== undefined ? encodeCursor(Number(last.message_seq)) : null }
    },

    // Dead letters back in the queue, with a fresh delivery count: those named, or all.
    async requeue (_caller: AgentCaller, name: string, ids?: number[]) {
      await queueNamed(name)
      const now = iso(clock())
      const { freed, requeued } = await write(async (trx) => {
        // Leases that have ended first: a message whose last lease ended is a dead letter now, swept or not.
        const freed = await expireLeases(trx, claimRows, now, name)
        return { freed, requeued: await requeueDead(trx, name, ids === undefined ? undefined : [...new Set(ids)], now) }
      })
      if (requeued.length > 0 || freed.length > 0) notifier.publish({ kind: 'queue', queue: name })
      const back = new Set(requeued)
      return { requeued: requeued.sort((a, b) => a - b), not_dead: ids === undefined ? [] : [...new Set(ids)].filter((id) => !back.has(id)) }
    }
  }
}
