import { randomUUID } from 'node:crypto'
import {
  createMcpHandler, isInitializeRequest, isLegacyRequest, localhostAllowedHostnames, validateHostHeader, validateOriginHeader,
  type AuthInfo, type McpServer
} from '@modelcontextprotocol/server'
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest } from '@modelcontextprotocol/node'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { agentOf } from './auth.js'
import { AGENTS_URI, buildMcpServer, inboxUri, toolsOf, type BusCall, type Tools } from '../mcp/tools.js'

export interface McpOptions {
  // Host names /mcp answers to, and Origins it accepts (the SDK's DNS-rebinding protection): the loopback names and
  // BUS_ALLOWED_HOSTS.
  allowedHosts: string[]
}

// A 2025-era client's session: it subscribes to resources and holds a GET stream for their notifications, so it
// must outlive a request (the 2026 protocol needs no session and is served statelessly).
interface Session {
  transport: NodeStreamableHTTPServerTransport
  server: McpServer
  agentId: number
  subscribed: Set<string>
  lastUsed: number
  // The token of the session's latest request: calls are made with it, so a rotated token is not used on.
  auth: AuthInfo
}

// Sessions idle this long are closed: a client that went away without DELETE must not hold memory for ever.
const SESSION_IDLE_MS = 60 * 60 * 1000

const mcp: FastifyPluginAsync<McpOptions> = async (app, { allowedHosts }) => {
  const allowed = allowedHosts.map((host) => host.toLowerCase())
  let tools: Tools | undefined
  // The tools are derived from the OpenAPI document, which is complete once every route is registered; once.
  const described = (): Tools => (tools ??= toolsOf(app.swagger()))

  // A tool call is the REST request it names, made in-process with the caller's token and the Host it came with.
  const callAs = (auth: () => AuthInfo, host: string | undefined): BusCall => async ({ method, path, query, headers, body, signal }) => {
    const qs = new URLSearchParams(query).toString()
    const res = await app.inject({
      method: method as 'GET',
      url: qs === '' ? path : `${path}?${qs}`,
      headers: { ...headers, authorization: `Bearer ${auth().token}`, ...(host !== undefined && { host }) },
      ...(body !== undefined && { payload: body as object }),
      ...(signal !== undefined && { signal })
    })
    return { status: res.statusCode, body: res.body === '' ? undefined : res.json() }
  }
  const build = (auth: () => AuthInfo, host: string | undefined): McpServer =>
    buildMcpServer({ tools: described(), call: callAs(auth, host), agent: auth().clientId })

  // 2026-era requests: stateless, one server per request. Subscribers listen on a stream of their own
  // (subscriptions/listen) and hear resourceUpdated from `notify`.
  const modern = createMcpHandler(({ authInfo, requestInfo }) => build(() => authInfo as AuthInfo, requestInfo?.headers.get('host') ?? undefined), { legacy: 'reject' })
  const serveModern = toNodeHandler(modern)

  const sessions = new Map<string, Session>()
  const closeSession = async (id: string, session: Session): Promise<void> => {
    sessions.delete(id)
    await session.transport.close().catch(() => {})
  }
  const sweep = setInterval(() => {
    for (const [id, session] of sessions) if (Date.now() - session.lastUsed > SESSION_IDLE_MS) void closeSession(id, session)
  }, 60_000)
  sweep.unref()

  // One process-wide listener (it does not count as any agent's reader, so it keeps no one online). A message event
  // names recipients by id, a resource by name: the names of agents that used /mcp on this node.
  const names = new Map<number, string>()
  const unsubscribe = app.fanout.subscribe(0, (event) => {
    if (event.kind !== 'message') return
    const broadcast = event.recipientIds === null
    const ids = event.recipientIds ?? [...names.keys()].filter((id) => id !== event.senderId)
    for (const id of ids) {
      const name = names.get(id)
      if (name !== undefined) void modern.notify.resourceUpdated(inboxUri(name))
    }
    for (const session of sessions.values()) {
      const own = inboxUri(session.auth.clientId)
      const meant = broadcast ? session.agentId !== event.senderId : event.recipientIds?.includes(session.agentId) === true
      if (meant && session.subscribed.has(own)) void session.server.server.sendResourceUpdated({ uri: own }).catch(() => {})
    }
  })

  async function serveLegacy (request: FastifyRequest, reply: FastifyReply, auth: AuthInfo, agentId: number): Promise<void> {
    const id = request.headers['mcp-session-id']
    const session = typeof id === 'string' ? sessions.get(id) : undefined
    if (session !== undefined) {
      // A session belongs to the agent that opened it.
      if (session.agentId !== agentId) return sendJson(reply, 403, { jsonrpc: '2.0', error: { code: -32001, message: 'this session belongs to another agent' }, id: null })
      session.lastUsed = Date.now()
      session.auth = auth
      return session.transport.handleRequest(Object.assign(request.raw, { auth }), reply.raw, request.body)
    }
    if (id !== undefined || request.method !== 'POST' || !isInitializeRequest(request.body)) {
      return sendJson(reply, id === undefined ? 400 : 404, { jsonrpc: '2.0', error: { code: -32001, message: id === undefined ? 'no session: initialize first' : 'session not found' }, id: null })
    }
    let current = auth
    const server = build(() => current, request.headers.host)
    const subscribed = new Set<string>()
    server.server.setRequestHandler('resources/subscribe', async ({ params }) => { subscribed.add(params.uri); return {} })
    server.server.setRequestHandler('resources/unsubscribe', async ({ params }) => { subscribed.delete(params.uri); return {} })
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sessionId) => {
        const added: Session = {
          transport, server, agentId, subscribed, lastUsed: Date.now(),
          get auth () { return current },
          set auth (next) { current = next }
        }
        sessions.set(sessionId, added)
      }
    })
    transport.onclose = () => { if (transport.sessionId !== undefined) sessions.delete(transport.sessionId) }
    await server.connect(transport)
    await transport.handleRequest(Object.assign(request.raw, { auth }), reply.raw, request.body)
    // An initialize the transport refused (a wrong Accept header, say) made no session: nothing may stay behind.
    if (transport.sessionId === undefined || !sessions.has(transport.sessionId)) await transport.close().catch(() => {})
  }

  // Before the server stops accepting: open notification streams would otherwise hold the close until the grace
  // period ends.
  app.addHook('preClose', async () => {
    clearInterval(sweep)
    unsubscribe()
    await Promise.all([...sessions].map(async ([id, session]) => closeSession(id, session)))
    await modern.close()
  })

  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    schema: { hide: true },
    onRequest: [async (request, reply) => {
      // The SDK's DNS-rebinding and Origin protections, before anything else.
      const host = validateHostHeader(request.headers.host, allowed)
      const origin = validateOriginHeader(request.headers.origin, allowed)
      const refused = !host.ok ? host.message : !origin.ok ? origin.message : undefined
      if (refused !== undefined) return reply.code(403).send({ jsonrpc: '2.0', error: { code: -32000, message: refused }, id: null })
    }, app.requireAgent],
    handler: async (request, reply) => {
      const { agent, tokenHash } = agentOf(request)
      const token = /^Bearer\s+(\S+)/i.exec(request.headers.authorization ?? '')?.[1] as string
      const auth: AuthInfo = { token, clientId: agent.name, scopes: [], extra: { agentId: agent.id, tokenHash } }
      // A listen stream may subscribe to the caller's own inbox and the agent list, nothing else: the SDK routes a
      // resource's updates to whoever names its URI.
      const foreign = subscriptionsOf(request.body).filter((uri) => uri !== inboxUri(agent.name) && uri !== AGENTS_URI)
      if (foreign.length > 0) {
        return reply.code(403).send({ jsonrpc: '2.0', error: { code: -32001, message: `not yours to subscribe to: ${foreign.join(', ')}` }, id: (request.body as { id?: unknown })?.id ?? null })
      }
      names.set(agent.id, agent.name)
      reply.hijack()
      const web = await toWebRequest(request.raw, request.body)
      if (await isLegacyRequest(web, request.body)) return serveLegacy(request, reply, auth, agent.id)
      await serveModern(Object.assign(request.raw, { auth }), reply.raw, request.body)
    }
  })
}

// The resource URIs a subscriptions/listen request names.
function subscriptionsOf (body: unknown): string[] {
  const messages = Array.isArray(body) ? body : [body]
  return messages.flatMap((m) => {
    const message = m as { method?: string, params?: { notifications?: { resourceSubscriptions?: unknown } } } | null
    if (message?.method !== 'subscriptions/listen') return []
    const uris = message.params?.notifications?.resourceSubscriptions
    return Array.isArray(uris) ? uris.map(String) : []
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
