import { STATUS_CODES } from 'node:http'
import Fastify, { type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { commaList, LOOPBACK, type Config } from './config.js'
import archiver from './plugins/archiver.js'
import auth from './plugins/auth.js'
import bus from './plugins/bus.js'
import db from './plugins/db.js'
import fanout from './plugins/fanout.js'
import limits from './plugins/limits.js'
import mcp, { loopbackHosts } from './plugins/mcp.js'
import metrics from './plugins/metrics.js'
import connections from './plugins/connections.js'
import heartbeat from './plugins/heartbeat.js'
import hosts from './plugins/hosts.js'
import options from './plugins/options.js'
import swagger from './plugins/swagger.js'
import webhooks from './plugins/webhooks.js'
import agents from './routes/agents.js'
import dashboard from './routes/dashboard.js'
import health from './routes/health.js'
import messages from './routes/messages.js'
import metricsRoute from './routes/metrics.js'
import queues from './routes/queues.js'
import stats from './routes/stats.js'
import stream from './routes/stream.js'
import topics from './routes/topics.js'
import { schemas } from './schemas/index.js'
import { BadNumber, MissingBody, StorageLost, StorageUnavailable, TooDeep, UnsupportedEncoding } from './errors.js'
import { formatValidationErrors } from './schemas/validation.js'

export interface AppOptions {
  logger?: FastifyServerOptions['logger']
  // Tests turn the background loops off and call their functions directly.
  loops?: boolean
  // The SSE keep-alive comment interval; tests shorten it.
  streamKeepAliveMs?: number
  // How often the webhook dispatcher looks for due retries (new messages wake it at once); 0 turns it off.
  webhookPollMs?: number
}

export async function buildApp (config: Config, { logger = false, loops = true, streamKeepAliveMs = 15_000, webhookPollMs = 250 }: AppOptions = {}) {
  const app = Fastify({
    logger,
    // Room for a maximal body after JSON escaping plus the other fields; the exact body limit is checked per message.
    bodyLimit: config.BUS_MAX_MESSAGE_BYTES * 6 + 64 * 1024,
    // A client that trickles its request (slowloris) is cut off; responses (streams, long-polls) are not limited.
    requestTimeout: config.BUS_REQUEST_TIMEOUT_MS,
    // Given to Node's server at construction too: Node reads the timeouts then, and by default checks them only
    // every 30 s, which would let a trickling client hold a socket that long.
    http: {
      requestTimeout: config.BUS_REQUEST_TIMEOUT_MS,
      headersTimeout: Math.min(60_000, config.BUS_REQUEST_TIMEOUT_MS),
      connectionsCheckingInterval: Math.min(1000, config.BUS_REQUEST_TIMEOUT_MS)
    },
    ajv: { customOptions: { removeAdditional: false } },
    schemaErrorFormatter: formatValidationErrors
  }).withTypeProvider<TypeBoxTypeProvider>()

  // Every body is JSON. Without this, a text/plain body reached validation and was told it "must be object".
  app.removeContentTypeParser('text/plain')

  // 5xx answers keep their details in the log, not in the response.
  app.setErrorHandler((err: Error & { statusCode?: number, code?: string }, request, reply) => {
    // A store that cannot write (disk full, locked, read-only) is a 503 the client may retry; the transaction
    // rolled back, so nothing partial was kept.
    const storage = app.hasDecorator('storage') ? app.storage.describeError(err) : undefined
    if (storage !== undefined) {
      request.log.error({ err }, 'storage failure')
      // A deleted or moved database file needs an operator: retrying cannot help, so no Retry-After.
      if (storage.retry) {
        reply.header('retry-after', '5')
        err = new StorageUnavailable(storage.message)
      } else {
        err = new StorageLost(storage.message)
      }
    }
    // Fastify's own words for a body that is not JSON name no remedy.
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      const type = request.headers['content-type']
      err.message = `the body must be JSON: send it with Content-Type: application/json${type === undefined ? '' : ` (got ${type.slice(0, 100)})`}`
    }
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500
    // 503s (ours, under-pressure's) say what is unavailable; anything else that failed inside stays in the log.
    if (status >= 500 && status !== 503) {
      request.log.error({ err }, 'request failed')
      return reply.code(status).send({ statusCode: status, error: STATUS_CODES[status], message: 'internal error' })
    }
    return reply.code(status).send({ statusCode: status, code: err.code, error: STATUS_CODES[status] ?? 'Error', message: err.message })
  })
  // A compressed body would reach the JSON parser as bytes it cannot read: say what to send instead (RFC 9110 §15.5.16).
  app.addHook('onRequest', async (request) => {
    const encoding = request.headers['content-encoding']
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') throw new UnsupportedEncoding(encoding.slice(0, 100))
  })
  // A route that takes a body was sent none; and JSON nested deeper than any field of the API needs would overflow the
  // stack when stored (JSON.stringify recursing 4,200 levels answered 500).
  app.addHook('preValidation', async (request) => {
    if (request.routeOptions.schema?.body === undefined) return
    if (request.body === undefined || request.body === null) throw new MissingBody()
    if (deeperThan(request.body, MAX_BODY_DEPTH)) throw new TooDeep('body', MAX_BODY_DEPTH)
  })
  // Ajv coerces "1e309" to Infinity and lets it through integer and maximum checks, and JSON.parse reads 1e309 as
  // Infinity too. No field of this API takes a non-finite number: refuse them before any handler sees one.
  app.addHook('preHandler', async (request) => {
    for (const [part, value] of [['querystring', request.query], ['params', request.params], ['body', request.body]] as const) {
      // As deep as a body may nest (checked in preValidation), so 1e999 is found wherever it hides in `data`.
      const where = findNonFinite(value, MAX_BODY_DEPTH)
      if (where !== undefined) throw new BadNumber(`${part}${where}`)
    }
  })

  // A keep-alive socket that finishes its last response after close() began stays open until its keep-alive
  // timeout, holding close() with it (Node reaps idle sockets once, when close starts): reap them as they go idle.
  let reaper: NodeJS.Timeout | undefined
  app.addHook('preClose', async () => { reaper = setInterval(() => app.server.closeIdleConnections(), 50).unref() })
  app.addHook('onClose', async () => { clearInterval(reaper) })

  await app.register(hosts, { allowed: commaList(config.BUS_ALLOWED_HOSTS), loopback: LOOPBACK.test(config.HOST) })
  await app.register(options)
  await app.register(swagger)
  for (const schema of schemas) app.addSchema(schema)
  // Before the database and the bus, which report to it.
  if (config.BUS_METRICS) await app.register(metrics)
  await app.register(db, { url: config.BUS_DB, sync: config.BUS_SYNC })
  await app.register(fanout, { maxReadersPerAgent: config.BUS_MAX_READERS_PER_AGENT })
  await app.register(bus, { maxMessageBytes: config.BUS_MAX_MESSAGE_BYTES, recheckMs: Math.min(streamKeepAliveMs, 5000), sweepMs: loops ? 1000 : 0 })
  const offlineAfterMs = config.BUS_OFFLINE_AFTER_S * 1000
  await app.register(limits, {
    perAgentPerMin: config.BUS_RATE_LIMIT_PER_MIN,
    registrationsPerMin: config.BUS_RATE_LIMIT_REGISTRATIONS_PER_MIN,
    maxEventLoopDelayMs: config.BUS_MAX_EVENT_LOOP_DELAY_MS
  })
  await app.register(connections, { maxConnections: config.BUS_MAX_CONNECTIONS, maxPerAddress: config.BUS_MAX_CONNECTIONS_PER_ADDRESS, firstRequestTimeoutMs: config.BUS_FIRST_REQUEST_TIMEOUT_MS })
  // Unknown routes are rate limited too when limits are on, so probing them is no way around the limit.
  app.setNotFoundHandler({ preHandler: app.hasDecorator('rateLimit') ? app.rateLimit() : undefined }, (request, reply) => {
    const path = request.url.split('?')[0]
    // A path the API has, asked with a method it does not take (HEAD /inbox, DELETE /send): 405 with Allow.
    const allowed = app.allowedMethods(path)
    if (allowed !== undefined) {
      return reply.code(405).header('allow', allowed.join(', ')).send({
        statusCode: 405, code: 'BUS_METHOD_NOT_ALLOWED', error: 'Method Not Allowed', message: `${request.method} ${path} is not supported; use ${allowed.join(', ')}`
      })
    }
    reply.code(404).send({ statusCode: 404, code: 'BUS_ROUTE_NOT_FOUND', error: 'Not Found', message: `no route ${request.method} ${path}` })
  })
  await app.register(auth, { adminToken: config.BUS_ADMIN_TOKEN, metricsToken: config.BUS_METRICS_TOKEN, operatorOpen: LOOPBACK.test(config.HOST), seenEveryMs: Math.min(5000, offlineAfterMs / 10) })
  await app.register(heartbeat, { offlineAfterMs, intervalMs: loops ? Math.min(offlineAfterMs / 4, 30_000) : 0 })
  await app.register(archiver, {
    maxAgeMs: config.BUS_ARCHIVE_AFTER_S * 1000,
    intervalMs: loops ? config.BUS_ARCHIVE_INTERVAL_S * 1000 : 0
  })
  await app.register(webhooks, {
    retryBaseMs: config.BUS_WEBHOOK_RETRY_BASE_MS,
    maxAgeMs: config.BUS_WEBHOOK_MAX_AGE_S * 1000,
    timeoutMs: config.BUS_WEBHOOK_TIMEOUT_MS,
    allow: commaList(config.BUS_WEBHOOK_ALLOW),
    allowPrivate: config.BUS_WEBHOOK_ALLOW_PRIVATE,
    perRecipient: config.BUS_WEBHOOK_PER_RECIPIENT,
    breakerFailures: config.BUS_WEBHOOK_BREAKER_FAILURES,
    breakerCooldownMs: config.BUS_WEBHOOK_BREAKER_COOLDOWN_MS,
    pollMs: webhookPollMs
  })

  await app.register(agents)
  await app.register(messages)
  await app.register(topics)
  await app.register(queues)
  await app.register(stream, {
    keepAliveMs: streamKeepAliveMs,
    stallMs: config.BUS_STREAM_STALL_S * 1000
  })
  await app.register(stats, { adminOnly: config.BUS_ADMIN_TOKEN !== undefined })
  await app.register(health)
  if (config.BUS_METRICS) await app.register(metricsRoute)
  await app.register(dashboard)
  await app.register(mcp, { allowedHosts: [...loopbackHosts(), ...commaList(config.BUS_ALLOWED_HOSTS)] })
  return app
}

// Deeper than any field of the API needs; `data` and `metadata` nest freely within it.
const MAX_BODY_DEPTH = 32

// Whether objects and arrays nest more than `levels` deep. It stops descending there, so it cannot overflow the stack.
function deeperThan (value: unknown, levels: number): boolean {
  if (value === null || typeof value !== 'object') return false
  if (levels === 0) return true
  for (const item of Object.values(value)) if (deeperThan(item, levels - 1)) return true
  return false
}

// The path (/a/0/b) of the first non-finite number within `depth` levels, or undefined.
function findNonFinite (value: unknown, depth: number): string | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : ''
  if (depth === 0 || value === null || typeof value !== 'object') return undefined
  for (const [key, item] of Object.entries(value)) {
    const where = findNonFinite(item, depth - 1)
    if (where !== undefined) return `/${key}${where}`
  }
  return undefined
}

export type App = Awaited<ReturnType<typeof buildApp>>
