import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { Type } from '@sinclair/typebox'
import { findAgent, type CallingAgent } from '../db/agents.js'
import { ackMessages, getMessage, listHistory, listInbox, listThread, rankOf, recordDelivery, sendMessage, syncBroadcasts } from '../db/messages.js'
import { AgentNotFound, BadCursor, MessageNotFound, MessageTooLarge, ThreadNotFound } from '../errors.js'
import { agentOf } from '../plugins/auth.js'
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

// Cursors are opaque to clients: base64url of the keyset position of the last item returned.
const encodeCursor = (...parts: number[]): string => Buffer.from(parts.join('.')).toString('base64url')
function decodeCursor (cursor: string, parts: number): number[] {
  const values = Buffer.from(cursor, 'base64url').toString().split('.').map(Number)
  if (values.length !== parts || !values.every((v) => Number.isSafeInteger(v) && v >= 0)) throw new BadCursor()
  return values
}

const messages: FastifyPluginAsyncTypebox<MessagesOptions> = async (app, { maxMessageBytes }) => {
  const { db, fanout, write, messageCache } = app
  // Before any read of the caller's messages: its copies of the broadcasts sent since it last read (db/messages.ts).
  const sync = (agent: CallingAgent): Promise<number> => syncBroadcasts(db, write, agent)

  // Holds an empty inbox read until a message for the agent is stored, the time is up, the client goes away,
  // or the bus shuts down; then reads again.
  async function longPoll<T> (agentId: number, ms: number, reply: FastifyReply, read: () => Promise<T[]>): Promise<T[]> {
    const gone = new AbortController()
    const onClose = (): void => gone.abort()
    reply.raw.once('close', onClose)
    const watch = new Watch(fanout, agentId, (event) => event.kind === 'message')
    const deadline = Date.now() + ms
    try {
      let page = await read()
      while (page.length === 0 && !watch.closed && !gone.signal.aborted && Date.now() < deadline) {
        if (await watch.wait(deadline - Date.now(), gone.signal)) page = await read()
      }
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
        'An Idempotency-Key header makes a retry answer the first result instead of storing a duplicate.',
      security,
      headers: Type.Object({
        'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Any unique string per logical send.' }))
      }),
      body: ref(MessageCreate),
      response: {
        201: ref(MessageSent, 'Stored and delivered to every recipient\'s inbox.'),
        ...authErrors,
        404: errorResponse('A recipient or the reply_to message does not exist; nothing was stored.'),
        413: errorResponse('The body is larger than BUS_MAX_MESSAGE_BYTES.')
      }
    }
  }, async (request, reply) => {
    const sender = agentOf(request)
    const { to, body, subject, priority = 'normal', reply_to: replyTo, data } = request.body
    const bytes = Buffer.byteLength(body)
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
    const { sent, replayed, recipientIds, webhooks } = outcome
    // After the commit: readers pull from the database, so they must not hear of rows they cannot see yet.
    if (!replayed) fanout.publish({ kind: 'message', seq: sent.id, senderId: sender.id, recipientIds, webhooks })
    request.log.info({ id: sent.id, recipients: sent.recipients, replayed }, 'message sent')
    reply.code(201)
    return sent
  })

  app.get('/inbox', {
    onRequest: app.requireAgent,
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
    const read = async () => listInbox(db, messageCache, agent.id, { unread, priority, limit, after: after && { rank: after[0], seq: after[1] }, upToSeq: await sync(agent) })
    let page = await read()
    if (page.length === 0 && wait > 0) page = await longPoll(agent.id, wait * 1000, reply, read)
    await recordDelivery(write, agent.id, page)
    const last = page.at(-1)
    return {
      messages: page,
      next_cursor: page.length === limit && last ? encodeCursor(rankOf(last.priority), last.id) : null
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
    const page = await listHistory(db, agent.id, {
      since: since === undefined ? undefined : new Date(since).toISOString(),
      until: until === undefined ? undefined : new Date(until).toISOString(),
      withAgentId,
      thread,
      limit,
      afterSeq: cursor === undefined ? undefined : decodeCursor(cursor, 1)[0]
    })
    const last = page.at(-1)
    return { messages: page, next_cursor: page.length === limit && last ? encodeCursor(last.id) : null }
  })
}

export default messages
