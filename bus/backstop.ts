import type { Kysely } from 'kysely'
import { currentTokenHashes } from '../db/agents.js'
import { latestPositions, recipientsBetween } from '../db/messages.js'
import type { Database } from '../db/schema.js'
import type { Readers } from './events.js'

// The backstop behind notifications. A waiting reader (stream, long-poll) is woken by events, and events may be
// lost: a node's LISTEN connection drops, a node dies between its commit and its NOTIFY. The database stays the
// truth, so a lost event must cost latency, never a message, and a lost revocation must not leave a revoked token
// reading. Each round (the bus plugin runs one every few seconds) does for all the readers of this node at once what
// each reader would otherwise do on a timer of its own, in three queries whatever their number:
// - a reader whose token no longer works (rotated, agent deregistered) ends;
// - a reader whose agent got a message stored since the last round is woken, and every reader when a broadcast was,
//   unless the reader has already read past it (woken by the event, as readers nearly always are): a round costs no
//   reads when no event was lost.
// Positions become visible in order (the storage sees to it), so the messages of a round are exactly those past
// the newest position the previous round saw. The first round wakes every reader that has not read up to the newest message: it has no round before it.
export function createBackstop (db: Kysely<Database>, readers: Readers): () => Promise<void> {
  let seen: number | undefined
  return async function recheck (): Promise<void> {
    const { latest, broadcast } = await latestPositions(db)
    const open = readers.all()
    const since = seen
    seen = latest
    if (open.length === 0) return

    const tokens = await currentTokenHashes(db, [...new Set(open.map((watch) => watch.agentId))])
    for (const watch of open) {
      if (watch.tokenHash !== undefined && tokens.get(watch.agentId) !== watch.tokenHash) watch.end('revoked')
    }

    if (since !== undefined && latest <= since) return
    if (since === undefined || broadcast > since) {
      for (const watch of open) if (watch.caughtUpTo < latest) watch.poke()
      return
    }
    const got = await recipientsBetween(db, since, latest)
    for (const watch of open) if ((got.get(watch.agentId) ?? 0) > watch.caughtUpTo) watch.poke()
  }
}
