import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { agentOf, callerOf } from '../plugins/auth.js'
import { Agent, AgentCreate, AgentList, AgentParams, AgentSelf, AgentToken, AgentUpdate, AgentWithToken, Heartbeat } from '../schemas/agent.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'

const security = [{ bearer: [] }]
const tags = ['agents']

const agents: FastifyPluginAsyncTypebox = async (app) => {
  const { bus } = app

  app.post('/agents', {
    onRequest: app.requireRegistrar,
    schema: {
      operationId: 'registerAgent',
      tags,
      summary: 'Register an agent and get its token',
      description: 'Needs the admin token when BUS_ADMIN_TOKEN is set; open otherwise. The token is shown only in this answer. ' +
        'A name is never handed to a new agent while its agent is registered, nor after it deregistered unless the admin ' +
        'registers with `reuse_name: true`: mail addressed to the old agent must not reach a stranger.',
      security: [{ bearer: [] }, {}],
      body: ref(AgentCreate),
      response: {
        201: ref(AgentWithToken, 'Registered; keep the token.'),
        ...authErrors,
        409: errorResponse('The name is taken, or belonged to a deregistered agent.')
      }
    }
  }, async (request, reply) => {
    const registered = await bus.register(request.caller, request.body)
    request.log.info({ agent: registered.name, webhook: registered.webhook_secret !== undefined }, 'agent registered')
    reply.code(201)
    return registered
  })

  app.patch('/agents/:name', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'updateAgent',
      tags,
      summary: 'Change an agent\'s description, capabilities, metadata or webhook',
      description: 'The agent itself or the admin. Setting `webhook_url` makes a new webhook secret (answered once) and pushes ' +
        'every message not yet delivered; null stops webhooks.',
      security,
      params: AgentParams,
      body: ref(AgentUpdate),
      response: { 200: ref(AgentSelf, 'The updated agent.'), ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request) => {
    const { name } = request.params
    const url = request.body.webhook_url
    const updated = await bus.updateAgent(callerOf(request), name, request.body)
    request.log.info({ agent: name, webhook: url === undefined ? 'unchanged' : url === null ? 'removed' : 'set' }, 'agent updated')
    return updated
  })

  app.get('/agents', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'listAgents',
      tags,
      summary: 'List registered agents with their presence',
      description: 'Every registered agent by name, with `status` (online while it has made a request within BUS_OFFLINE_AFTER_S ' +
        'or holds a stream open) and `last_seen_at`. Deregistered agents are not listed.',
      security,
      response: { 200: ref(AgentList, 'Registered agents, by name.'), ...authErrors }
    }
  }, async (request) => bus.listAgents(callerOf(request)))

  app.get('/agents/:name', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'getAgent',
      tags,
      summary: 'One agent with its presence',
      description: 'Its profile, `status` and `last_seen_at`, and for the agent itself and the admin its `webhook_url`; ' +
        '404 for a name that is not registered.',
      security,
      params: AgentParams,
      response: { 200: ref(Agent, 'The agent.'), ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request) => bus.getAgent(callerOf(request), request.params.name))

  app.post('/agents/:name/token', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'rotateToken',
      tags,
      summary: 'Replace an agent\'s token',
      description: 'The agent itself or the admin. The old token stops working at once, and every stream and long-poll ' +
        'opened with it ends. The webhook is removed too (`webhook_removed` says whether there was one): a token is rotated ' +
        'because it may have leaked, and whoever held it may have pointed the webhook at themselves. Set it again with PATCH.',
      security,
      params: AgentParams,
      response: { 200: ref(AgentToken, 'The new token.'), ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request) => {
    const rotated = await bus.rotateToken(callerOf(request), request.params.name)
    request.log.info({ agent: rotated.name, webhookRemoved: rotated.webhook_removed }, 'token rotated')
    return rotated
  })

  app.delete('/agents/:name', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'deregisterAgent',
      tags,
      summary: 'Deregister an agent',
      description: 'The agent itself or the admin. Its token stops working and its streams and long-polls end; messages it ' +
        'sent or received stay in the others\' history. Its name is retired: only the admin can give it to a new agent.',
      security,
      params: AgentParams,
      response: { 204: { type: 'null', description: 'Deregistered.' }, ...authErrors, 404: errorResponse('No such agent.') }
    }
  }, async (request, reply) => {
    const { name } = request.params
    await bus.deregister(callerOf(request), name)
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
    const me = agentOf(request)
    // Authentication marked the caller online; what is left to answer is its unread count.
    return { name: me.agent.name, status: 'online' as const, unread: await bus.unreadCount(me) }
  })
}

export default agents
