import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { findAgent, type CallingAgent } from '../db/agents.js'
import { ackMessages, getMessage, listHistory, listInbox, listThread, rankOf, recordDelivery, sendMessage, syncBroadcasts } from '../db/messages.js'
import { AgentNotFound, BadCursor, BadTimestamp, EmptyMessage, IdempotencyConflict, MessageNotFound, MessageTooLarge, ThreadNotFound, Unauthorized } from '../errors.js'
import { agentOf, stillAuthorized } from '../plugins/auth.js'
import { Watch } from '../plugins/fanout.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'
import {
  AckBody, AckResult, HistoryQuery, InboxQuery, Message, MessageCreate, MessagePage, MessageParams, MessageSent, Thread
} from '../schemas/message.js'

export interface MessagesOptions {
  maxMessageBytes: number
}

const security = [{ bearer: [] }]
const tags = ['messages']

// Cursors are opaque to clients: base64url of the keyset position of the last item returned. Only the exact
// spelling the bus gives out is accepted ("99.0", " 1.1" or "0x1.1" would name the same position by accident).
const encodeCursor = (...parts: number[]): string => Buffer.from(parts.join('.')).toString('base64url')
function decodeCursor (cursor: string, parts: number): number[] {
  const text = Buffer.from(cursor, 'base64url').toString()
  const values = text.split('.')
  if (values.length !== parts || !values.every((v) => /^(0|[1-9]\d{0,14})$/.test(v)) || encodeCursor(...values.map(Number)) !== cursor) throw new BadCursor()
  return values.map(Number)
}

// A page answers at most about PAGE_BYTES of message text and data (and always at least one message), whatever its
// limit: 500 messages at the size limit would otherwise be a 32 MiB answer, held in memory while it is written.
const PAGE_BYTES = 4 << 20
function withinBytes<T extends { body: string, subject: string | null, data: unknown }> (page: T[]): T[] {
  let bytes = 0
  for (let i = 0; i < page.length; i++) {
    const m = page[i]
    bytes += m.body.length + (m.subject?.length ?? 0) + (m.data === null ? 0 : JSON.stringify(m.data).length)
    if (bytes > PAGE_BYTES && i > 0) return page.slice(0, i)
  }
  return page
}

// A date-time the schema accepted but Date cannot hold (a leap second, 23:59:60) is the client's error, not a 500.
function toIso (value: string | undefined, field: string): string | undefined {
  if (value === undefined) return undefined
  const time = new Date(value)
  if (Number.isNaN(time.getTime())) throw new BadTimestamp(field, value)
  return time.toISOString()
}

const messages: FastifyPluginAsyncTypebox<MessagesOptions> = async (app, { maxMessageBytes }) => {
  const { db, fanout, readers, write, messageCache } = app
  // Before any read of the caller's messages: its copies of the broadcasts sent since it last read (db/messages.ts).
  const sync = (agent: CallingAgent): Promise<number> => syncBroadcasts(db, write, agent)

  // Holds an empty inbox read until a message for the agent is stored, the time is up, the client goes away,
  // or the bus shuts down; then reads again.
  async function longPoll<T> (request: FastifyRequest, agentId: number, ms: number, reply: FastifyReply, read: () => Promise<T[]>): Promise<T[]> {
    const gone = new AbortController()
    const onClose = (): void => gone.abort()
    reply.raw.once('close', onClose)
    const watch = new Watch(fanout, agentId, (event) => event.kind === 'message', readers)
    const deadline = Date.now() + ms
    try {
      if (!await stillAuthorized(db, request)) watch.end('revoked')
      let page = await read()
      while (page.length === 0 && !watch.closed && !gone.signal.aborted && Date.now() < deadline) {
        if (await watch.wait(deadline - Date.now(), gone.signal)) page = await read()
      }
      // The token this poll was made with no longer works: it must not be answered with the agent's mail.
      if (watch.ended === 'revoked') throw new Unauthorized('token revoked while waiting')
      return page
    } finally {
      watch.close()
      reply.raw.off('close', onClose)
    }
  }

  app.post('/send', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'sendMessage',
      tags,
      summary: 'Send a direct or broadcast message',
      description: 'The sender is the token\'s agent. Omit `to` to broadcast to every other agent. ' +
        'An Idempotency-Key header makes a retry safe: the same key with the same request answers the first message again ' +
        '(with `Idempotent-Replayed: true`) instead of storing a duplicate; the same key with a different request is a 422. ' +
        'A key is remembered while its message is live, at least BUS_ARCHIVE_AFTER_S (7 days by default).',
      security,
      headers: Type.Object({
        'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Any unique string per logical send.', examples: ['job-42'] }))
      }),
      body: ref(MessageCreate),
      response: {
        201: {
          ...ref(MessageSent, 'Stored and delivered to every recipient\'s inbox; or, for a repeated Idempotency-Key, the message it stored first.'),
          headers: { 'idempotent-replayed': { type: 'string', enum: ['true'], description: 'Present when this answers a repeated Idempotency-Key: nothing new was stored.' } }
        },
        ...authErrors,
        404: errorResponse('A recipient or the reply_to message does not exist; nothing was stored.'),
        413: errorResponse('Body, subject and data together are larger than BUS_MAX_MESSAGE_BYTES; nothing was stored.'),
        422: errorResponse('The Idempotency-Key was used before for a different request; nothing was stored.')
      }
    }
  }, async (request, reply) => {
    const sender = agentOf(request)
    const { to, body, subject, priority = 'normal', reply_to: replyTo, data } = request.body
    if (body === '' && (data === undefined || Object.keys(data).length === 0)) throw new EmptyMessage()
    // Everything the message stores counts against the limit, not only its body.
    const bytes = Buffer.byteLength(body) + Buffer.byteLength(subject ?? '') + (data === undefined ? 0 : Buffer.byteLength(JSON.stringify(data)))
    if (bytes > maxMessageBytes) throw new MessageTooLarge(bytes, maxMessageBytes)
    // A reply to a broadcast the sender has not read yet needs the sender's copy of it.
    if (replyTo !== undefined) await sync(sender)
    const outcome = await write((trx) => sendMessage(trx, {
      senderId: sender.id,
      senderName: sender.name,
      to: to === undefined ? undefined : Array.isArray(to) ? to : [to],
      body,
      subject,
      priority,
      replyTo,
      data,
      idempotencyKey: request.headers['idempotency-key'],
      now: new Date().toISOString()
    }))
    if ('unknownRecipients' in outcome) throw new AgentNotFound(outcome.unknownRecipients.join(', '))
    if ('replyToNotFound' in outcome) throw new MessageNotFound(`reply_to ${outcome.replyToNotFound}`)
    if ('idempotencyConflict' in outcome) throw new IdempotencyConflict(request.headers['idempotency-key'], outcome.idempotencyConflict)
    const { sent, replayed, recipientIds, webhooks } = outcome
    if (replayed) reply.header('idempotent-replayed', 'true')
    // After the commit: readers pull from the database, so they must not hear of rows they cannot see yet.
    if (!replayed) fanout.publish({ kind: 'message', seq: sent.id, senderId: sender.id, recipientIds, webhooks })
    request.log.info({ id: sent.id, recipients: sent.recipients, replayed }, 'message sent')
    reply.code(201)
    return sent
  })

  app.get('/inbox', {
    onRequest: app.requireAgent,
    // A HEAD would mark the page delivered without sending it.
    exposeHeadRoute: false,
    schema: {
      operationId: 'listInbox',
      tags,
      summary: 'The caller\'s messages, most urgent first',
      description: 'Order: urgent, then high, then normal; oldest first within each. Archived messages are in /history only. ' +
        'With `wait`, an empty answer is held until a matching message arrives or the time is up (long-poll).',
      security,
      querystring: InboxQuery,
      response: { 200: ref(MessagePage, 'A page of the inbox.'), ...authErrors }
    }
  }, async (request, reply) => {
    const agent = agentOf(request)
    const { unread, priority, limit = 50, cursor, wait = 0 } = request.query
    const after = cursor === undefined ? undefined : decodeCursor(cursor, 2)
    // The first part is a priority rank: 0 (normal) to 2 (urgent).
    if (after !== undefined && after[0] > 2) throw new BadCursor()
    const readPage = async () => listInbox(db, messageCache, agent.id, { unread, priority, limit, after: after && { rank: after[0], seq: after[1] }, upToSeq: await sync(agent) })
    let read = await readPage()
    if (read.length === 0 && wait > 0) read = await longPoll(request, agent.id, wait * 1000, reply, readPage)
    const page = withinBytes(read)
    // Only what is answered counts as delivered; the rest comes with the next page.
    await recordDelivery(write, agent.id, page)
    const last = page.at(-1)
    return {
      messages: page,
      next_cursor: (page.length === limit || page.length < read.length) && last ? encodeCursor(rankOf(last.priority), last.id) : null
    }
  })

  app.post('/ack', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'ackMessages',
      tags,
      summary: 'Mark messages read (read receipts)',
      description: 'Idempotent. Ids that are not in the caller\'s inbox are listed back, not an error.',
      security,
      body: ref(AckBody),
      response: { 200: ref(AckResult, 'What was marked read.'), ...authErrors }
    }
  }, async (request) => {
    const agent = agentOf(request)
    await sync(agent)
    const readAt = new Date().toISOString()
    const { newlyRead, ...result } = await write((trx) => ackMessages(trx, agent.id, request.body.ids, readAt))
    for (const { seq, senderId } of newlyRead) {
      fanout.publish({ kind: 'receipt', senderId, messageId: seq, agent: agent.name, readAt })
    }
    return result
  })

  app.get('/messages/:id', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'getMessage',
      tags,
      summary: 'One message, with read receipts for its sender',
      description: 'Only its sender and its recipients can see a message; anyone else gets 404.',
      security,
      params: MessageParams,
      response: { 200: ref(Message, 'The message.'), ...authErrors, 404: errorResponse('No such message visible to the caller.') }
    }
  }, async (request) => {
    const agent = agentOf(request)
    await sync(agent)
    const message = await getMessage(db, agent.id, request.params.id)
    if (!message) throw new MessageNotFound(String(request.params.id))
    return message
  })

  app.get('/threads/:id', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'getThread',
      tags,
      summary: 'A reply chain in order',
      description: 'The id is the thread_id (the id of the message that started it). Lists the messages of the thread the caller sent or received.',
      security,
      params: MessageParams,
      response: { 200: ref(Thread, 'The thread, oldest first.'), ...authErrors, 404: errorResponse('No such thread visible to the caller.') }
    }
  }, async (request) => {
    const agent = agentOf(request)
    await sync(agent)
    const list = await listThread(db, agent.id, request.params.id)
    if (list.length === 0) throw new ThreadNotFound(String(request.params.id))
    return { thread_id: request.params.id, messages: list }
  })

  app.get('/history', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'listHistory',
      tags,
      summary: 'What the caller sent or received, in time order',
      description: 'Archived messages are included and marked `archived: true`. `since` is inclusive, `until` exclusive.',
      security,
      querystring: HistoryQuery,
      response: { 200: ref(MessagePage, 'A page of history, oldest first.'), ...authErrors, 404: errorResponse('The `with` agent does not exist.') }
    }
  }, async (request) => {
    const agent = agentOf(request)
    const { since, until, with: other, thread, limit = 50, cursor } = request.query
    let withAgentId: number | undefined
    if (other !== undefined) {
      const row = await findAgent(db, other)
      if (!row) throw new AgentNotFound(other)
      withAgentId = row.id
    }
    await sync(agent)
    const read = await listHistory(db, agent.id, {
      since: toIso(since, 'since'),
      until: toIso(until, 'until'),
      withAgentId,
      thread,
      limit,
      afterSeq: cursor === undefined ? undefined : decodeCursor(cursor, 1)[0]
    })
    const page = withinBytes(read)
    const last = page.at(-1)
    return { messages: page, next_cursor: (page.length === limit || page.length < read.length) && last ? encodeCursor(last.id) : null }
  })
}

export default messages
