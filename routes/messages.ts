import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { agentOf } from '../plugins/auth.js'
import { untilGone } from './wait.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'
import {
  AckBody, AckResult, HistoryQuery, InboxQuery, Message, MessageCreate, MessagePage, MessageParams, MessageSent, Thread
} from '../schemas/message.js'

const security = [{ bearer: [] }]
const tags = ['messages']

const messages: FastifyPluginAsyncTypebox = async (app) => {
  const { bus } = app

  app.post('/send', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'sendMessage',
      tags,
      summary: 'Send a direct or broadcast message',
      description: 'The sender is the token\'s agent. Give `to` for a direct message, `topic` to publish to a topic\'s subscribers, ' +
        '`queue` to put it on a work queue, or none of them to broadcast to every other agent. ' +
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
        404: errorResponse('A recipient, the topic, the queue or the reply_to message does not exist; nothing was stored.'),
        413: errorResponse('Body, subject and data together are larger than BUS_MAX_MESSAGE_BYTES; nothing was stored.'),
        422: errorResponse('The Idempotency-Key was used before for a different request; nothing was stored.')
      }
    }
  }, async (request, reply) => {
    const { sent, replayed } = await bus.send(agentOf(request), request.body, request.headers['idempotency-key'])
    if (replayed) reply.header('idempotent-replayed', 'true')
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
    const { wait = 0, ...query } = request.query
    const me = agentOf(request)
    if (wait === 0) return bus.inbox(me, query)
    return untilGone(reply, (signal) => bus.inbox(me, { ...query, waitMs: wait * 1000 }, signal))
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
  }, async (request) => bus.ack(agentOf(request), request.body.ids))

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
  }, async (request) => bus.getMessage(agentOf(request), request.params.id))

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
  }, async (request) => bus.getThread(agentOf(request), request.params.id))

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
  }, async (request) => bus.history(agentOf(request), request.query))
}

export default messages
