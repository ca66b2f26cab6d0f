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
// - a reader whose agent got a message stored since the last round is woken, and every reader when a broadcast was;
//   a reader already woken by the event reads again and finds nothing new.
// Positions become visible in order (the storage sees to it), so the messages of a round are exactly those past
// the newest position the previous round saw. The first round wakes every reader: it has no previous one.
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
      for (const watch of open) watch.poke()
      return
    }
    const got = new Set(await recipientsBetween(db, since, latest))
    for (const watch of open) if (got.has(watch.agentId)) watch.poke()
  }
}
