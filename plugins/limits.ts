import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
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

const limits: FastifyPluginAsync<LimitsOptions> = async (app, { perAgentPerMin, registrationsPerMin, maxEventLoopDelayMs }) => {
  if (maxEventLoopDelayMs > 0) {
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
      ? `register:${request.ip}`
      : request.caller?.kind === 'agent' ? `agent:${request.caller.agent.id}` : `ip:${request.ip}`,
    max: async (request) => (isRegistration(request) ? registrationsPerMin : perAgentPerMin) || OFF,
    allowList: (request) => isExempt(request),
    errorResponseBuilder: (_request, context) => new RateLimited(context.max, context.after)
  })
}

export default fp(limits, { name: 'limits', fastify: '5.x' })
