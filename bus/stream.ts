import { markSeen } from '../db/agents.js'
import { listInbox, listUnreadAfter, rankOf, recordDelivery, syncBroadcasts, type MessageView } from '../db/messages.js'
import { BadEventId, Unauthorized } from '../errors.js'
import { stillAuthorized, type AgentCaller } from './agents.js'
import type { BusOptions } from './bus.js'
import { Watch, type WatchEnd } from './events.js'
import { UNOBSERVED } from './observer.js'

// A position in the stream's order. The stream sends the unread backlog first, in inbox order, up to the newest
// message at connect time (`upTo`), then everything stored after it in the order stored. An event id names a
// position, so a reconnect continues exactly after it: `upTo.rank.seq` inside the backlog, `seq` in the live part.
type Position = { phase: 'backlog', upTo: number, rank: number, seq: number } | { phase: 'live', seq: number }

const eventId = (p: Position): string => p.phase === 'backlog' ? `${p.upTo}.${p.rank}.${p.seq}` : String(p.seq)

function parseEventId (id: string): Position {
  const parts = id.split('.').map((v) => /^\d{1,15}$/.test(v) ? Number(v) : NaN)
  if (parts.some(Number.isNaN)) throw new BadEventId(id)
  if (parts.length === 1) return { phase: 'live', seq: parts[0] }
  if (parts.length === 3 && parts[1] <= 2) return { phase: 'backlog', upTo: parts[0], rank: parts[1], seq: parts[2] }
  throw new BadEventId(id)
}

// Each stream reads the database in batches that hold at most about 1 MiB of bodies (and at most 100 messages):
// what a stalled reader pins in memory stays small however large the messages are.
const BATCH_BYTES = 1 << 20
// Receipt and presence events waiting for a reader; past this the reader is too slow and is cut off.
const MAX_EXTRA = 1000

export interface StreamRequest {
  // Resume after this event id (Last-Event-ID).
  lastEventId?: string
  // Also send `receipt` events (a recipient read a message the caller sent) and `overdue` events (a recipient missed
  // its ack deadline), and `presence` events (another agent came online or went offline).
  receipts?: boolean
  presence?: boolean
}

// A `message` carries the id to resume after it; `receipt` and `presence` are signals of the moment, not replayed.
export interface StreamItem { id?: string, event: 'message' | 'receipt' | 'overdue' | 'presence', data: unknown }

// Why a stream ended by itself: its watch ended (WatchEnd), or its reader fell more than MAX_EXTRA receipt and
// presence events behind.
export type StreamEnd = WatchEnd | 'overflow'

// The unread backlog, then each new message as it is stored, until the stream ends by itself (`ended`) or the
// signal it was opened with aborts.
export interface MessageStream extends AsyncIterable<StreamItem> {
  readonly ended: StreamEnd | undefined
  // Stops listening and marks the agent seen. Call it once the stream is no longer read, however it ended.
  close: () => Promise<void>
}

export function streamOperations ({ db, write, notifier, readers, cache, maxMessageBytes, observer = UNOBSERVED }: BusOptions) {
  const BATCH = Math.max(1, Math.min(100, Math.floor(BATCH_BYTES / maxMessageBytes)))

  return {
    // An unknown event id, or a token revoked since it was checked, throws here, before anything is sent.
    async openStream (me: AgentCaller, { lastEventId, receipts = false, presence = false }: StreamRequest, signal: AbortSignal): Promise<MessageStream> {
      const { agent, tokenHash } = me
      // Every read first makes the agent's copies of new broadcasts, and reads no further than where that left off.
      let synced = 0
      const sync = async (): Promise<number> => (synced = await syncBroadcasts(db, write, agent))
      const resumed = lastEventId === undefined ? undefined : parseEventId(lastEventId)
      // A new stream's backlog ends at the newest message at connect time.
      const horizon = await sync()
      let position: Position = resumed ?? { phase: 'backlog', upTo: horizon, rank: 3, seq: 0 }

      const watch = new Watch(notifier, agent.id, (event) => event.kind === 'message', readers, tokenHash)
      if (!await stillAuthorized(db, agent.id, tokenHash)) {
        watch.close()
        throw new Unauthorized('invalid or revoked token')
      }
      const done = observer.opened('stream')
      // Receipt and presence events are not in the database, so they queue here, boundedly.
      const extra: StreamItem[] = []
      let overflow = false
      const unsubscribeExtra = notifier.subscribe(agent.id, (event) => {
        if (event.kind === 'receipt' && receipts) {
          extra.push({ event: 'receipt', data: { message_id: event.messageId, agent: event.agent, read_at: event.readAt } })
        } else if (event.kind === 'overdue' && receipts) {
          extra.push({ event: 'overdue', data: { message_id: event.messageId, agent: event.agent, ack_by: event.ackBy } })
        } else if (event.kind === 'presence' && presence && event.agent !== agent.name) {
          extra.push({ event: 'presence', data: { agent: event.agent, status: event.status } })
        } else {
          return
        }
        overflow ||= extra.length > MAX_EXTRA
        watch.poke()
      })
      let stopped: 'overflow' | undefined
      let closed = false
      // A revoked token stops the stream between two events, not only between two batches.
      const over = (): boolean => watch.closed || signal.aborted

      const next = async (): Promise<MessageView[]> => {
        if (position.phase === 'live') return listUnreadAfter(db, cache, agent.id, position.seq, await sync(), BATCH)
        const page = await listInbox(db, cache, agent.id, {
          unread: true, limit: BATCH, upToSeq: position.upTo, after: { rank: position.rank, seq: position.seq }
        })
        if (page.length > 0) return page
        position = { phase: 'live', seq: position.upTo }
        return listUnreadAfter(db, cache, agent.id, position.seq, await sync(), BATCH)
      }

      return {
        get ended (): StreamEnd | undefined { return watch.ended ?? stopped },

        async * [Symbol.asyncIterator] (): AsyncGenerator<StreamItem> {
          while (!over()) {
            if (overflow) {
              stopped = 'overflow'
              return
            }
            for (let pending = extra.shift(); pending !== undefined; pending = extra.shift()) {
              if (over()) return
              yield pending
            }
            const batch = await next()
            for (const message of batch) {
              position = position.phase === 'live'
                ? { phase: 'live', seq: message.id }
                : { ...position, rank: rankOf(message.priority), seq: message.id }
              if (over()) return
              yield { id: eventId(position), event: 'message', data: message }
            }
            if (over()) return
            observer.delivered('stream', await recordDelivery(write, agent.id, batch))
            // Everything up to the last sync has been read: until an event, or the backstop (bus/backstop.ts), wakes it.
            if (batch.length === 0) {
              watch.caughtUp(synced)
              await watch.wait(Infinity, signal)
            }
          }
        },

        // The offline timer starts when the stream closes.
        async close (): Promise<void> {
          if (closed) return
          closed = true
          watch.close()
          done()
          unsubscribeExtra()
          await write((trx) => markSeen(trx, agent.id, new Date().toISOString()))
        }
      }
    }
  }
}

