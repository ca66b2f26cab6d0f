import { McpServer, fromJsonSchema, type CallToolResult, type JsonSchemaType, type StandardSchemaWithJSON, type ToolAnnotations } from '@modelcontextprotocol/server'

// The MCP surface of the bus: one tool per REST operation, derived from the OpenAPI document that the route schemas
// generate (so a new route gets its tool, and a tool cannot drift from its route), plus wait_for_messages; and the
// caller's inbox and the agent list as resources. Each tool call is the REST request it names, made with the
// caller's own token (`call`): the same authorization, rate limits, validation and error messages as over HTTP.
// The bus serves this at /mcp (plugins/mcp.ts, calling itself in-process); `agent-bus mcp` serves it over stdio,
// calling a bus over the network.

// One HTTP request to the bus, as the caller.
// signal: the tool call was cancelled, or its client went away (a long-poll must not hold a reader for nothing).
export type BusCall = (request: { method: string, path: string, query?: Record<string, string>, headers?: Record<string, string>, body?: unknown, signal?: AbortSignal }) =>
  Promise<{ status: number, body: unknown }>

type Schema = Record<string, any>

interface Parameter { name: string, in: 'path' | 'query' | 'header', required?: boolean, description?: string, schema: Schema }

export interface Operation {
  tool: string
  method: string
  path: string
  description: string
  parameters: Array<Parameter & { property: string }>
  body: Schema | undefined
  output: Schema | undefined
}

// Operations that are not tools: the event stream (wait_for_messages serves a model instead) and the load
// balancers' health check.
const NOT_TOOLS = new Set(['streamMessages', 'getHealth'])

// What a model choosing among tools needs to know first, ahead of the operation's own description.
const GUIDANCE: Record<string, string> = {
  send_message: 'Send a message to other agents on the bus: `to` names one agent or several; `topic` publishes to a topic\'s subscribers; ' +
    '`queue` puts a task on a work queue for one worker to claim; leave all three out to broadcast to every agent. Set reply_to to answer a message, ' +
    'ack_within_s to be told when a recipient has not acknowledged it in time.',
  list_inbox: 'Read your inbox: messages other agents sent you, most urgent first. Use unread=true for what you have not acknowledged yet.',
  wait_for_messages: '',
  ack_messages: 'Acknowledge messages you have processed, by id: they stop counting as unread and their senders get a read receipt.',
  get_message: 'Read one message you sent or received, by id, with its read receipts.',
  get_thread: 'Read a whole conversation: every message of a thread (a message and its replies) that you can see.',
  list_history: 'Search what you sent and received, oldest first, optionally with one agent, in a thread, or in a time window.',
  list_agents: 'See which agents are registered on the bus and which are online, with what they say they can do.',
  get_agent: 'Look one agent up by name: its description, capabilities and whether it is online.',
  heartbeat: 'Tell the bus you are alive, so that you show as online to other agents.',
  get_stats: 'Figures about the bus: agents, messages, unread.',
  register_agent: 'Register a new agent on the bus; answers its token once.',
  update_agent: 'Change your description, capabilities, metadata or webhook.',
  rotate_token: 'Replace your token with a new one: the current token stops working at once.',
  deregister_agent: 'Remove an agent from the bus for good; its token stops working.',
  create_topic: 'Create a topic that agents can subscribe to and publish on (send_message with `topic`).',
  list_topics: 'See the topics on the bus, how many agents follow each, and which you follow.',
  subscribe_topic: 'Follow a topic: from now on every message published to it reaches your inbox.',
  unsubscribe_topic: 'Stop following a topic.',
  create_queue: 'Create a work queue: tasks put on it (send_message with `queue`) go to one worker each.',
  list_queues: 'See the work queues and how many tasks each has waiting, in progress and dead.',
  claim_queue: 'Take tasks from a work queue to work on: each is yours until its lease_expires_at. When done, call ack_queue; ' +
    'if you cannot finish, release_queue; if you need longer, extend_queue.',
  ack_queue: 'Mark tasks you claimed from a work queue as done.',
  release_queue: 'Give back tasks you claimed but cannot finish, so another worker can take them.',
  extend_queue: 'Keep tasks you claimed longer: their leases now end lease_s from now.',
  list_dead_letters: 'See the tasks of a work queue that failed too often (dead letters).',
  requeue_dead_letters: 'Put dead-letter tasks back on their work queue for another try.'
}

const snakeCase = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`).replace(/[^a-z0-9_]/g, '_')

// The document's local references inlined: a tool's schemas must stand alone.
function inline (schema: unknown, doc: Schema, seen: string[] = []): any {
  if (Array.isArray(schema)) return schema.map((item) => inline(item, doc, seen))
  if (schema === null || typeof schema !== 'object') return schema
  const { $ref, ...rest } = schema as Schema
  if (typeof $ref === 'string') {
    const name = $ref.replace('#/components/schemas/', '')
    if (seen.includes(name)) throw new Error(`recursive schema ${name} cannot be a tool's schema`)
    return { ...inline(doc.components.schemas[name], doc, [...seen, name]), ...inline(rest, doc, seen) }
  }
  return Object.fromEntries(Object.entries(rest).map(([key, value]) => [key, inline(value, doc, seen)]))
}

// The operations of an OpenAPI document (the bus's own, from app.swagger() or GET /openapi.json) as tools.
export function operationsOf (doc: Schema): Operation[] {
  const operations: Operation[] = []
  for (const [path, item] of Object.entries(doc.paths as Record<string, Schema>)) {
    for (const [method, op] of Object.entries(item)) {
      if (typeof op !== 'object' || op === null || typeof op.operationId !== 'string' || NOT_TOOLS.has(op.operationId)) continue
      const success = Object.entries(op.responses ?? {}).find(([status]) => /^2\d\d$/.test(status))?.[1] as Schema | undefined
      const output = success?.content?.['application/json']?.schema
      const parameters = ((op.parameters ?? []) as Parameter[]).map((p) => ({ ...p, property: snakeCase(p.name.replace(/-/g, '_')), schema: inline(p.schema, doc) }))
      const tool = snakeCase(op.operationId)
      operations.push({
        tool,
        method: method.toUpperCase(),
        path,
        description: [GUIDANCE[tool], op.summary && `${op.summary}.`, op.description].filter(Boolean).join(' '),
        parameters,
        body: inline(op.requestBody?.content?.['application/json']?.schema, doc),
        output: output === undefined ? undefined : inline(output, doc)
      })
    }
  }
  return operations
}

// One input object for the tool: the path, query and header parameters, and the body's properties beside them.
function inputSchemaOf ({ parameters, body }: Operation): Schema {
  const properties: Schema = {}
  const required: string[] = []
  for (const p of parameters) {
    properties[p.property] = { ...p.schema, ...(p.description !== undefined && { description: p.description }) }
    if (p.required === true) required.push(p.property)
  }
  if (body !== undefined) {
    Object.assign(properties, body.properties)
    required.push(...(body.required ?? []))
  }
  return { type: 'object', properties, ...(required.length > 0 && { required }), additionalProperties: false }
}

// Truthful hints: reads change nothing; an ack or an update gives the same state when repeated; deregistration and
// rotation remove something for good (an unsubscription does not: subscribing again undoes it).
const IDEMPOTENT = new Set(['ack_messages', 'heartbeat', 'ack_queue', 'extend_queue'])
function annotationsOf ({ tool, method }: Operation): ToolAnnotations {
  return {
    readOnlyHint: method === 'GET',
    destructiveHint: (method === 'DELETE' && tool !== 'unsubscribe_topic') || tool === 'rotate_token',
    idempotentHint: method === 'GET' || method === 'PUT' || method === 'PATCH' || method === 'DELETE' || IDEMPOTENT.has(tool),
    openWorldHint: false
  }
}

// The tool's arguments as the request its operation describes.
function requestOf (op: Operation, args: Record<string, unknown>) {
  let path = op.path
  const query: Record<string, string> = {}
  const headers: Record<string, string> = {}
  const body: Record<string, unknown> = { ...args }
  for (const p of op.parameters) {
    const value = args[p.property]
    delete body[p.property]
    if (value === undefined) continue
    if (p.in === 'path') path = path.replace(`{${p.name}}`, encodeURIComponent(String(value)))
    else if (p.in === 'query') query[p.name] = Array.isArray(value) ? value.join(',') : String(value)
    else headers[p.name] = String(value)
  }
  return { method: op.method, path, query, headers, body: op.body === undefined ? undefined : body }
}

interface Shown {
  id: number, from: string, to?: string[], priority: string, subject: string | null, body: string, reply_to?: number | null, read_at?: string | null,
  data?: unknown, topic?: string | null, queue?: string | null, ack_by?: string | null
}
// A queue claim's item, or a dead letter: the message and how it stands in the queue.
interface Leased { message: Shown, delivery_count: number, lease_expires_at?: string, dead_at?: string | null }

const messageLine = (m: Shown): string => `#${m.id} from ${m.from}${m.topic != null ? ` (#${m.topic})` : ''}${m.queue != null ? ` (queue ${m.queue})` : ''}` +
  `${m.priority === 'normal' ? '' : ` [${m.priority}]`}${m.ack_by != null ? ` (ack by ${m.ack_by})` : ''}` +
  `${m.reply_to != null ? ` (reply to #${m.reply_to})` : ''}${m.subject != null ? ` — ${m.subject}` : ''}: ${m.body}` +
  `${m.data != null ? ` ${JSON.stringify(m.data)}` : ''}`

// What a model reads easily: one line per message (who, priority, subject, body, id), one per agent; JSON otherwise.
export function render (result: unknown): string {
  if (result === undefined || result === null) return 'Done.'
  const r = result as Schema
  const leased = Array.isArray(r.messages) && r.messages.length > 0 && 'message' in (r.messages[0] as object) ? r.messages as Leased[] : undefined
  if (leased !== undefined || Array.isArray(r.dead)) {
    const lines = (leased ?? r.dead as Leased[]).map((l) => `${messageLine(l.message)} (delivery ${l.delivery_count}` +
      `${l.lease_expires_at !== undefined ? `, leased to you until ${l.lease_expires_at}` : `, dead since ${l.dead_at ?? '?'}`})`)
    const more = r.next_cursor != null ? `\n(more: cursor ${r.next_cursor})` : ''
    return lines.length === 0 ? 'None.' : `${lines.length} message${lines.length === 1 ? '' : 's'}:\n${lines.join('\n')}${more}`
  }
  if (Array.isArray(r.messages)) {
    const lines = (r.messages as Shown[]).map(messageLine)
    const more = r.next_cursor != null ? `\n(more: cursor ${r.next_cursor})` : ''
    return lines.length === 0 ? 'No messages.' : `${lines.length} message${lines.length === 1 ? '' : 's'}:\n${lines.join('\n')}${more}`
  }
  if (Array.isArray(r.agents)) {
    return (r.agents as Array<{ name: string, status: string, description: string | null, capabilities?: string[] }>)
      .map((a) => `${a.name} (${a.status})${a.description ? ` — ${a.description}` : ''}${a.capabilities?.length ? ` [${a.capabilities.join(', ')}]` : ''}`)
      .join('\n') || 'No agents.'
  }
  if (typeof r.id === 'number' && typeof r.recipients === 'number' && Array.isArray(r.to)) {
    const where = r.topic != null ? `topic ${r.topic}` : r.queue != null ? `queue ${r.queue}` : r.broadcast === true ? 'everyone' : (r.to as string[]).join(', ')
    return `Sent message #${r.id} to ${where}${r.queue != null ? '' : ` (${r.recipients} recipient${r.recipients === 1 ? '' : 's'})`}.`
  }
  if (typeof r.id === 'number' && typeof r.body === 'string') return `${messageLine(r as Shown)}\n${JSON.stringify(result, null, 2)}`
  return JSON.stringify(result, null, 2)
}

// A REST answer as a tool result: the same JSON as structured content, or a tool error with the REST error's message.
function resultOf ({ status, body }: { status: number, body: unknown }): CallToolResult {
  if (status >= 400) {
    const e = body as { code?: string, message?: string } | undefined
    return { isError: true, content: [{ type: 'text', text: `${e?.code ?? `HTTP ${status}`}: ${e?.message ?? 'request failed'}` }] }
  }
  const structured = body !== null && typeof body === 'object' && !Array.isArray(body) ? body as Record<string, unknown> : undefined
  return { content: [{ type: 'text', text: render(body) }], ...(structured !== undefined && { structuredContent: structured }) }
}

const schemaOf = (schema: Schema) => fromJsonSchema<Record<string, unknown>>(schema as JsonSchemaType)

// The longest wait_for_messages may hold a call: agent hosts abandon a tool call after roughly 30 to 120 s.
export const MAX_WAIT_S = 25

type Compiled = StandardSchemaWithJSON<Record<string, unknown>, Record<string, unknown>>
interface ToolConfig { title: string, description: string, inputSchema: Compiled, outputSchema?: Compiled, annotations: ToolAnnotations }
interface ToolDefinition { op: Operation, config: ToolConfig }

// The tools of a document, with their schemas compiled once: the SDK compiles a validator per schema object and keeps
// it for the life of the process, and the stateless protocol builds a server per request.
export interface Tools {
  version: string
  operations: Operation[]
  definitions: ToolDefinition[]
  wait: ToolDefinition['config'] | undefined
}

export function toolsOf (doc: Schema): Tools {
  const operations = operationsOf(doc)
  const definitions = operations.map((op) => ({
    op,
    config: {
      title: op.description.split('. ')[0],
      description: op.description,
      inputSchema: schemaOf(inputSchemaOf(op)),
      ...(op.output !== undefined && op.output.type === 'object' && { outputSchema: schemaOf(op.output) }),
      annotations: annotationsOf(op)
    }
  }))
  const inbox = operations.find((op) => op.tool === 'list_inbox')
  const wait = inbox === undefined
    ? undefined
    : {
        title: 'Wait for messages',
        description: 'Wait until a message for you arrives, then read it. Answers at once with your unread messages when there are any, ' +
          `as soon as one arrives otherwise, or with none when timeout_s is up (default 20, at most ${MAX_WAIT_S}). ` +
          'Use it instead of calling list_inbox in a loop; acknowledge what you processed with ack_messages.',
        inputSchema: schemaOf({
          type: 'object',
          properties: { timeout_s: { type: 'integer', minimum: 0, maximum: MAX_WAIT_S, default: 20, description: 'How long to wait for a message, in seconds.' } },
          additionalProperties: false
        }),
        ...(inbox.output !== undefined && { outputSchema: schemaOf(inbox.output) }),
        annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false }
      }
  return { version: String(doc.info?.version ?? '0'), operations, definitions, wait }
}

export interface SurfaceOptions {
  tools: Tools
  call: BusCall
  // The caller's agent name, for its inbox resource's URI; undefined for the admin.
  agent: string | undefined
}

export const inboxUri = (agent: string): string => `bus://agents/${encodeURIComponent(agent)}/inbox`
export const AGENTS_URI = 'bus://agents'

export function buildMcpServer ({ tools, call, agent }: SurfaceOptions): McpServer {
  const server = new McpServer({ name: 'agent-bus', version: tools.version }, { capabilities: { resources: { subscribe: true } } })
  for (const { op, config } of tools.definitions) {
    server.registerTool(op.tool, config, async (args: Record<string, unknown>, ctx) =>
      resultOf(await call({ ...requestOf(op, args), signal: ctx.mcpReq.signal })))
  }
  if (tools.wait !== undefined) {
    server.registerTool('wait_for_messages', tools.wait, async (args: Record<string, unknown>, ctx) => resultOf(await call({
      method: 'GET', path: '/inbox', query: { unread: 'true', wait: String(args.timeout_s ?? 20) }, signal: ctx.mcpReq.signal
    })))
  }

  if (agent !== undefined && tools.wait !== undefined) {
    const uri = inboxUri(agent)
    server.registerResource('inbox', uri, {
      title: `${agent}'s unread inbox`,
      description: 'Your unread messages, most urgent first. Subscribe to hear when a message arrives; then read it again.',
      mimeType: 'application/json'
    }, async () => ({ contents: [{ uri, mimeType: 'application/json', text: JSON.stringify((await call({ method: 'GET', path: '/inbox', query: { unread: 'true' } })).body) }] }))
  }
  server.registerResource('agents', AGENTS_URI, {
    title: 'Agents on the bus',
    description: 'Every registered agent, with whether it is online.',
    mimeType: 'application/json'
  }, async () => ({ contents: [{ uri: AGENTS_URI, mimeType: 'application/json', text: JSON.stringify((await call({ method: 'GET', path: '/agents' })).body) }] }))
  return server
}
