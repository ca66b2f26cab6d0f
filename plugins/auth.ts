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
  }
}

export interface AuthOptions {
  adminToken?: string
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

const auth: FastifyPluginAsync<AuthOptions> = async (app, { adminToken, seenEveryMs }) => {
  const adminHash = adminToken === undefined ? undefined : Buffer.from(hashToken(adminToken), 'hex')
  const isAdmin = (token: string): boolean =>
    adminHash !== undefined && timingSafeEqual(adminHash, Buffer.from(hashToken(token), 'hex'))

  async function identify (request: FastifyRequest, reply: FastifyReply): Promise<Caller> {
    const header = request.headers.authorization
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match === null) {
      reply.header('www-authenticate', 'Bearer')
      throw new Unauthorized(header === undefined ? 'missing Authorization: Bearer <token> header' : 'Authorization header is not a bearer token')
    }
    const token = match[1]
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
}

export default fp(auth, { name: 'auth', dependencies: ['bus'], fastify: '5.x' })
