import { timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { AgentCaller, Caller } from '../bus/agents.js'
import { hashToken } from '../bus/tokens.js'
import { Forbidden, Unauthorized } from '../errors.js'

type Hook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null
  }
  interface FastifyInstance {
    // onRequest hooks for routes: an agent token; an agent or the admin token; registration's rule.
    requireAgent: Hook
    requireAgentOrAdmin: Hook
    requireRegistrar: Hook
    // For /metrics and the dashboard: the admin or the metrics token, never an agent's; anyone on a bus with neither.
    requireOperator: Hook
  }
}

export interface AuthOptions {
  adminToken?: string
  metricsToken?: string
  // Whether /metrics and the dashboard are open to anyone when neither token is set: only on a loopback HOST. A bus
  // with open registration on a network address would otherwise show every message's subject to the network.
  // app.ts sets it from HOST.
  operatorOpen?: boolean
  // Activity is written at most this often per agent, so reads do not each cost a write (and an fsync).
  seenEveryMs: number
}

// The caller, on routes guarded by requireAgentOrAdmin (or requireAgent).
export function callerOf (request: FastifyRequest): Caller {
  if (request.caller === null) throw new Error('route is missing onRequest: app.requireAgentOrAdmin')
  return request.caller
}

// The calling agent, on routes guarded by requireAgent.
export function agentOf (request: FastifyRequest): AgentCaller {
  if (request.caller?.kind !== 'agent') throw new Error('route is missing onRequest: app.requireAgent')
  return request.caller
}

const auth: FastifyPluginAsync<AuthOptions> = async (app, { adminToken, metricsToken, operatorOpen = true, seenEveryMs }) => {
  const hashOf = (token: string | undefined) => token === undefined ? undefined : Buffer.from(hashToken(token), 'hex')
  const adminHash = hashOf(adminToken)
  const isAdmin = (token: string): boolean =>
    adminHash !== undefined && timingSafeEqual(adminHash, Buffer.from(hashToken(token), 'hex'))
  const operatorHashes = [adminHash, hashOf(metricsToken)].filter((hash) => hash !== undefined)
  const isOperator = (token: string): boolean => {
    const hash = Buffer.from(hashToken(token), 'hex')
    // Both compared, whichever matches, so the time taken does not tell which token it was.
    return operatorHashes.map((known) => timingSafeEqual(known, hash)).includes(true)
  }

  function bearer (request: FastifyRequest, reply: FastifyReply): string {
    const header = request.headers.authorization
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match === null) {
      reply.header('www-authenticate', 'Bearer')
      throw new Unauthorized(header === undefined ? 'missing Authorization: Bearer <token> header' : 'Authorization header is not a bearer token')
    }
    return match[1]
  }

  async function identify (request: FastifyRequest, reply: FastifyReply): Promise<Caller> {
    const token = bearer(request, reply)
    if (isAdmin(token)) return { kind: 'admin' }
    const caller = await app.bus.authenticate(token, seenEveryMs)
    if (!caller) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"')
      throw new Unauthorized('invalid or revoked token')
    }
    return caller
  }

  app.decorateRequest('caller', null)
  app.decorate('requireAgent', async (request: FastifyRequest, reply: FastifyReply) => {
    request.caller = await identify(request, reply)
    if (request.caller.kind !== 'agent') throw new Forbidden('the admin token is not an agent: use an agent token')
  })
  app.decorate('requireAgentOrAdmin', async (request: FastifyRequest, reply: FastifyReply) => {
    request.caller = await identify(request, reply)
  })
  app.decorate('requireRegistrar', async (request: FastifyRequest, reply: FastifyReply) => {
    if (adminHash === undefined) return
    request.caller = await identify(request, reply)
    if (request.caller.kind !== 'admin') throw new Forbidden('registration needs the admin token')
  })
  // No agent lookup: an agent's token is refused like any other that is neither, without touching the database.
  app.decorate('requireOperator', async (request: FastifyRequest, reply: FastifyReply) => {
    if (operatorHashes.length === 0) {
      if (operatorOpen) return
      throw new Forbidden('on a bus that listens beyond loopback, /metrics and the dashboard need BUS_METRICS_TOKEN or BUS_ADMIN_TOKEN set')
    }
    if (!isOperator(bearer(request, reply))) throw new Forbidden('this needs the admin token (BUS_ADMIN_TOKEN) or the metrics token (BUS_METRICS_TOKEN)')
  })
}

export default fp(auth, { name: 'auth', dependencies: ['bus'], fastify: '5.x' })
