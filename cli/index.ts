#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { Command, CommanderError, Option } from 'commander'
import { EventSource } from 'eventsource'
import createClient from 'openapi-fetch'
import type { paths } from '../client/api.js'

// `agent-bus`: the bus from a shell. Every command but serve, backup and mcp talks to a bus over HTTP through the
// client generated from openapi.yaml (client/api.ts), so the CLI is also a contract test. Exit codes: 0 done, 1 the
// bus refused or could not be reached (its message on stderr), 2 a usage error.

class Failure extends Error {}

interface Global { url: string, token?: string, json?: boolean }

const program = new Command('agent-bus')
  .description('A message bus for AI agents: run it, and talk to it from a shell.')
  .addOption(new Option('--url <url>', 'the bus').env('AGENT_BUS_URL').default('http://127.0.0.1:8091'))
  .addOption(new Option('--token <token>', 'an agent token (or the admin token)').env('AGENT_BUS_TOKEN'))
  .option('--json', 'JSON output (NDJSON for tail), for scripts and agents')
  .showHelpAfterError()
  .exitOverride()

const globals = (): Global => program.opts<Global>()

function api (needsToken = true) {
  const { url, token } = globals()
  if (needsToken && token === undefined) throw new CommanderError(2, 'agent-bus.token', 'no token: pass --token or set AGENT_BUS_TOKEN')
  return createClient<paths>({ baseUrl: url.replace(/\/+$/, ''), headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
}

// The answer, or a Failure with the bus's own words.
async function answer<T> (pending: Promise<{ data?: T, error?: unknown, response: Response }>): Promise<T> {
  let result
  try {
    result = await pending
  } catch (err) {
    throw new Failure(`cannot reach the bus at ${globals().url}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`)
  }
  const { data, error, response } = result
  if (!response.ok) {
    const e = error as { code?: string, message?: string } | undefined
    throw new Failure(`${e?.code ?? `HTTP ${response.status}`}: ${e?.message ?? response.statusText}`)
  }
  return data as T
}

const print = (line: string): void => { process.stdout.write(`${line}\n`) }
const json = (value: unknown): void => print(JSON.stringify(value))

interface Shown {
  id: number, from: string, to: string[], priority: string, subject: string | null, body: string, created_at: string, read_at?: string | null,
  reply_to?: number | null, topic?: string | null, queue?: string | null
}

// Where a message went: its recipients, #topic, queue:name, or * (everyone).
const destination = (m: Shown): string =>
  m.topic != null ? `#${m.topic}` : m.queue != null ? `queue:${m.queue}` : m.to.length === 0 ? '*' : m.to.join(',')

// One line per message: id, when, who, priority, subject, body.
function messageLine (m: Shown): string {
  const when = m.created_at.replace('T', ' ').slice(0, 19)
  const priority = m.priority === 'normal' ? '' : ` [${m.priority}]`
  const reply = m.reply_to != null ? ` ↩${m.reply_to}` : ''
  return `${String(m.id).padStart(6)}  ${when}  ${m.from} → ${destination(m)}${priority}${reply}  ${m.subject != null ? `${m.subject}: ` : ''}${m.body.replace(/\n/g, ' ')}`
}

function showMessages (page: { messages: Shown[], next_cursor?: string | null }): void {
  if (globals().json === true) return json(page)
  for (const m of page.messages) print(messageLine(m))
  if (page.messages.length === 0) print('no messages')
  if (page.next_cursor != null) print(`more: --cursor ${page.next_cursor}`)
}

const show = (value: unknown, human: () => void): void => { if (globals().json === true) json(value); else human() }

const integer = (what: string) => (value: string): number => {
  if (!/^\d+$/.test(value)) throw new CommanderError(2, 'agent-bus.argument', `${what} must be a whole number, not "${value}"`)
  return Number(value)
}
const list = (value: string, previous: string[] = []): string[] => [...previous, ...value.split(',').map((s) => s.trim()).filter(Boolean)]

program.command('serve')
  .description('run the bus (what npm start runs); configured by the environment, see the README')
  .action(async () => { await import('../server.js') })

program.command('register <name>')
  .description('register an agent; prints its token once')
  .option('--description <text>', 'what the agent does')
  .option('--capability <tag...>', 'capability tags (repeat or comma-separate)')
  .option('--webhook <url>', 'URL the bus POSTs new messages to')
  .action(async (name: string, o: { description?: string, capability?: string[], webhook?: string }) => {
    const agent = await answer(api(false).POST('/agents', {
      body: { name, description: o.description, capabilities: o.capability?.flatMap((c) => list(c)), webhook_url: o.webhook }
    }))
    show(agent, () => {
      print(`registered ${agent.name}. Its token, shown this once:\n\n  ${agent.token}\n`)
      print(`export AGENT_BUS_TOKEN=${agent.token}`)
    })
  })

program.command('send [body]')
  .description('send a message; the body is the argument, or stdin with "-"; without --to, --topic or --queue it goes to every agent')
  .option('--to <names>', 'recipients, comma-separated', list)
  .option('--topic <name>', 'publish to a topic\'s subscribers')
  .option('--queue <name>', 'put it on a work queue')
  .option('--ack-within <seconds>', 'recipients must acknowledge it within this many seconds, or it becomes overdue', integer('--ack-within'))
  .option('--subject <text>')
  .addOption(new Option('--priority <level>').choices(['normal', 'high', 'urgent']))
  .option('--reply-to <id>', 'the message this answers', integer('--reply-to'))
  .option('--data <json>', 'structured data, a JSON object')
  .option('--idempotency-key <key>', 'makes a retry safe: the same key stores one message')
  .action(async (body: string | undefined, o: {
    to?: string[], topic?: string, queue?: string, ackWithin?: number, subject?: string, priority?: 'normal' | 'high' | 'urgent', replyTo?: number, data?: string,
    idempotencyKey?: string
  }) => {
    if (body === undefined) throw new CommanderError(2, 'agent-bus.argument', 'no body: give it as an argument, or "-" to read stdin')
    // The newline that ends what a pipe or a heredoc sends is not part of the message.
    const text = body === '-' ? readFileSync(0, 'utf8').replace(/\r?\n$/, '') : body
    let data: Record<string, unknown> | undefined
    if (o.data !== undefined) {
      try {
        data = JSON.parse(o.data)
      } catch {
        throw new CommanderError(2, 'agent-bus.argument', '--data must be JSON')
      }
    }
    const sent = await answer(api().POST('/send', {
      params: { header: o.idempotencyKey === undefined ? {} : { 'idempotency-key': o.idempotencyKey } },
      body: { to: o.to, topic: o.topic, queue: o.queue, ack_within_s: o.ackWithin, body: text, subject: o.subject, priority: o.priority, reply_to: o.replyTo, data }
    }))
    const where = sent.topic !== null ? `topic ${sent.topic}` : sent.queue !== null ? `queue ${sent.queue}` : sent.broadcast ? 'everyone' : sent.to.join(', ')
    show(sent, () => print(`sent #${sent.id} to ${where}${sent.queue !== null ? '' : ` (${sent.recipients} recipient${sent.recipients === 1 ? '' : 's'})`}`))
  })

program.command('inbox')
  .description('read your inbox, most urgent first (what it shows counts as delivered)')
  .option('--unread', 'only what you have not acknowledged')
  .addOption(new Option('--priority <level>').choices(['normal', 'high', 'urgent']))
  .option('--wait <seconds>', 'hold an empty answer until a message arrives', integer('--wait'))
  .option('--limit <n>', 'at most this many', integer('--limit'))
  .option('--cursor <cursor>', 'the next page')
  .action(async (o: { unread?: boolean, priority?: 'normal' | 'high' | 'urgent', wait?: number, limit?: number, cursor?: string }) => {
    showMessages(await answer(api().GET('/inbox', { params: { query: { unread: o.unread, priority: o.priority, wait: o.wait, limit: o.limit, cursor: o.cursor } } })))
  })

program.command('ack <ids...>')
  .description('acknowledge messages you processed: their senders get read receipts')
  .action(async (ids: string[]) => {
    const result = await answer(api().POST('/ack', { body: { ids: ids.map(integer('a message id')) } }))
    show(result, () => print(`acknowledged ${result.acked}${result.already_read > 0 ? `, ${result.already_read} already read` : ''}${result.not_found.length > 0 ? `; not in your inbox: ${result.not_found.join(', ')}` : ''}`))
  })

program.command('tail')
  .description('follow your messages live (the event stream), reconnecting without loss; Ctrl-C to stop')
  .action(async () => {
    const { url, token } = globals()
    if (token === undefined) throw new CommanderError(2, 'agent-bus.token', 'no token: pass --token or set AGENT_BUS_TOKEN')
    // The eventsource package resumes by itself, sending Last-Event-ID, after a dropped connection; an answer other
    // than 200 (a 503 while the bus restarts, a proxy's 502) ends its EventSource, so tail opens a new one from the
    // last event it printed. A refused token (401, 403) ends tail.
    let lastEventId: string | undefined
    let events: EventSource | undefined
    let warned = false
    const connect = (): void => {
      const from = lastEventId
      const source = new EventSource(`${url.replace(/\/+$/, '')}/stream`, {
        fetch: async (input, init) => {
          const headers = new Headers(init?.headers)
          headers.set('authorization', `Bearer ${token}`)
          if (from !== undefined && !headers.has('last-event-id')) headers.set('last-event-id', from)
          return fetch(input, { ...init, headers })
        }
      })
      events = source
      source.addEventListener('message', (e) => {
        if (e.lastEventId !== '') lastEventId = e.lastEventId
        const message = JSON.parse(e.data) as Shown
        if (globals().json === true) json(message)
        else print(messageLine(message))
      })
      source.addEventListener('open', () => {
        if (warned) process.stderr.write('agent-bus tail: reconnected\n')
        warned = false
      })
      source.onerror = (e) => {
        const status = (e as { code?: number }).code
        if (status === 401 || status === 403) {
          process.stderr.write(`agent-bus tail: the bus refused the token (${status})\n`)
          process.exit(1)
        }
        if (!warned) process.stderr.write(`agent-bus tail: connection lost${status === undefined ? '' : ` (${status})`}, reconnecting…\n`)
        warned = true
        if (source.readyState === EventSource.CLOSED) setTimeout(() => { if (events === source) connect() }, 3000).unref()
      }
    }
    connect()
    // Keeps the process alive between a closed EventSource and the next one.
    const alive = setInterval(() => {}, 1 << 30)
    await new Promise<void>((resolve) => process.once('SIGINT', () => { clearInterval(alive); events?.close(); events = undefined; resolve() }))
  })

program.command('agents')
  .description('who is registered, and who is online')
  .action(async () => {
    const page = await answer(api().GET('/agents', {}))
    show(page, () => {
      for (const a of page.agents) print(`${a.status === 'online' ? '●' : '○'} ${a.name.padEnd(24)} ${a.description ?? ''}${a.capabilities.length > 0 ? `  [${a.capabilities.join(', ')}]` : ''}`)
    })
  })

program.command('agent <name>')
  .description('one agent: what it does, whether it is online')
  .action(async (name: string) => {
    const agent = await answer(api().GET('/agents/{name}', { params: { path: { name } } }))
    show(agent, () => print(JSON.stringify(agent, null, 2)))
  })

program.command('update <name>')
  .description('change an agent\'s description, capabilities or webhook (the agent itself, or the admin)')
  .option('--description <text>', 'what the agent does')
  .option('--capability <tag...>', 'capability tags (repeat or comma-separate); replaces the old ones')
  .option('--webhook <url>', 'URL the bus POSTs new messages to; "none" removes it')
  .action(async (name: string, o: { description?: string, capability?: string[], webhook?: string }) => {
    const agent = await answer(api().PATCH('/agents/{name}', {
      params: { path: { name } },
      body: { description: o.description, capabilities: o.capability?.flatMap((c) => list(c)), webhook_url: o.webhook === 'none' ? null : o.webhook }
    }))
    show(agent, () => print(`updated ${agent.name}`))
  })

program.command('rotate-token <name>')
  .description('replace an agent\'s token: the old one stops working at once; prints the new one once')
  .action(async (name: string) => {
    const rotated = await answer(api().POST('/agents/{name}/token', { params: { path: { name } } }))
    show(rotated, () => print(`new token for ${rotated.name}, shown this once:\n\n  ${rotated.token}\n\nexport AGENT_BUS_TOKEN=${rotated.token}`))
  })

program.command('deregister <name>')
  .description('remove an agent for good: its token stops working')
  .action(async (name: string) => {
    await answer(api().DELETE('/agents/{name}', { params: { path: { name } } }))
    show({ deregistered: name }, () => print(`deregistered ${name}`))
  })

program.command('heartbeat')
  .description('tell the bus you are alive (online to other agents)')
  .action(async () => {
    const beat = await answer(api().POST('/heartbeat', {}))
    show(beat, () => print(`${beat.name} online, ${beat.unread} unread`))
  })

program.command('history')
  .description('what you sent and received, oldest first')
  .option('--since <time>', 'ISO 8601, inclusive')
  .option('--until <time>', 'ISO 8601, exclusive')
  .option('--with <name>', 'only the conversation with this agent')
  .option('--topic <name>', 'only messages of this topic')
  .option('--limit <n>', 'at most this many', integer('--limit'))
  .option('--cursor <cursor>', 'the next page')
  .action(async (o: { since?: string, until?: string, with?: string, topic?: string, limit?: number, cursor?: string }) => {
    showMessages(await answer(api().GET('/history', { params: { query: o } })))
  })

const topic = program.command('topic').description('topics: publish to every subscriber (send --topic)')

topic.command('create <name>')
  .description('create a topic (it does not subscribe you)')
  .option('--description <text>', 'what it is about')
  .action(async (name: string, o: { description?: string }) => {
    const created = await answer(api().POST('/topics', { body: { name, description: o.description } }))
    show(created, () => print(`created topic ${created.name}`))
  })

topic.command('list')
  .description('every topic, its subscribers, and whether you are one (●)')
  .action(async () => {
    const page = await answer(api().GET('/topics', {}))
    show(page, () => {
      for (const t of page.topics) print(`${t.subscribed ? '●' : '○'} ${t.name.padEnd(24)} ${String(t.subscribers).padStart(5)} subscribers  ${t.description ?? ''}`)
      if (page.topics.length === 0) print('no topics')
    })
  })

for (const [action, method] of [['subscribe', 'PUT'], ['unsubscribe', 'DELETE']] as const) {
  topic.command(`${action} <name>`)
    .description(action === 'subscribe' ? 'get every message published to the topic from now on' : 'stop getting the topic\'s messages')
    .action(async (name: string) => {
      const request = { params: { path: { name } } }
      const result = await answer(method === 'PUT' ? api().PUT('/topics/{name}/subscription', request) : api().DELETE('/topics/{name}/subscription', request))
      show(result, () => print(`${result.subscribed ? 'subscribed to' : 'not subscribed to'} ${result.topic}${result.changed ? '' : ' (already)'}`))
    })
}

const queue = program.command('queue').description('work queues: each message to one worker, with leases (send --queue)')

queue.command('create <name>')
  .description('create a work queue')
  .option('--description <text>', 'what its work is')
  .option('--lease <seconds>', 'how long a claim holds a message (60)', integer('--lease'))
  .option('--max-deliveries <n>', 'deliveries without an ack before a message is dead (5)', integer('--max-deliveries'))
  .action(async (name: string, o: { description?: string, lease?: number, maxDeliveries?: number }) => {
    const created = await answer(api().POST('/queues', { body: { name, description: o.description, lease_s: o.lease, max_deliveries: o.maxDeliveries } }))
    show(created, () => print(`created queue ${created.name} (lease ${created.lease_s} s, ${created.max_deliveries} deliveries)`))
  })

queue.command('list')
  .description('every work queue with its available, leased and dead messages')
  .action(async () => {
    const page = await answer(api().GET('/queues', {}))
    show(page, () => {
      for (const q of page.queues) print(`${q.name.padEnd(24)} available ${q.available}  leased ${q.leased}  delayed ${q.delayed}  dead ${q.dead}`)
      if (page.queues.length === 0) print('no queues')
    })
  })

queue.command('claim <name>')
  .description('lease messages to work on; finish each with "queue ack", or give it back with "queue release"')
  .option('--limit <n>', 'at most this many (1)', integer('--limit'))
  .option('--wait <seconds>', 'hold an empty answer until work arrives', integer('--wait'))
  .option('--lease <seconds>', 'the lease, instead of the queue\'s', integer('--lease'))
  .action(async (name: string, o: { limit?: number, wait?: number, lease?: number }) => {
    const claimed = await answer(api().POST('/queues/{name}/claim', { params: { path: { name } }, body: { limit: o.limit, wait_s: o.wait, lease_s: o.lease } }))
    show(claimed, () => {
      for (const c of claimed.messages) print(`${messageLine(c.message)}  (delivery ${c.delivery_count}, lease until ${c.lease_expires_at})`)
      if (claimed.messages.length === 0) print('no work')
    })
  })

queue.command('ack <name> <ids...>')
  .description('finish messages you claimed: they leave the queue')
  .action(async (name: string, ids: string[]) => {
    const result = await answer(api().POST('/queues/{name}/ack', { params: { path: { name } }, body: { ids: ids.map(integer('a message id')) } }))
    show(result, () => print(`acked ${result.acked}${result.already_acked > 0 ? `, ${result.already_acked} already` : ''}`))
  })

queue.command('release <name> <ids...>')
  .description('give back messages you claimed, unfinished')
  .option('--delay <seconds>', 'available again only after this long', integer('--delay'))
  .action(async (name: string, ids: string[], o: { delay?: number }) => {
    const result = await answer(api().POST('/queues/{name}/release', { params: { path: { name } }, body: { ids: ids.map(integer('a message id')), delay_s: o.delay } }))
    show(result, () => print(`released ${result.released}${result.dead > 0 ? `; ${result.dead} had had their deliveries and are dead letters now` : ''}`))
  })

queue.command('extend <name> <ids...>')
  .description('keep messages you claimed longer')
  .requiredOption('--lease <seconds>', 'the leases now end this long from now', integer('--lease'))
  .action(async (name: string, ids: string[], o: { lease: number }) => {
    const result = await answer(api().POST('/queues/{name}/extend', { params: { path: { name } }, body: { ids: ids.map(integer('a message id')), lease_s: o.lease } }))
    show(result, () => print(`extended ${result.extended} until ${result.lease_expires_at}`))
  })

queue.command('dead <name>')
  .description('the dead letters of a queue')
  .option('--limit <n>', 'at most this many', integer('--limit'))
  .option('--cursor <cursor>', 'the next page')
  .action(async (name: string, o: { limit?: number, cursor?: string }) => {
    const page = await answer(api().GET('/queues/{name}/dead', { params: { path: { name }, query: o } }))
    show(page, () => {
      for (const d of page.dead) print(`${messageLine(d.message)}  (${d.delivery_count} deliveries, last to ${d.claimed_by ?? '?'}, dead since ${d.dead_at ?? '?'})`)
      if (page.dead.length === 0) print('no dead letters')
      if (page.next_cursor !== null) print(`more: --cursor ${page.next_cursor}`)
    })
  })

queue.command('requeue <name> [ids...]')
  .description('put dead letters back in the queue (all of them without ids)')
  .action(async (name: string, ids: string[]) => {
    const result = await answer(api().POST('/queues/{name}/dead/requeue', {
      params: { path: { name } }, body: ids.length === 0 ? {} : { ids: ids.map(integer('a message id')) }
    }))
    show(result, () => print(`requeued ${result.requeued.length}${result.not_dead.length > 0 ? `; not dead letters: ${result.not_dead.join(', ')}` : ''}`))
  })

program.command('thread <id>')
  .description('a message and every reply to it that you can see')
  .action(async (id: string) => {
    const thread = await answer(api().GET('/threads/{id}', { params: { path: { id: integer('a thread id')(id) } } }))
    show(thread, () => { for (const m of thread.messages) print(messageLine(m)) })
  })

program.command('stats')
  .description('figures about the bus')
  .action(async () => {
    const stats = await answer(api().GET('/stats', {}))
    show(stats, () => print(JSON.stringify(stats, null, 2)))
  })

program.command('backup <file>')
  .description('a consistent copy of the SQLite database (BUS_DB) while the bus runs')
  .option('--force', 'overwrite <file>')
  .action(async (file: string, o: { force?: boolean }) => {
    process.argv = [process.argv[0], 'backup', ...(o.force === true ? ['--force'] : []), file]
    await import('../scripts/backup.js')
  })

program.command('mcp')
  .description('the bus\'s MCP tools over stdio, for hosts that start MCP servers as commands')
  .action(async () => {
    const { url, token } = globals()
    if (token === undefined) throw new CommanderError(2, 'agent-bus.token', 'no token: pass --token or set AGENT_BUS_TOKEN')
    const { serveBridge } = await import('../mcp/stdio.js')
    await serveBridge({ url, token })
  })

try {
  await program.parseAsync()
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version end here too, with code 0; commander has printed its own usage errors, not ours.
    if (err.code.startsWith('agent-bus.')) process.stderr.write(`agent-bus: ${err.message}\n`)
    process.exit(err.exitCode === 0 ? 0 : 2)
  }
  if (err instanceof Failure || (err as { name?: string }).name === 'BridgeError') {
    process.stderr.write(`agent-bus: ${(err as Error).message}\n`)
    process.exit(1)
  }
  throw err
}
