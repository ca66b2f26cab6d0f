import { findAgent, type CallingAgent } from '../db/agents.js'
import { bulk } from '../db/group-commit.js'
import {
  ackMessages, countUnread, getMessage, listHistory, listInbox, listThread, rankOf, recordDelivery, sendMessages, syncBroadcasts,
  type PriorityName, type Sent
} from '../db/messages.js'
import { queueStatus } from '../db/queues.js'
import { topicExists } from '../db/topics.js'
import { AgentNotFound, BadCursor, BadSend, QueueNotFound, TopicNotFound, BadTimestamp, EmptyMessage, IdempotencyConflict, MessageNotFound, MessageTooLarge, ThreadNotFound, Unauthorized } from '../errors.js'
import type { MessageCreate } from '../schemas/message.js'
import { stillAuthorized, type AgentCaller } from './agents.js'
import type { BusOptions } from './bus.js'
import { Watch } from './events.js'
import { kindOf, UNOBSERVED } from './observer.js'
import { decodeCursor, encodeCursor, refuseNul, withinBytes } from './pages.js'

export interface InboxRequest {
  unread?: boolean
  priority?: PriorityName
  limit?: number
  cursor?: string
  // Long-poll: how long to hold an empty answer until a message arrives.
  waitMs?: number
}

export interface HistoryRequest {
  // ISO 8601; since is inclusive, until exclusive.
  since?: string
  until?: string
  // Only the conversation with this agent.
  with?: string
  thread?: number
  topic?: string
  limit?: number
  cursor?: string
}

// A date-time the schema accepted but Date cannot hold (a leap second, 23:59:60) is the client's error, not a 500.
function toIso (value: string | undefined, field: string): string | undefined {
  if (value === undefined) return undefined
  const time = new Date(value)
  if (Number.isNaN(time.getTime())) throw new BadTimestamp(field, value)
  return time.toISOString()
}

// A page as the API answers it. There may be more when the read filled its limit, or when the byte budget cut it short.
function pageOf<T extends { body: string, subject: string | null, data: unknown }> (read: T[], limit: number, cursorAfter: (last: T) => string) {
  const page = withinBytes(read)
  const last = page.at(-1)
  return { messages: page, next_cursor: (page.length === limit || page.length < read.length) && last ? cursorAfter(last) : null }
}

export function messageOperations ({ db, write, notifier, readers, cache, maxMessageBytes, clock = Date.now, observer = UNOBSERVED }: BusOptions) {
  // Before any read of the caller's messages: its copies of the broadcasts sent since it last read (db/messages.ts).
  const sync = (agent: CallingAgent): Promise<number> => syncBroadcasts(db, write, agent)

  // Holds an empty inbox read until a message for the agent is stored, the time is up, the signal aborts (the
  // client went away), or the bus shuts down; then reads again.
  // read answers the page, and the position it read up to.
  async function longPoll<T> (me: AgentCaller, ms: number, signal: AbortSignal | undefined, read: () => Promise<{ page: T[], upTo: number }>): Promise<T[]> {
    const { agent, tokenHash } = me
    const watch = new Watch(notifier, agent.id, (event) => event.kind === 'message', readers, tokenHash)
    const deadline = Date.now() + ms
    const done = observer.opened('poll')
    try {
      if (!await stillAuthorized(db, agent.id, tokenHash)) watch.end('revoked')
      let { page, upTo } = await read()
      while (page.length === 0 && !watch.closed && !signal?.aborted && Date.now() < deadline) {
        // Until an event, or the backstop (bus/backstop.ts), wakes it, or the time is up.
        watch.caughtUp(upTo)
        await watch.wait(deadline - Date.now(), signal)
        if (watch.ended === 'revoked') break
        ;({ page, upTo } = await read())
      }
      // The token this poll was made with no longer works: it must not be answered with the agent's mail.
      if (watch.ended === 'revoked') throw new Unauthorized('token revoked while waiting')
      return page
    } finally {
      watch.close()
      done()
    }
  }

  return {
    // Stores a direct message (`to`) or a broadcast (no `to`). An idempotency key makes a retry safe: the same key
    // with the same request answers the first message again (replayed) instead of storing a duplicate.
    // With `topic`, publishes to the topic's subscribers; with `queue`, puts the message on a work queue.
    async send ({ agent: sender }: AgentCaller, input: MessageCreate, idempotencyKey?: string): Promise<{ sent: Sent, replayed: boolean }> {
      const { to, topic, queue, ack_within_s: ackWithinS, body, subject, priority = 'normal', reply_to: replyTo, data } = input
      if ([to, topic, queue].filter((v) => v !== undefined).length > 1) {
        throw new BadSend('to, topic and queue are alternatives: give one of them, or none to broadcast')
      }
      if (ackWithinS !== undefined && to === undefined) throw new BadSend('ack_within_s applies to direct messages (to) only')
      if (body === '' && (data === undefined || Object.keys(data).length === 0)) throw new EmptyMessage()
      refuseNul({ body, subject, 'Idempotency-Key': idempotencyKey })
      // Everything the message stores counts against the limit, not only its body.
      const bytes = Buffer.byteLength(body) + Buffer.byteLength(subject ?? '') + (data === undefined ? 0 : Buffer.byteLength(JSON.stringify(data)))
      if (bytes > maxMessageBytes) throw new MessageTooLarge(bytes, maxMessageBytes)
      // A reply to a broadcast the sender has not read yet needs the sender's copy of it.
      if (replyTo !== undefined) await sync(sender)
      const outcome = await write(bulk(sendMessages, {
        senderId: sender.id,
        senderName: sender.name,
        to: to === undefined ? undefined : Array.isArray(to) ? to : [to],
        body,
        subject,
        priority,
        replyTo,
        data,
        idempotencyKey,
        topic,
        queue,
        ackWithinS,
        now: new Date(clock()).toISOString()
      }), { ordered: true })
      if ('unknownRecipients' in outcome) throw new AgentNotFound(outcome.unknownRecipients.join(', '))
      if ('topicNotFound' in outcome) throw new TopicNotFound(outcome.topicNotFound)
      if ('queueNotFound' in outcome) throw new QueueNotFound(outcome.queueNotFound)
      if ('replyToNotFound' in outcome) throw new MessageNotFound(`reply_to ${outcome.replyToNotFound}`)
      if ('idempotencyConflict' in outcome) throw new IdempotencyConflict(idempotencyKey, outcome.idempotencyConflict)
      const { sent, replayed, recipientIds, webhooks } = outcome
      // After the commit: readers pull from the database, so they must not hear of rows they cannot see yet.
      if (!replayed && queue !== undefined) notifier.publish({ kind: 'queue', queue })
      else if (!replayed) notifier.publish({ kind: 'message', seq: sent.id, senderId: sender.id, recipientIds, webhooks })
      if (!replayed) observer.stored(kindOf(input))
      return { sent, replayed }
    },

    // A page of the caller's inbox, most urgent first; what it answers counts as delivered.
    async inbox (me: AgentCaller, { unread, priority, limit = 50, cursor, waitMs = 0 }: InboxRequest, signal?: AbortSignal) {
      const { agent } = me
      const after = cursor === undefined ? undefined : decodeCursor(cursor, 2)
      // The first part is a priority rank: 0 (normal) to 2 (urgent).
      if (after !== undefined && after[0] > 2) throw new BadCursor()
      const readPage = async () => {
        const upTo = await sync(agent)
        return { page: await listInbox(db, cache, agent.id, { unread, priority, limit, after: after && { rank: after[0], seq: after[1] }, upToSeq: upTo }), upTo }
      }
      let read = (await readPage()).page
      if (read.length === 0 && waitMs > 0) read = await longPoll(me, waitMs, signal, readPage)
      const page = pageOf(read, limit, (last) => encodeCursor(rankOf(last.priority), last.id))
      // Only what is answered counts as delivered; the rest comes with the next page.
      observer.delivered('inbox', await recordDelivery(write, agent.id, page.messages))
      return page
    },

    // Marks messages read and tells their senders (read receipts). Ids not in the caller's inbox are listed back.
    async ack ({ agent }: AgentCaller, ids: number[]) {
      await sync(agent)
      const readAt = new Date(clock()).toISOString()
      const { newlyRead, ...result } = await write((trx) => ackMessages(trx, agent.id, ids, readAt))
      for (const { seq, senderId } of newlyRead) {
        notifier.publish({ kind: 'receipt', senderId, messageId: seq, agent: agent.name, readAt })
      }
      observer.acked('message', newlyRead.length)
      return result
    },

    // One message the caller sent or received, with read receipts for its sender.
    async getMessage ({ agent }: AgentCaller, id: number) {
      await sync(agent)
      const message = await getMessage(db, agent.id, id)
      if (!message) throw new MessageNotFound(String(id))
      // The sender of a queue message sees who claimed it, how often, and whether it was acked or died.
      if (message.queue !== null && message.from === agent.name) {
        const status = await queueStatus(db, id, new Date(clock()).toISOString())
        if (status !== undefined) return { ...message, queue_status: status }
      }
      return message
    },

    async getThread ({ agent }: AgentCaller, threadId: number) {
      await sync(agent)
      const list = await listThread(db, agent.id, threadId)
      if (list.length === 0) throw new ThreadNotFound(String(threadId))
      return { thread_id: threadId, messages: list }
    },

    // What the caller sent or received, in the order stored, archived messages included.
    async history ({ agent }: AgentCaller, { since, until, with: other, thread, topic, limit = 50, cursor }: HistoryRequest) {
      if (topic !== undefined && !await topicExists(db, topic)) throw new TopicNotFound(topic)
      let withAgentId: number | undefined
      if (other !== undefined) {
        const row = await findAgent(db, other)
        if (!row) throw new AgentNotFound(other)
        withAgentId = row.id
      }
      // No further than the horizon the sync reached: a message stored meanwhile with a lower seq than one read
      // here (a broadcast not yet copied, another node's commit) would be behind the cursor for ever.
      const upToSeq = await sync(agent)
      const read = await listHistory(db, agent.id, {
        upToSeq,
        since: toIso(since, 'since'),
        until: toIso(until, 'until'),
        withAgentId,
        thread,
        topic,
        limit,
        afterSeq: cursor === undefined ? undefined : decodeCursor(cursor, 1)[0]
      })
      return pageOf(read, limit, (last) => encodeCursor(last.id))
    },

    async unreadCount ({ agent }: AgentCaller): Promise<number> {
      await sync(agent)
      return countUnread(db, agent.id)
    }
  }
}
