import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { createAgent, deregisterAgent, findAgent, listAgents, setTokenHash, toAgent, toAgentSelf, updateProfile } from '../db/agents.js'
import { clearWebhooks, queueUndelivered, setWebhook } from '../db/webhooks.js'
import { countUnread, syncBroadcasts } from '../db/messages.js'
import { AgentNotFound, BadWebhook, Forbidden, NameRetired, NameTaken } from '../errors.js'
import { newWebhookSecret } from '../plugins/webhooks.js'
import type { AgentRow } from '../db/schema.js'
import { agentOf, hashToken, newToken, type Caller } from '../plugins/auth.js'
import { Agent, AgentCreate, AgentList, AgentParams, AgentSelf, AgentToken, AgentUpdate, AgentWithToken, Heartbeat } from '../schemas/agent.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'

const security = [{ bearer: [] }]
const tags = ['agents']

// An agent's webhook URL is for the agent itself and the admin.
const seesWebhookOf = (caller: Caller | null, name: string): boolean =>
  caller?.kind === 'admin' || (caller?.kind === 'agent' && caller.agent.name === name)

// The agent itself or the admin may manage an agent; anyone else is told it is forbidden.
function assertManages (caller: Caller | null, name: string): void {
  if (caller?.kind === 'agent' && caller.agent.name !== name) throw new Forbidden(`only ${name} itself or the admin may do this`)
}

const agents: FastifyPluginAsyncTypebox = async (app) => {
  const { db, fanout, webhookPolicy } = app

  // The registered agent of that name, or a 404.
  async function agentNamed (name: string): Promise<AgentRow> {
    const row = await findAgent(db, name)
    if (!row) throw new AgentNotFound(name)
    return row
  }

  async function checkWebhook (url: string): Promise<string> {
    const refused = await webhookPolicy.refuse(url)
    if (refused !== undefined) throw new BadWebhook(refused)
    return url
  }

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
    const { name, webhook_url: url, reuse_name: reuseName = false, ...profile } = request.body
    if (reuseName && request.caller?.kind !== 'admin') throw new Forbidden('only the admin may reuse the name of a deregistered agent')
    const webhook = url === undefined ? undefined : { url: await checkWebhook(url), secret: newWebhookSecret() }
    const token = newToken()
    const created = await createAgent(db, name, profile, hashToken(token), new Date().toISOString(), webhook, { reuseName })
    if (created === 'taken') throw new NameTaken(name)
    if (created === 'retired') throw new NameRetired(name)
    const row = created
    request.log.info({ agent: name, webhook: webhook !== undefined }, 'agent registered')
    reply.code(201)
    return { ...toAgentSelf(row), ...(webhook && { webhook_secret: webhook.secret }), token }
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
    assertManages(request.caller, name)
    const row = await agentNamed(name)
    const { webhook_url: url, ...profile } = request.body
    const webhook = url === undefined || url === null ? undefined : { url: await checkWebhook(url), secret: newWebhookSecret() }
    const now = new Date().toISOString()
    await db.transaction().execute(async (trx) => {
      await updateProfile(trx, row.id, profile)
      if (url !== undefined) await setWebhook(trx, row.id, webhook?.url ?? null, webhook?.secret ?? null)
      if (webhook) await queueUndelivered(trx, row.id, now)
      if (url === null) await clearWebhooks(trx, row.id)
    })
    request.log.info({ agent: name, webhook: url === undefined ? 'unchanged' : url === null ? 'removed' : 'set' }, 'agent updated')
    return { ...toAgentSelf(await agentNamed(name)), ...(webhook && { webhook_secret: webhook.secret }) }
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
  }, async (request) => ({
    agents: (await listAgents(db)).map((row) => seesWebhookOf(request.caller, row.name) ? toAgentSelf(row) : toAgent(row))
  }))

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
  }, async (request) => {
    const row = await agentNamed(request.params.name)
    return seesWebhookOf(request.caller, row.name) ? toAgentSelf(row) : toAgent(row)
  })

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
    const { name } = request.params
    assertManages(request.caller, name)
    const row = await agentNamed(name)
    const token = newToken()
    await db.transaction().execute(async (trx) => {
      if (!await setTokenHash(trx, row.id, hashToken(token))) throw new AgentNotFound(name)
      if (row.webhook_url !== null) {
        await setWebhook(trx, row.id, null, null)
        await clearWebhooks(trx, row.id)
      }
    })
    // After the commit, as every event: the readers holding the old token end now.
    fanout.publish({ kind: 'revoked', agentId: row.id })
    request.log.info({ agent: name, webhookRemoved: row.webhook_url !== null }, 'token rotated')
    return { name, token, webhook_removed: row.webhook_url !== null }
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
    assertManages(request.caller, name)
    const row = await agentNamed(name)
    await deregisterAgent(db, row.id, new Date().toISOString())
    fanout.publish({ kind: 'revoked', agentId: row.id })
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
    await syncBroadcasts(db, app.write, agent)
    return { name: agent.name, status: 'online' as const, unread: await countUnread(db, agent.id) }
  })
}

export default agents
