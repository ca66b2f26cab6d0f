import { fastifySSE } from '@fastify/sse'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { markSeen } from '../db/agents.js'
import { listInbox, listUnreadAfter, rankOf, recordDelivery, syncBroadcasts, type MessageView } from '../db/messages.js'
import { BadEventId, Unauthorized } from '../errors.js'
import { agentOf, stillAuthorized } from '../plugins/auth.js'
import { Watch, type BusEvent } from '../plugins/fanout.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'
import { Message, PresenceEvent, ReceiptEvent } from '../schemas/message.js'

export interface StreamOptions {
  // A comment line this often keeps proxies from closing an idle stream.
  keepAliveMs: number
  // A reader that has not taken an event for this long (its socket buffer is full) is cut off; it resumes with Last-Event-ID.
  stallMs: number
  // The largest message body: a batch read for one stream holds at most about BATCH_BYTES of them.
  maxMessageBytes: number
}

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

const stream: FastifyPluginAsyncTypebox<StreamOptions> = async (app, { keepAliveMs, stallMs, maxMessageBytes }) => {
  const { db, fanout, readers, write, messageCache } = app
  const BATCH = Math.max(1, Math.min(100, Math.floor(BATCH_BYTES / maxMessageBytes)))
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
      description: 'A text/event-stream of three kinds of event:\n\n' +
        '| event | data | id |\n|---|---|---|\n' +
        '| `message` | a Message (inbox item) | yes: resume after it with the `Last-Event-ID` header (or `last_event_id`) |\n' +
        '| `receipt` | a ReceiptEvent, with `receipts=true`: a recipient read a message the caller sent | no |\n' +
        '| `presence` | a PresenceEvent, with `presence=true`: another agent came online or went offline | no |\n\n' +
        'The stream sends the unread backlog first (inbox order), then each new message the moment it is stored; messages ' +
        'acknowledged meanwhile are skipped. `receipt` and `presence` events are signals of the moment and are not replayed ' +
        'after a reconnect: catch up with `GET /messages/{id}` (its `receipts`) and `GET /agents`. A comment line every 15 s ' +
        'keeps the connection open; an open stream keeps the agent online.\n\n' +
        'A stream never ends by itself, so a client that waits for the whole answer (Swagger UI\'s "Execute", a generated ' +
        'client without SSE support) waits for ever: give `close_after` to see what arrives within that many seconds.',
      security: [{ bearer: [] }],
      querystring: Type.Object({
        receipts: Type.Optional(Type.Boolean({ description: 'Also send `receipt` events.' })),
        presence: Type.Optional(Type.Boolean({ description: 'Also send `presence` events.' })),
        last_event_id: Type.Optional(Type.String({ maxLength: 64, description: 'Resume after this event id (instead of the Last-Event-ID header).' })),
        close_after: Type.Optional(Type.Integer({
          minimum: 1, maximum: 3600, examples: [5], description: 'End the stream after this many seconds (for clients that show an answer only once it ends).'
        }))
      }, { additionalProperties: false }),
      headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 64 })) }),
      response: {
        200: {
          description: 'A text/event-stream. Each event\'s `data` is one of Message (`message`), ReceiptEvent (`receipt`) or PresenceEvent (`presence`), as JSON.',
          content: { 'text/event-stream': { schema: { oneOf: [ref(Message), ref(ReceiptEvent), ref(PresenceEvent)] } } }
        },
        ...authErrors,
        406: errorResponse('The client does not accept text/event-stream.')
      }
    }
  }, async (request, reply) => {
    const agent = agentOf(request)
    const { receipts = false, presence = false, last_event_id: queryId, close_after: closeAfterS } = request.query
    const resumeFrom = request.headers['last-event-id'] ?? queryId
    // Every read first makes the agent's copies of new broadcasts, and reads no further than where that left off.
    const sync = (): Promise<number> => syncBroadcasts(db, write, agent)
    const resumed = resumeFrom === undefined ? undefined : parseEventId(resumeFrom)
    // A new stream's backlog ends at the newest message at connect time.
    const horizon = await sync()
    let position: Position = resumed ?? { phase: 'backlog', upTo: horizon, rank: 3, seq: 0 }

    const watch = new Watch(fanout, agent.id, (event) => event.kind === 'message', readers)
    // Nothing is sent yet: a token revoked since it was checked gets the 401 it would get now.
    if (!await stillAuthorized(db, request)) {
      watch.close()
      throw new Unauthorized('invalid or revoked token')
    }
    // Receipt and presence events are not in the database, so they queue here, boundedly.
    const extra: Array<{ event: string, data: unknown }> = []
    let overflow = false
    const unsubscribeExtra = fanout.subscribe(agent.id, (event: BusEvent) => {
      if (event.kind === 'receipt' && receipts) {
        extra.push({ event: 'receipt', data: { message_id: event.messageId, agent: event.agent, read_at: event.readAt } })
      } else if (event.kind === 'presence' && presence && event.agent !== agent.name) {
        extra.push({ event: 'presence', data: { agent: event.agent, status: event.status } })
      } else {
        return
      }
      overflow ||= extra.length > MAX_EXTRA
      watch.poke()
    })
    const gone = new AbortController()
    reply.sse.onClose(() => gone.abort())
    const closeTimer = closeAfterS === undefined ? undefined : setTimeout(() => gone.abort(), closeAfterS * 1000)
    reply.sse.keepAlive()
    reply.sse.sendHeaders()
    // Node holds the head until the first body write; an empty backlog would leave the client waiting for it.
    reply.raw.flushHeaders()
    const log = request.log.child({ agent: agent.name })
    log.info({ resume: resumeFrom !== undefined }, 'stream opened')

    // Each write waits for the socket to drain, so a connection buffers at most about one socket's worth;
    // a reader that takes nothing for stallMs is cut off instead of holding the bus's memory.
    const sendEvent = async (message: { id?: string, event: string, data: unknown }): Promise<boolean> => {
      // A revoked token stops the stream between two events, not only between two batches.
      if (watch.closed) return false
      let timer: NodeJS.Timeout | undefined
      const stalled = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), stallMs) })
      const ok = await Promise.race([reply.sse.send(message).then(() => true), stalled])
      clearTimeout(timer)
      if (!ok) {
        log.warn('stream reader too slow: closing')
        reply.raw.destroy()
      }
      return ok && !gone.signal.aborted && !watch.closed
    }

    const next = async (): Promise<MessageView[]> => {
      if (position.phase === 'live') return listUnreadAfter(db, messageCache, agent.id, position.seq, await sync(), BATCH)
      const page = await listInbox(db, messageCache, agent.id, {
        unread: true, limit: BATCH, upToSeq: position.upTo, after: { rank: position.rank, seq: position.seq }
      })
      if (page.length > 0) return page
      position = { phase: 'live', seq: position.upTo }
      return listUnreadAfter(db, messageCache, agent.id, position.seq, await sync(), BATCH)
    }

    try {
      while (!watch.closed && !gone.signal.aborted) {
        if (overflow) {
          log.warn('stream reader too slow for its receipt and presence events: closing')
          return
        }
        for (let pending = extra.shift(); pending !== undefined; pending = extra.shift()) {
          if (!await sendEvent(pending)) return
        }
        const batch = await next()
        for (const message of batch) {
          position = position.phase === 'live'
            ? { phase: 'live', seq: message.id }
            : { ...position, rank: rankOf(message.priority), seq: message.id }
          if (!await sendEvent({ id: eventId(position), event: 'message', data: message })) return
        }
        await recordDelivery(write, agent.id, batch)
        if (batch.length === 0) await watch.wait(keepAliveMs, gone.signal)
      }
    } finally {
      if (watch.ended === 'revoked') log.info('token revoked: stream closed')
      if (watch.ended === 'replaced') log.info('more streams and long-polls than BUS_MAX_READERS_PER_AGENT: oldest closed')
      clearTimeout(closeTimer)
      watch.close()
      unsubscribeExtra()
      // The offline timer starts when the stream closes.
      await write((trx) => markSeen(trx, agent.id, new Date().toISOString())).catch((err: unknown) => log.error({ err }, 'mark seen failed'))
      log.info('stream closed')
      reply.sse.close()
    }
  })
}

export default stream
