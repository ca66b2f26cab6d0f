import { randomUUID } from 'node:crypto'
import {
  createMcpHandler, isInitializeRequest, isLegacyRequest, localhostAllowedHostnames, validateHostHeader, validateOriginHeader,
  type AuthInfo, type McpServer
} from '@modelcontextprotocol/server'
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest } from '@modelcontextprotocol/node'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { agentOf } from './auth.js'
import { buildMcpServer, inboxUri, operationsOf, type BusCall, type Operation } from '../mcp/tools.js'

export interface McpOptions {
  // Host names /mcp answers to, and Origins it accepts (the SDK's DNS-rebinding protection): the loopback names and
  // BUS_ALLOWED_HOSTS.
  allowedHosts: string[]
}

// A 2025-era client's session: it subscribes to resources and holds a GET stream for their notifications, so it
// must outlive a request (the 2026 protocol needs no session: plugins/mcp.ts serves it statelessly).
interface Session {
  transport: NodeStreamableHTTPServerTransport
  server: McpServer
  agentId: number
  subscribed: Set<string>
  lastUsed: number
  unsubscribe: () => void
}

// Sessions idle this long are closed: a client that went away without DELETE must not hold memory for ever.
const SESSION_IDLE_MS = 60 * 60 * 1000

const mcp: FastifyPluginAsync<McpOptions> = async (app, { allowedHosts }) => {
  let api: { operations: Operation[], version: string } | undefined
  // The tools are derived from the OpenAPI document, which is complete once every route is registered.
  const described = () => (api ??= { operations: operationsOf(app.swagger()), version: app.swagger().info.version })

  // A tool call is the REST request it names, made in-process with the caller's token and the Host it came with.
  const callAs = (auth: AuthInfo, host: string | undefined): BusCall => async ({ method, path, query, headers, body }) => {
    const qs = new URLSearchParams(query).toString()
    const res = await app.inject({
      method: method as 'GET',
      url: qs === '' ? path : `${path}?${qs}`,
      headers: { ...headers, authorization: `Bearer ${auth.token}`, ...(host !== undefined && { host }) },
      ...(body !== undefined && { payload: body as object })
    })
    return { status: res.statusCode, body: res.body === '' ? undefined : res.json() }
  }
  const build = (auth: AuthInfo, host: string | undefined): McpServer =>
    buildMcpServer({ ...described(), call: callAs(auth, host), agent: auth.clientId })

  // 2026-era requests: stateless, one server per request. Subscribers listen on their own stream (subscriptions/listen)
  // and hear resourceUpdated from `notify`.
  const modern = createMcpHandler(({ authInfo, requestInfo }) => build(authInfo as AuthInfo, requestInfo?.headers.get('host') ?? undefined), { legacy: 'reject' })
  const serveModern = toNodeHandler(modern)

  const sessions = new Map<string, Session>()
  const sweep = setInterval(() => {
    for (const [id, session] of sessions) if (Date.now() - session.lastUsed > SESSION_IDLE_MS) void session.transport.close().catch(() => {}).finally(() => sessions.delete(id))
  }, 60_000)
  sweep.unref()

  // Agents that used /mcp on this node, by id: a message event names recipients by id, a resource by name.
  const names = new Map<number, string>()
  const unsubscribeAll = app.fanout.subscribe(0, (event) => {
    if (event.kind !== 'message') return
    const ids = event.recipientIds ?? [...names.keys()].filter((id) => id !== event.senderId)
    for (const id of ids) {
      const name = names.get(id)
      if (name !== undefined) void modern.notify.resourceUpdated(inboxUri(name))
    }
  })

  async function serveLegacy (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, agentId: number): Promise<void> {
    const id = request.headers['mcp-session-id']
    const session = typeof id === 'string' ? sessions.get(id) : undefined
    if (session !== undefined) {
      // A session belongs to the agent that opened it.
      if (session.agentId !== agentId) return sendJson(reply, 403, { jsonrpc: '2.0', error: { code: -32001, message: 'this session belongs to another agent' }, id: null })
      session.lastUsed = Date.now()
      return session.transport.handleRequest(Object.assign(request.raw, { auth }), reply.raw, request.body)
    }
    if (id !== undefined || request.method !== 'POST' || !isInitializeRequest(request.body)) {
      return sendJson(reply, id === undefined ? 400 : 404, { jsonrpc: '2.0', error: { code: -32001, message: id === undefined ? 'no session: initialize first' : 'session not found' }, id: null })
    }
    const server = build(auth, request.headers.host)
    const subscribed = new Set<string>()
    const own = inboxUri(auth.clientId)
    server.server.setRequestHandler('resources/subscribe', async ({ params }) => { subscribed.add(params.uri); return {} })
    server.server.setRequestHandler('resources/unsubscribe', async ({ params }) => { subscribed.delete(params.uri); return {} })
    const unsubscribe = app.fanout.subscribe(agentId, (event) => {
      if (event.kind === 'message' && subscribed.has(own)) void server.server.sendResourceUpdated({ uri: own }).catch(() => {})
    })
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sessionId) => { sessions.set(sessionId, { transport, server, agentId, subscribed, lastUsed: Date.now(), unsubscribe }) }
    })
    transport.onclose = () => {
      unsubscribe()
      if (transport.sessionId !== undefined) sessions.delete(transport.sessionId)
    }
    await server.connect(transport)
    await transport.handleRequest(Object.assign(request.raw, { auth }), reply.raw, request.body)
  }

  app.addHook('onClose', async () => {
    clearInterval(sweep)
    unsubscribeAll()
    await Promise.all([...sessions.values()].map(async (session) => session.transport.close().catch(() => {})))
    sessions.clear()
  })

  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    schema: { hide: true },
    // The SDK's DNS-rebinding and Origin protections, before anything else.
    onRequest: [async (request, reply) => {
      const host = validateHostHeader(request.headers.host, allowedHosts)
      const origin = validateOriginHeader(request.headers.origin, allowedHosts)
      const refused = !host.ok ? host.message : !origin.ok ? origin.message : undefined
      if (refused !== undefined) return reply.code(403).send({ jsonrpc: '2.0', error: { code: -32000, message: refused }, id: null })
    }, app.requireAgent],
    handler: async (request, reply) => {
      const { agent, tokenHash } = agentOf(request)
      const token = /^Bearer\s+(\S+)/i.exec(request.headers.authorization ?? '')?.[1] as string
      const auth: AuthInfo = { token, clientId: agent.name, scopes: [], extra: { agentId: agent.id, tokenHash } }
      names.set(agent.id, agent.name)
      reply.hijack()
      const web = await toWebRequest(request.raw, request.body)
      if (await isLegacyRequest(web, request.body)) return serveLegacy(request, reply, auth, agent.id)
      await serveModern(Object.assign(request.raw, { auth }), reply.raw, request.body)
    }
  })
}

// An answer written past Fastify, on a request already handed to the SDK (hijacked).
function sendJson (reply: FastifyReply, status: number, body: unknown): void {
  if (reply.raw.headersSent) return
  reply.raw.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}

// The loopback names the SDK allows by default, for a bus that listens on loopback only.
export const loopbackHosts = localhostAllowedHostnames

export default fp(mcp, { name: 'mcp', dependencies: ['auth', 'bus', 'fanout'], fastify: '5.x' })
