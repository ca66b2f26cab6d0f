import { deadlinesPassed, markOverdue, type Overdue } from '../db/deadlines.js'
import { expireLeases, leasesEnded } from '../db/queues.js'
import type { BusOptions } from './bus.js'

// Deadlines marked overdue in one round at most; the next round (a second later) takes the rest.
const OVERDUE_BATCH = 1000

export interface SweepResult {
  // Queues whose messages became available again when their leases ended.
  freed: string[]
  // Recipients that missed an ack deadline, now marked overdue; their senders have been told (an `overdue` event).
  overdue: Overdue[]
}

// The time-driven work of the bus, one round: leases that ended free their messages (or make them dead letters), and
// ack deadlines that passed are marked overdue, each once. Each part runs on one node of a cluster at a time
// (exclusively), and events are published after its commit. Run it every second: claims and queue listings see an
// ended lease at once by themselves (db/queues.ts), so a round only wakes the claims waiting for it.
export function createSweep ({ db, exclusively, notifier, claimRows, clock = Date.now }: BusOptions): () => Promise<SweepResult> {
  return async function sweep (): Promise<SweepResult> {
    const now = new Date(clock()).toISOString()
    const freed = await leasesEnded(db, now) ? await exclusively('queue-leases', (trx) => expireLeases(trx, claimRows, now)) ?? [] : []
    for (const queue of freed) notifier.publish({ kind: 'queue', queue })
    const overdue = await deadlinesPassed(db, now) ? await exclusively('ack-deadlines', (trx) => markOverdue(trx, now, OVERDUE_BATCH)) ?? [] : []
    for (const { seq, senderId, agent, ackBy } of overdue) notifier.publish({ kind: 'overdue', senderId, messageId: seq, agent, ackBy })
    return { freed, overdue }
  }
}
