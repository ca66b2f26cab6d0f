import { serveStdio } from '@modelcontextprotocol/server/stdio'
import { EventSource } from 'eventsource'
import { buildMcpServer, inboxUri, toolsOf, type BusCall } from './tools.js'

// `agent-bus mcp`: the bus's MCP tools over stdio, for hosts that start MCP servers as commands and for agents on
// other machines. It forwards each call to a bus over HTTP with the agent's token, so what it answers is what the bus
// answers. The tools come from the bus's own OpenAPI document, so the bridge offers what that bus offers. A
// subscription to the inbox is served from the bus's event stream (/stream): each message event becomes a
// notifications/resources/updated, and the inbox stays the truth.

export interface BridgeOptions {
  url: string
  token: string
  // Where to say what goes wrong; stdout carries the protocol.
  log?: (line: string) => void
}

export class BridgeError extends Error {}

export function httpCall (base: string, token: string): BusCall {
  return async ({ method, path, query, headers, body, signal }) => {
    const qs = new URLSearchParams(query).toString()
    const res = await fetch(`${base}${path}${qs === '' ? '' : `?${qs}`}`, {
      method,
      headers: { ...headers, authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
      ...(signal !== undefined && { signal })
    })
    const text = await res.text()
    let parsed: unknown
    try {
      parsed = text === '' ? undefined : JSON.parse(text)
    } catch {
      parsed = { message: text.slice(0, 200) }
    }
    return { status: res.status, body: parsed }
  }
}

export async function serveBridge ({ url, token, log = (line) => process.stderr.write(`${line}\n`) }: BridgeOptions): Promise<{ close: () => Promise<void> }> {
  const base = url.replace(/\/+$/, '')
  const call = httpCall(base, token)
  let doc: Record<string, any>
  let me: { name: string }
  try {
    const res = await fetch(`${base}/openapi.json`)
    if (!res.ok) throw new Error(`GET /openapi.json answered ${res.status}`)
    doc = await res.json() as Record<string, any>
    const beat = await call({ method: 'POST', path: '/heartbeat' })
    if (beat.status !== 200) throw new Error((beat.body as { message?: string } | undefined)?.message ?? `POST /heartbeat answered ${beat.status}`)
    me = beat.body as { name: string }
  } catch (err) {
    throw new BridgeError(`cannot use the bus at ${base}: ${(err as Error).message}`)
  }
  const tools = toolsOf(doc)
  const uri = inboxUri(me.name)

  // The bus's event stream, opened on the first subscription; reconnects by itself with Last-Event-ID.
  let events: EventSource | undefined
  const listeners = new Set<() => void>()
  const watchInbox = (notify: () => void): void => {
    listeners.add(notify)
    if (events !== undefined) return
    events = new EventSource(`${base}/stream`, {
      fetch: async (input, init) => fetch(input, { ...init, headers: { ...init?.headers, authorization: `Bearer ${token}` } })
    })
    events.addEventListener('message', () => { for (const listener of listeners) listener() })
    events.onerror = () => log('agent-bus mcp: the event stream dropped; reconnecting')
  }

  const handle = serveStdio((ctx) => {
    const server = buildMcpServer({ tools, call, agent: me.name })
    const updated = (): void => { void server.server.sendResourceUpdated({ uri }).catch(() => {}) }
    if (ctx.era === 'modern') {
      watchInbox(updated)
    } else {
      server.server.setRequestHandler('resources/subscribe', async ({ params }) => {
        if (params.uri === uri) watchInbox(updated)
        return {}
      })
      server.server.setRequestHandler('resources/unsubscribe', async ({ params }) => {
        if (params.uri === uri) listeners.delete(updated)
        return {}
      })
    }
    return server
  })
  log(`agent-bus mcp: serving ${tools.definitions.length + 1} tools for ${me.name} on ${base}`)
  const close = async (): Promise<void> => {
    events?.close()
    await handle.close()
  }
  // The host closed our stdin: it is done with us. The event stream would otherwise keep the process (and a reader
  // on the bus, which keeps the agent online) alive.
  process.stdin.once('end', () => { void close().finally(() => process.exit(0)) })
  return { close }
}
