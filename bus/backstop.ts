import type { Kysely } from 'kysely'
import { currentTokenHashes } from '../db/agents.js'
import { latestPosition, recipientsBetween } from '../db/messages.js'
import type { Database } from '../db/schema.js'
import type { Readers } from './events.js'

// The backstop behind notifications. A waiting reader (stream, long-poll) is woken by events, and events may be
// lost: a node's LISTEN connection drops, a node dies between its commit and its NOTIFY. The database stays the
// truth, so a lost event must cost latency, never a message, and a lost revocation must not leave a revoked token
// reading. Each round (the bus plugin runs one every few seconds) does for all the readers of this node at once what
// each reader would otherwise do on a timer of its own, in a few queries whatever their number:
// - a reader whose token no longer works (rotated, agent deregistered) ends;
// - a reader is woken when a message for it (a direct copy, a broadcast, a message of a topic it subscribed to) was
//   stored past the position it has read everything up to (Watch.caughtUpTo); the event woke it in nearly every case,
//   and it has read past it already, so a round wakes no one unless an event was lost;
// - every other reader is known to have nothing new up to the newest message, and is moved up to it, so that the
//   next round looks only at what is stored after this one.
// Positions become visible in order (the storage sees to it): what lies below the newest position is all there is.
export function createBackstop (db: Kysely<Database>, readers: Readers): () => Promise<void> {
  return async function recheck (): Promise<void> {
    const open = readers.all()
    if (open.length === 0) return
    const latest = await latestPosition(db)

    const tokens = await currentTokenHashes(db, [...new Set(open.map((watch) => watch.agentId))])
    for (const watch of open) {
      if (watch.tokenHash !== undefined && tokens.get(watch.agentId) !== watch.tokenHash) watch.end('revoked')
    }

    const from = Math.min(...open.map((watch) => watch.caughtUpTo))
    if (from >= latest) return
    const { broadcast, agents } = await recipientsBetween(db, from, latest)
    for (const watch of open) {
      if (Math.max(broadcast, agents.get(watch.agentId) ?? 0) > watch.caughtUpTo) watch.poke()
      else watch.caughtUp(latest)
    }
  }
}
