import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from '@modelcontextprotocol/client'
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio'
import t, { type Test } from 'tap'
import { testDb } from './helper.js'
import { freePort, startServer } from './process.js'

// Every test here starts real processes (a server, CLI runs, MCP clients): on a busy machine the file takes longer
// than the suite's default 120 s.
t.setTimeout(600_000)

// The `agent-bus` command (cli/index.ts, built to dist/cli/index.js), over a real server process.
const CLI = 'dist/cli/index.js'

interface Run { code: number | null, out: string, err: string }

function cli (args: string[], env: Record<string, string>, input?: string): Promise<Run> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  child.stdin.end(input)
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, out, err })))
}

async function bus (t: Test, env: Record<string, string> = {}) {
  const server = startServer({ BUS_DB: env.BUS_DB ?? await testDb(t), ...env })
  t.teardown(() => server.child.kill('SIGKILL'))
  const url = await server.url
  return { server, url }
}

async function registered (url: string, name: string): Promise<string> {
  const { code, out } = await cli(['register', name, '--json'], { AGENT_BUS_URL: url })
  if (code !== 0) throw new Error(`register ${name} exited ${code}`)
  return JSON.parse(out).token
}

t.test('register, send from stdin, read the inbox, ack: readable lines, or JSON with --json', async (t) => {
  const { url } = await bus(t)
  const registration = await cli(['register', 'alice', '--description', 'writes reports', '--capability', 'write,summarise'], { AGENT_BUS_URL: url })
  t.equal(registration.code, 0)
  const token = /export AGENT_BUS_TOKEN=(\S+)/.exec(registration.out)?.[1] as string
  t.match(token, /^bus_/, 'prints the token and how to export it')
  const alice = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: token }
  const bob = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'bob') }

  const sent = await cli(['send', '--to', 'bob', '--subject', 'Q3', '--priority', 'high', '-'], alice, 'the numbers are in\n')
  t.equal(sent.code, 0, sent.err)
  t.match(sent.out, /^sent #(\d+) to bob \(1 recipient\)/)
  const inbox = await cli(['inbox', '--unread'], bob)
  t.match(inbox.out, /alice → bob \[high\]\s+Q3: the numbers are in\n/)
  const page = JSON.parse((await cli(['inbox', '--unread', '--json'], bob)).out)
  t.match(page, { messages: [{ from: 'alice', body: 'the numbers are in', subject: 'Q3', priority: 'high' }] }, 'stdin\'s last newline is not part of the body')
  const id = page.messages[0].id
  t.match((await cli(['ack', String(id)], bob)).out, /acknowledged 1/)
  t.match(JSON.parse((await cli(['--json', 'ack', String(id)], bob)).out), { acked: 0, already_read: 1 })

  const reply = await cli(['send', '--to', 'alice', '--reply-to', String(id), '--data', '{"ok":true}', 'thanks'], bob)
  t.equal(reply.code, 0)
  t.match((await cli(['thread', String(id)], alice)).out, /the numbers are in\n.*thanks/s)
  t.match(JSON.parse((await cli(['history', '--with', 'bob', '--json'], alice)).out), { messages: [{ body: 'the numbers are in' }, { body: 'thanks', data: { ok: true } }] })
  t.match((await cli(['agents'], alice)).out, /alice\s+writes reports\s+\[write, summarise\]/)
  t.match(JSON.parse((await cli(['stats', '--json'], alice)).out), { messages: { total: 2 } })

  // Every other operation has its command too.
  t.match((await cli(['heartbeat'], bob)).out, /bob online, 0 unread/)
  t.equal((await cli(['update', 'alice', '--description', 'writes and reviews'], alice)).code, 0)
  t.match(JSON.parse((await cli(['agent', 'alice', '--json'], bob)).out), { name: 'alice', description: 'writes and reviews' })
  const rotated = await cli(['rotate-token', 'bob'], bob)
  const fresh = /export AGENT_BUS_TOKEN=(\S+)/.exec(rotated.out)?.[1] as string
  t.equal((await cli(['inbox'], bob)).code, 1, 'the old token stops working')
  t.equal((await cli(['deregister', 'bob'], { ...bob, AGENT_BUS_TOKEN: fresh })).code, 0)
  t.match((await cli(['agents'], alice)).out, /^(?![\s\S]*bob)/, 'bob is gone')
})

t.test('the bus\'s refusals exit 1 with its message; usage errors exit 2', async (t) => {
  const { url } = await bus(t)
  const alice = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'alice') }
  const unknown = await cli(['send', '--to', 'nobody', 'hello'], alice)
  t.equal(unknown.code, 1)
  t.match(unknown.err, /agent-bus: BUS_AGENT_NOT_FOUND: .*nobody/)
  t.equal((await cli(['inbox'], { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: 'bus_nope' })).code, 1)
  const taken = await cli(['register', 'alice'], { AGENT_BUS_URL: url })
  t.equal(taken.code, 1)
  t.match(taken.err, /BUS_NAME_TAKEN|taken/)
  const down = await cli(['inbox'], { ...alice, AGENT_BUS_URL: 'http://127.0.0.1:9' })
  t.equal(down.code, 1)
  t.match(down.err, /cannot reach the bus at http:\/\/127\.0\.0\.1:9/)

  for (const args of [['send', '--priority', 'whenever', 'x'], ['inbox', '--limit', 'x'], ['send'], ['send', '--data', '{nope', 'x'], ['frobnicate'], ['ack']]) {
    const run = await cli(args, alice)
    t.equal(run.code, 2, `${args.join(' ')}: a usage error`)
    t.ok(run.err.length > 0, 'says what is wrong')
  }
  t.equal((await cli(['inbox'], { AGENT_BUS_URL: url })).code, 2, 'no token')
  t.equal((await cli(['--help'], {})).code, 0)
})

t.test('tail prints messages as they arrive, and resumes after the server restarts without losing or repeating one', async (t) => {
  const port = String(await freePort())
  const db = await testDb(t)
  let { server, url } = await bus(t, { BUS_DB: db, PORT: port })
  const alice = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'alice') }
  const bob = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'bob') }
  const tail = spawn(process.execPath, [CLI, 'tail', '--json'], { env: { ...process.env, ...bob }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => tail.kill('SIGKILL'))
  let out = ''
  tail.stdout.on('data', (d) => { out += d })
  const lines = (): Array<{ body: string }> => out.split('\n').filter(Boolean).map((line) => JSON.parse(line))
  const until = async (what: () => boolean): Promise<void> => {
    while (!what()) await sleep(20)
  }

  await cli(['send', '--to', 'bob', 'one'], alice)
  await until(() => lines().length === 1)
  await cli(['send', '--to', 'bob', 'two'], alice)
  await until(() => lines().length === 2)

  server.child.kill('SIGTERM')
  await once(server.child, 'exit')
  ;({ server, url } = await bus(t, { BUS_DB: db, PORT: port }))
  // Sent before tail is back: it must come with the resumption, once.
  const three = await cli(['send', '--to', 'bob', 'three'], alice)
  t.equal(three.code, 0, three.err)
  await until(() => lines().length >= 3)
  await cli(['send', '--to', 'bob', 'four'], alice)
  await until(() => lines().length >= 4)
  await sleep(300)
  t.strictSame(lines().map((m) => m.body), ['one', 'two', 'three', 'four'], 'each message once, in order')
  tail.kill('SIGINT')
  t.equal((await once(tail, 'exit'))[0], 0, 'Ctrl-C ends it cleanly')

  const refused = await cli(['tail'], { ...bob, AGENT_BUS_URL: url, AGENT_BUS_TOKEN: 'bus_nope' })
  t.equal(refused.code, 1, 'a refused token ends tail')
  t.match(refused.err, /refused the token \(401\)/)
})

t.test('agent-bus mcp: the same tools over stdio, forwarding to the bus; a subscription hears new messages', async (t) => {
  const { url } = await bus(t)
  const aliceToken = await registered(url, 'alice')
  const bobToken = await registered(url, 'bob')
  const connect = async (token: string) => {
    const client = new Client({ name: 'test', version: '1.0.0' })
    await client.connect(new StdioClientTransport({ command: process.execPath, args: [CLI, 'mcp'], env: { ...process.env as Record<string, string>, AGENT_BUS_URL: url, AGENT_BUS_TOKEN: token }, stderr: 'ignore' }))
    t.teardown(() => client.close())
    return client
  }
  const alice = await connect(aliceToken)
  const bob = await connect(bobToken)
  const names = (await alice.listTools()).tools.map((tool) => tool.name)
  for (const name of ['send_message', 'list_inbox', 'ack_messages', 'wait_for_messages', 'get_stats']) t.ok(names.includes(name), `${name} over stdio`)

  await bob.subscribeResource({ uri: 'bus://agents/bob/inbox' })
  const updated = new Promise<string>((resolve) => bob.setNotificationHandler('notifications/resources/updated', async (n) => resolve(n.params.uri)))
  await sleep(300)
  const sent = await alice.callTool({ name: 'send_message', arguments: { to: 'bob', body: 'over stdio' } })
  t.match(sent.structuredContent, { from: 'alice', to: ['bob'] })
  t.equal(await updated, 'bus://agents/bob/inbox')
  t.match((await bob.callTool({ name: 'list_inbox', arguments: { unread: true } })).structuredContent, { messages: [{ body: 'over stdio', from: 'alice' }] })
  const refused = await alice.callTool({ name: 'get_agent', arguments: { name: 'nobody' } })
  t.equal(refused.isError, true)
  t.match((refused.content as Array<{ text: string }>)[0].text, /BUS_AGENT_NOT_FOUND/)

  const bad = await cli(['mcp'], { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: 'bus_nope' })
  t.equal(bad.code, 1, 'a token the bus refuses stops the bridge at start')
  t.match(bad.err, /cannot use the bus at .*invalid or revoked token/)
})
