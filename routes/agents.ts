import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { createAgent, deregisterAgent, findAgent, listAgents, setTokenHash, toAgent } from '../db/agents.js'
import { countUnread } from '../db/messages.js'
import { AgentNotFound, Forbidden, NameTaken } from '../errors.js'
import { agentOf, hashToken, newToken, type Caller } from '../plugins/auth.js'
import { Agent, AgentCreate, AgentList, AgentParams, AgentToken, AgentWithToken, Heartbeat } from '../schemas/agent.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'

const security = [{ bearer: [] }]
const tags = ['agents']

// The agent itself or the admin may manage an agent; anyone else is told it is forbidden.
function assertManages (caller: Caller | null, name: string): void {
  if (caller?.kind === 'agent' && caller.agent.name !== name) throw new Forbidden(`only ${name} itself or the admin may do this`)
}

const agents: FastifyPluginAsyncTypebox = async (app) => {
  const { db } = app

  app.post('/agents', {
    onRequest: app.requireRegistrar,
    schema: {
      operationId: 'registerAgent',
      tags,
      summary: 'Register an agent and get its token',
      description: 'Needs the admin token when BUS_ADMIN_TOKEN is set; open otherwise. The token is shown only in this answer.',
      security: [{ bearer: [] }, {}],
      body: ref(AgentCreate),
      response: { 201: ref(AgentWithToken, 'Registered; keep the token.'), ...authErrors, 409: errorResponse('The name is taken.') }
    }
  }, async (request, reply) => {
    const { name, ...profile } = request.body
    const token = newToken()
    const row = await createAgent(db, name, profile, hashToken(token), new Date().toISOString())
    if (!row) throw new NameTaken(name)
    request.log.info({ agent: name }, 'agent registered')
    reply.code(201)
    return { ...toAgent(row), token }
  })

  app.get('/agents', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'listAgents',
      tags,
      summary: 'List registered agents with their presence',
      security,
      response: { 200: ref(AgentList, 'Registered agents, by name.'), ...authErrors }
    }
  }, async () => ({ agents: (await listAgents(db)).map(toAgent) }))

  app.get('/agents/:name', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'getAgent',
      tags,
      summary: 'One agent with its presence',
      security,
      params: AgentParams,
      response: { 200: ref(Agent, 'The agent.'), ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request) => {
    const row = await findAgent(db, request.params.name)
    if (!row) throw new AgentNotFound(request.params.name)
    return toAgent(row)
  })

  app.post('/agents/:name/token', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'rotateToken',
      tags,
      summary: 'Replace an agent\'s token',
      description: 'The agent itself or the admin. The old token stops working at once.',
      security,
      params: AgentParams,
      response: { 200: ref(AgentToken, 'The new token.'), ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request) => {
    const { name } = request.params
    assertManages(request.caller, name)
    const row = await findAgent(db, name)
    if (!row) throw new AgentNotFound(name)
    const token = newToken()
    await setTokenHash(db, row.id, hashToken(token))
    request.log.info({ agent: name }, 'token rotated')
    return { name, token }
  })

  app.delete('/agents/:name', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'deregisterAgent',
      tags,
      summary: 'Deregister an agent',
      description: 'The agent itself or the admin. Its token stops working; messages it sent or received stay in the others\' history.',
      security,
      params: AgentParams,
      response: { 204: { type: 'null', description: 'Deregistered.' }, ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request, reply) => {
    const { name } = request.params
    assertManages(request.caller, name)
    const row = await findAgent(db, name)
    if (!row) throw new AgentNotFound(name)
    await deregisterAgent(db, row.id, new Date().toISOString())
    request.log.info({ agent: name }, 'agent deregistered')
    return reply.code(204).send()
  })

  app.post('/heartbeat', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'heartbeat',
      tags,
      summary: 'Mark the caller online and count its unread messages',
      description: 'Any authenticated request counts as activity; this one exists for agents with nothing else to say.',
      security,
      response: { 200: ref(Heartbeat, 'The caller is online.'), ...authErrors }
    }
  }, async (request) => {
    const agent = agentOf(request)
    return { name: agent.name, status: 'online' as const, unread: await countUnread(db, agent.id) }
  })
}

export default agents
