import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import type { FastifyBaseLogger, FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { addressKey } from './connections.js'
import { RateLimited } from '../errors.js'

export interface LimitsOptions {
  // Requests per minute per agent; 0 = off.
  perAgentPerMin: number
  // Registrations per minute per client address; 0 = off.
  registrationsPerMin: number
  // Answer 503 once the event loop lags this much; 0 = off.
  maxEventLoopDelayMs: number
}

const isRegistration = (request: FastifyRequest): boolean => request.method === 'POST' && request.routeOptions.url === '/agents'
// Liveness checks and the docs are never limited.
const isExempt = (request: FastifyRequest): boolean => request.routeOptions.url === '/health' || request.url.startsWith('/docs')

const GUARDED = Symbol('agent-bus.guardedMemoryUsage')

// under-pressure calls process.memoryUsage() from its timer every second whatever limits it is given (no option
// turns the sample off), and nothing catches a throw there: once every descriptor was in use, the /proc read behind
// the call failed with EMFILE and the process exited (issue 14). So the call answers the last good reading when the
// read fails. Installed once per process, by replacing the function; it is the original whenever the read works.
export function guardedMemoryUsage (read: NodeJS.MemoryUsageFn, onError: (err: unknown) => void): NodeJS.MemoryUsageFn {
  let last: NodeJS.MemoryUsage = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 }
  const memoryUsage = (): NodeJS.MemoryUsage => {
    try {
      last = read()
    } catch (err) {
      onError(err)
    }
    return { ...last }
  }
  memoryUsage.rss = (): number => {
    try {
      return read.rss()
    } catch (err) {
      onError(err)
      return last.rss
    }
  }
  return Object.assign(memoryUsage, { [GUARDED]: true })
}

// A failed sample is logged at most once a minute: it repeats every second for as long as descriptors are short.
function guardMemoryUsage (log: FastifyBaseLogger): void {
  if (GUARDED in process.memoryUsage) return
  let loggedAt = 0
  process.memoryUsage = guardedMemoryUsage(process.memoryUsage, (err) => {
    if (Date.now() - loggedAt < 60_000) return
    loggedAt = Date.now()
    log.warn({ err }, 'memory sample failed; using the last one')
  })
}

const limits: FastifyPluginAsync<LimitsOptions> = async (app, { perAgentPerMin, registrationsPerMin, maxEventLoopDelayMs }) => {
  if (maxEventLoopDelayMs > 0) {
    guardMemoryUsage(app.log.child({ plugin: 'limits' }))
    // Shed load before the event loop stalls: a 503 with Retry-After is better than every request timing out.
    await app.register(underPressure, { maxEventLoopDelay: maxEventLoopDelayMs, retryAfter: 5, exposeStatusRoute: false })
  }
  if (perAgentPerMin === 0 && registrationsPerMin === 0) return
  const OFF = Number.MAX_SAFE_INTEGER
  await app.register(rateLimit, {
    global: true,
    // After authentication, so that the key is the agent, not an address several agents may share.
    hook: 'preHandler',
    timeWindow: 60_000,
    keyGenerator: (request) => isRegistration(request)
      // By address, and an IPv6 client by its /64: one host holds a whole /64 to rotate through.
      ? `register:${addressKey(request.ip)}`
      : request.caller?.kind === 'agent' ? `agent:${request.caller.agent.id}` : `ip:${request.ip}`,
    max: async (request) => (isRegistration(request) ? registrationsPerMin : perAgentPerMin) || OFF,
    allowList: (request) => isExempt(request),
    errorResponseBuilder: (_request, context) => new RateLimited(context.max, context.after)
  })
}

export default fp(limits, { name: 'limits', fastify: '5.x' })
