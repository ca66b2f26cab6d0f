import { fastifySSE } from '@fastify/sse'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { agentOf } from '../plugins/auth.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'
import { Message, OverdueEvent, PresenceEvent, ReceiptEvent } from '../schemas/message.js'

export interface StreamOptions {
  // A comment line this often keeps proxies from closing an idle stream.
  keepAliveMs: number
  // A reader that has not taken an event for this long (its socket buffer is full) is cut off; it resumes with Last-Event-ID.
  stallMs: number
}

const stream: FastifyPluginAsyncTypebox<StreamOptions> = async (app, { keepAliveMs, stallMs }) => {
  const { bus } = app
  await app.register(fastifySSE, { heartbeatInterval: keepAliveMs })

  app.get('/stream', {
    sse: 'only',
    onRequest: app.requireAgent,
    // A HEAD would run the stream and mark its backlog delivered without sending it.
    exposeHeadRoute: false,
    schema: {
      operationId: 'streamMessages',
      tags: ['messages'],
      summary: 'Server-sent events: the unread backlog, then new messages as they are stored',
      description: 'A text/event-stream of four kinds of event:\n\n' +
        '| event | data | id |\n|---|---|---|\n' +
        '| `message` | a Message (inbox item) | yes: resume after it with the `Last-Event-ID` header (or `last_event_id`) |\n' +
        '| `receipt` | a ReceiptEvent, with `receipts=true`: a recipient read a message the caller sent | no |\n' +
        '| `overdue` | an OverdueEvent, with `receipts=true`: a recipient missed the ack deadline (`ack_within_s`) of a message the caller sent | no |\n' +
        '| `presence` | a PresenceEvent, with `presence=true`: another agent came online or went offline | no |\n\n' +
        'The stream sends the unread backlog first (inbox order), then each new message the moment it is stored; messages ' +
        'acknowledged meanwhile are skipped. `receipt`, `overdue` and `presence` events are signals of the moment and are not replayed ' +
        'after a reconnect: catch up with `GET /messages/{id}` (its `receipts`) and `GET /agents`. A comment line every 15 s ' +
        'keeps the connection open; an open stream keeps the agent online.\n\n' +
        'A stream never ends by itself, so a client that waits for the whole answer (Swagger UI\'s "Execute", a generated ' +
        'client without SSE support) waits for ever: give `close_after` to see what arrives within that many seconds.',
      security: [{ bearer: [] }],
      querystring: Type.Object({
        receipts: Type.Optional(Type.Boolean({ description: 'Also send `receipt` and `overdue` events.' })),
        presence: Type.Optional(Type.Boolean({ description: 'Also send `presence` events.' })),
        last_event_id: Type.Optional(Type.String({ maxLength: 64, description: 'Resume after this event id (instead of the Last-Event-ID header).' })),
        close_after: Type.Optional(Type.Integer({
          minimum: 1, maximum: 3600, examples: [5], description: 'End the stream after this many seconds (for clients that show an answer only once it ends).'
        }))
      }, { additionalProperties: false }),
      headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 64 })) }),
      response: {
        200: {
          description: 'A text/event-stream. Each event\'s `data` is one of Message (`message`), ReceiptEvent (`receipt`), OverdueEvent (`overdue`) or PresenceEvent (`presence`), as JSON.',
          content: { 'text/event-stream': { schema: { oneOf: [ref(Message), ref(ReceiptEvent), ref(OverdueEvent), ref(PresenceEvent)] } } }
        },
        ...authErrors,
        406: errorResponse('The client does not accept text/event-stream.')
      }
    }
  }, async (request, reply) => {
    const me = agentOf(request)
    const { receipts = false, presence = false, last_event_id: queryId, close_after: closeAfterS } = request.query
    const resumeFrom = request.headers['last-event-id'] ?? queryId
    const gone = new AbortController()
    // Nothing is sent yet: a bad event id, or a token revoked since it was checked, gets its error answer.
    const events = await bus.openStream(me, { lastEventId: resumeFrom, receipts, presence }, gone.signal)
    reply.sse.onClose(() => gone.abort())
    const closeTimer = closeAfterS === undefined ? undefined : setTimeout(() => gone.abort(), closeAfterS * 1000)
    const log = request.log.child({ agent: me.agent.name })
    try {
      reply.sse.keepAlive()
      reply.sse.sendHeaders()
      // Node holds the head until the first body write; an empty backlog would leave the client waiting for it.
      reply.raw.flushHeaders()
      log.info({ resume: resumeFrom !== undefined }, 'stream opened')
      // Each write waits for the socket to drain, so a connection buffers at most about one socket's worth;
      // a reader that takes nothing for stallMs is cut off instead of holding the bus's memory.
      for await (const event of events) {
        let timer: NodeJS.Timeout | undefined
        const stalled = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), stallMs) })
        const ok = await Promise.race([reply.sse.send(event).then(() => true), stalled])
        clearTimeout(timer)
        if (!ok) {
          log.warn('stream reader too slow: closing')
          reply.raw.destroy()
          break
        }
      }
    } finally {
      if (events.ended === 'overflow') log.warn('stream reader too slow for its receipt and presence events: closing')
      if (events.ended === 'revoked') log.info('token revoked: stream closed')
      if (events.ended === 'replaced') log.info('more streams and long-polls than BUS_MAX_READERS_PER_AGENT: oldest closed')
      clearTimeout(closeTimer)
      await events.close().catch((err: unknown) => log.error({ err }, 'mark seen failed'))
      log.info('stream closed')
      reply.sse.close()
    }
  })
}

export default stream
