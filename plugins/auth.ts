import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import { findAgentByTokenHash, markSeen, type CallingAgent } from '../db/agents.js'
import { Forbidden, Unauthorized } from '../errors.js'

export type Caller = { kind: 'agent', agent: CallingAgent, tokenHash: string } | { kind: 'admin' }
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

// 256 random bits; the prefix makes a leaked token easy to recognise in a scan.
export const newToken = (): string => `bus_${randomBytes(32).toString('base64url')}`
// Tokens are stored only as hashes and looked up by hash, so no stored secret is ever compared byte by byte.
export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex')

// Whether the token the request authenticated with still names its agent. A reader (stream, long-poll) starts
// listening for 'revoked' events only after authentication, and a rotation or deregistration committed in between
// would go unheard: so a reader asks once more after it subscribed. Either this sees the new state, or the event
// (published after the commit) reaches the subscription.
export async function stillAuthorized (db: Kysely<Database>, request: FastifyRequest): Promise<boolean> {
  if (request.caller?.kind !== 'agent') return false
  return (await findAgentByTokenHash(db, request.caller.tokenHash))?.id === request.caller.agent.id
}

// The calling agent, on routes guarded by requireAgent.
export function agentOf (request: FastifyRequest): CallingAgent {
  if (request.caller?.kind !== 'agent') throw new Error('route is missing onRequest: app.requireAgent')
  return request.caller.agent
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
    const tokenHash = hashToken(token)
    const agent = await findAgentByTokenHash(app.db, tokenHash)
    if (!agent) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"')
      throw new Unauthorized('invalid or revoked token')
    }
    const now = new Date()
    if (agent.online === 0 || agent.last_seen_at === null || now.getTime() - Date.parse(agent.last_seen_at) >= seenEveryMs) {
      await app.write((trx) => markSeen(trx, agent.id, now.toISOString()))
      if (agent.online === 0) app.fanout.publish({ kind: 'presence', agent: agent.name, status: 'online' })
      agent.online = 1
      agent.last_seen_at = now.toISOString()
    }
    return { kind: 'agent', agent, tokenHash }
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

export default fp(auth, { name: 'auth', dependencies: ['db', 'fanout'], fastify: '5.x' })
