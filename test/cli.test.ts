import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from '@modelcontextprotocol/client'
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio'
import t, { type Test } from 'tap'
import { testDb, until } from './helper.js'
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

  await cli(['send', '--to', 'bob', 'one'], alice)
  await until('tail prints one', () => lines().length === 1)
  await cli(['send', '--to', 'bob', 'two'], alice)
  await until('tail prints two', () => lines().length === 2)

  server.child.kill('SIGTERM')
  await once(server.child, 'exit')
  ;({ server, url } = await bus(t, { BUS_DB: db, PORT: port }))
  // Sent before tail is back: it must come with the resumption, once.
  const three = await cli(['send', '--to', 'bob', 'three'], alice)
  t.equal(three.code, 0, three.err)
  await until('tail prints three, after the restart', () => lines().length >= 3)
  await cli(['send', '--to', 'bob', 'four'], alice)
  await until('tail prints four', () => lines().length >= 4)
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

t.test('topics and work queues from the shell: subscribe, publish, claim, lease conflicts, release, dead letters, requeue', async (t) => {
  const { url } = await bus(t)
  const alice = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'alice') }
  const bob = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'bob') }
  const carol = { AGENT_BUS_URL: url, AGENT_BUS_TOKEN: await registered(url, 'carol') }
  const ok = (run: Run, what: string): Run => {
    t.equal(run.code, 0, `${what}: ${run.err}`)
    return run
  }

  // Topics: create, subscribe (twice), publish, read, list, unsubscribe.
  t.match(ok(await cli(['topic', 'create', 'news', '--description', 'what happened'], alice), 'topic create').out, /^created topic news\n/)
  t.match(JSON.parse(ok(await cli(['topic', 'create', 'digest', '--json'], alice), 'topic create --json').out),
    { name: 'digest', created_by: 'alice', subscribers: 0, subscribed: false }, 'creating a topic does not subscribe its creator')
  const taken = await cli(['topic', 'create', 'news'], bob)
  t.equal(taken.code, 1, 'a topic name is taken once')
  t.match(taken.err, /^agent-bus: BUS_\w+: /)
  t.equal(ok(await cli(['topic', 'subscribe', 'news'], bob), 'topic subscribe').out, 'subscribed to news\n')
  t.equal(ok(await cli(['topic', 'subscribe', 'news'], bob), 'topic subscribe again').out, 'subscribed to news (already)\n')
  t.strictSame(JSON.parse(ok(await cli(['topic', 'subscribe', 'news', '--json'], bob), 'topic subscribe --json').out), { topic: 'news', subscribed: true, changed: false })
  const nowhere = await cli(['topic', 'subscribe', 'nowhere'], bob)
  t.equal(nowhere.code, 1, 'no such topic')
  t.match(nowhere.err, /nowhere/)

  const published = ok(await cli(['send', '--topic', 'news', '--subject', 'launch', 'we shipped'], alice), 'send --topic')
  t.match(published.out, /^sent #\d+ to topic news \(1 recipient\)\n/, 'alice is not subscribed: bob is the one recipient')
  const publishedId = Number(/#(\d+)/.exec(published.out)?.[1])
  t.match(ok(await cli(['inbox', '--unread'], bob), 'inbox').out, new RegExp(`^\\s*${publishedId}  \\S+ \\S+  alice → #news  launch: we shipped\\n`), 'the line shows #topic')
  t.match(JSON.parse(ok(await cli(['inbox', '--unread', '--json'], bob), 'inbox --json').out), { messages: [{ id: publishedId, topic: 'news', queue: null, to: [], body: 'we shipped' }] })
  t.match(ok(await cli(['inbox', '--unread'], carol), 'carol inbox').out, /^no messages\n/, 'not subscribed: not a recipient')
  t.match(JSON.parse(ok(await cli(['history', '--topic', 'news', '--json'], bob), 'history --topic').out), { messages: [{ id: publishedId, topic: 'news' }] })
  t.match(JSON.parse(ok(await cli(['history', '--topic', 'digest', '--json'], bob), 'history --topic digest').out), { messages: [] }, 'only that topic')

  const listed = ok(await cli(['topic', 'list'], bob), 'topic list').out
  t.match(listed, /^○ digest\s+0 subscribers\s*\n/m)
  t.match(listed, /^● news\s+1 subscribers  what happened\n/m, 'bob is subscribed: ●, and counted')
  t.match(ok(await cli(['topic', 'list'], alice), 'topic list').out, /^○ news\s+1 subscribers/m, 'alice is not')
  t.match(JSON.parse(ok(await cli(['--json', 'topic', 'list'], alice), 'topic list --json').out),
    { topics: [{ name: 'digest', subscribers: 0, subscribed: false }, { name: 'news', subscribers: 1, subscribed: false, description: 'what happened' }] }, 'by name')
  t.equal(ok(await cli(['topic', 'unsubscribe', 'news'], bob), 'topic unsubscribe').out, 'not subscribed to news\n')
  t.equal(ok(await cli(['topic', 'unsubscribe', 'news'], bob), 'topic unsubscribe again').out, 'not subscribed to news (already)\n')
  t.match(JSON.parse(ok(await cli(['topic', 'list', '--json'], bob), 'topic list --json').out), { topics: [{ name: 'digest' }, { name: 'news', subscribers: 0, subscribed: false }] })
  t.match(ok(await cli(['send', '--topic', 'news', 'anyone?'], alice), 'send --topic').out, /to topic news \(0 recipients\)/, 'no subscribers left')

  // A work queue: one worker at a time, leases, conflicts, extend, release, redelivery, ack.
  t.equal(ok(await cli(['queue', 'create', 'jobs', '--lease', '60', '--max-deliveries', '3', '--description', 'builds'], alice), 'queue create').out,
    'created queue jobs (lease 60 s, 3 deliveries)\n')
  t.match(JSON.parse(ok(await cli(['queue', 'create', 'plain', '--json'], alice), 'queue create --json').out),
    { name: 'plain', lease_s: 60, max_deliveries: 5, created_by: 'alice', available: 0 }, 'the defaults')
  const enqueued = ok(await cli(['send', '--queue', 'jobs', '--priority', 'high', 'build #7'], alice), 'send --queue')
  t.match(enqueued.out, /^sent #\d+ to queue jobs\n$/, 'no recipient count for a queue')
  const queued = JSON.parse(ok(await cli(['send', '--queue', 'jobs', '--json', 'build #8'], alice), 'send --queue --json').out)
  t.match(queued, { queue: 'jobs', topic: null, to: [], recipients: 0 })
  t.match(ok(await cli(['inbox'], bob), 'inbox').out, /^(?![\s\S]*build #)/, 'queue messages go to no inbox')
  t.match(ok(await cli(['queue', 'list'], carol), 'queue list').out, /^jobs\s+available 2 {2}leased 0 {2}delayed 0 {2}dead 0\n/m)

  const claimed = JSON.parse(ok(await cli(['queue', 'claim', 'jobs', '--json'], bob), 'queue claim --json').out)
  t.match(claimed, { messages: [{ message: { from: 'alice', queue: 'jobs', body: 'build #7', priority: 'high' }, delivery_count: 1, lease_expires_at: String }] },
    'the most urgent first, one by default')
  t.equal(claimed.messages.length, 1)
  const id = claimed.messages[0].message.id as number
  t.equal(id, Number(/#(\d+)/.exec(enqueued.out)?.[1]))
  t.match(JSON.parse(ok(await cli(['queue', 'list', '--json'], carol), 'queue list --json').out),
    { queues: [{ name: 'jobs', available: 1, leased: 1, dead: 0, lease_s: 60, max_deliveries: 3 }, { name: 'plain', available: 0, leased: 0 }] })

  const stolen = await cli(['queue', 'ack', 'jobs', String(id)], carol)
  t.equal(stolen.code, 1, 'carol cannot ack what bob holds')
  t.match(stolen.err, new RegExp(`^agent-bus: BUS_LEASE_CONFLICT: message ${id} is leased to bob until `))
  t.equal(stolen.out, '')
  const stolenJson = await cli(['queue', 'release', 'jobs', String(id), '--json'], carol)
  t.equal(stolenJson.code, 1, 'nor give it back')
  t.match(stolenJson.err, /BUS_LEASE_CONFLICT/)
  t.equal(stolenJson.out, '', 'no JSON on stdout for a refusal')

  const extended = ok(await cli(['queue', 'extend', 'jobs', String(id), '--lease', '600'], bob), 'queue extend')
  const until = /^extended 1 until (\S+)\n$/.exec(extended.out)?.[1] as string
  t.ok(until, extended.out)
  t.ok(Date.parse(until) > Date.parse(claimed.messages[0].lease_expires_at), 'the lease now ends later than the claim\'s 60 s')
  t.match(JSON.parse(ok(await cli(['queue', 'extend', 'jobs', String(id), '--lease', '900', '--json'], bob), 'queue extend --json').out), { extended: 1, lease_expires_at: String })
  t.equal(ok(await cli(['queue', 'release', 'jobs', String(id)], bob), 'queue release').out, 'released 1\n')
  const released = await cli(['queue', 'ack', 'jobs', String(id)], bob)
  t.equal(released.code, 1, 'released is no longer bob\'s')
  t.match(released.err, /BUS_LEASE_CONFLICT: .*not leased to the caller \(it is available\)/)

  const again = ok(await cli(['queue', 'claim', 'jobs'], carol), 'queue claim again').out
  t.match(again, new RegExp(`^\\s*${id}  \\S+ \\S+  alice → queue:jobs \\[high\\]  build #7  \\(delivery 2, lease until \\S+\\)\\n$`), 'delivered a second time')
  t.equal(ok(await cli(['queue', 'ack', 'jobs', String(id)], carol), 'queue ack').out, 'acked 1\n')
  t.strictSame(JSON.parse(ok(await cli(['queue', 'ack', 'jobs', String(id), '--json'], carol), 'queue ack again').out), { acked: 0, already_acked: 1 }, 'acking again changes nothing')
  t.equal(ok(await cli(['queue', 'ack', 'jobs', String(id)], carol), 'queue ack again').out, 'acked 0, 1 already\n')
  t.match(ok(await cli(['queue', 'list'], alice), 'queue list').out, /^jobs\s+available 1 {2}leased 0 {2}delayed 0 {2}dead 0\n/m, 'build #8 is left')
  const unknownQueue = await cli(['queue', 'claim', 'nowhere'], bob)
  t.equal(unknownQueue.code, 1)
  t.match(unknownQueue.err, /^agent-bus: BUS_\w+: .*nowhere/)

  // One delivery only: a release makes it a dead letter; requeue brings it back.
  ok(await cli(['queue', 'create', 'once', '--max-deliveries', '1'], alice), 'queue create once')
  const fragile = Number(/#(\d+)/.exec(ok(await cli(['send', '--queue', 'once', 'fragile'], alice), 'send --queue once').out)?.[1])
  t.match(ok(await cli(['queue', 'claim', 'once'], bob), 'claim once').out, /fragile {2}\(delivery 1, /)
  t.equal(ok(await cli(['queue', 'release', 'once', String(fragile)], bob), 'release once').out, 'released 0; 1 had had their deliveries and are dead letters now\n')
  t.match(ok(await cli(['queue', 'claim', 'once'], bob), 'claim once again').out, /^no work\n$/, 'a dead letter is not claimed')
  t.match(ok(await cli(['queue', 'dead', 'once'], alice), 'queue dead').out, new RegExp(`^\\s*${fragile}  .*alice → queue:once  fragile  \\(1 deliveries, last to bob, dead since \\S+\\)\\n$`))
  t.match(JSON.parse(ok(await cli(['queue', 'dead', 'once', '--json'], alice), 'queue dead --json').out),
    { dead: [{ message: { id: fragile, body: 'fragile' }, delivery_count: 1, claimed_by: 'bob', dead_at: String }], next_cursor: null })
  t.match(ok(await cli(['queue', 'list'], alice), 'queue list').out, /^once\s+available 0 {2}leased 0 {2}delayed 0 {2}dead 1\n/m)
  t.match(ok(await cli(['queue', 'dead', 'jobs'], alice), 'queue dead jobs').out, /^no dead letters\n$/)
  t.strictSame(JSON.parse(ok(await cli(['queue', 'requeue', 'once', String(fragile), '999999', '--json'], alice), 'queue requeue --json').out),
    { requeued: [fragile], not_dead: [999999] })
  t.match(ok(await cli(['queue', 'dead', 'once'], alice), 'queue dead').out, /^no dead letters\n$/)
  t.match(ok(await cli(['queue', 'claim', 'once'], carol), 'claim requeued').out, /fragile {2}\(delivery 1, /, 'back, with a fresh delivery count')
  ok(await cli(['queue', 'release', 'once', String(fragile)], carol), 'release once')
  t.equal(ok(await cli(['queue', 'requeue', 'once'], alice), 'queue requeue (all)').out, 'requeued 1\n')
  t.match(ok(await cli(['queue', 'list'], alice), 'queue list').out, /^once\s+available 1 {2}leased 0 {2}delayed 0 {2}dead 0\n/m)

  // ack_within_s: direct messages only.
  const timed = ok(await cli(['send', '--to', 'bob', '--ack-within', '30', 'answer soon'], alice), 'send --ack-within')
  t.match(timed.out, /^sent #\d+ to bob \(1 recipient\)\n$/)
  const timedId = Number(/#(\d+)/.exec(timed.out)?.[1])
  const receipts = await (await fetch(`${url}/messages/${timedId}`, { headers: { authorization: `Bearer ${alice.AGENT_BUS_TOKEN}` } })).json()
  t.match(receipts, { receipts: [{ agent: 'bob', ack_by: String, overdue: false }] }, 'the deadline reached the bus')
  const untimed = await cli(['send', '--ack-within', '30', 'to all'], alice)
  t.equal(untimed.code, 1, 'a broadcast cannot have an ack deadline')
  t.match(untimed.err, /^agent-bus: BUS_BAD_SEND: .*ack_within_s/)
  const both = await cli(['send', '--to', 'bob', '--queue', 'jobs', 'x'], alice)
  t.equal(both.code, 1)
  t.match(both.err, /BUS_BAD_SEND/)

  // Usage errors: exit 2, nothing sent to the bus.
  for (const args of [
    ['queue', 'extend', 'jobs', String(id)], ['queue', 'extend', 'jobs', String(id), '--lease', 'long'], ['queue', 'claim', 'jobs', '--limit', 'x'],
    ['queue', 'ack', 'jobs'], ['queue', 'ack', 'jobs', 'abc'], ['queue', 'create', 'q2', '--lease', '1.5'], ['queue', 'frobnicate'], ['topic', 'create'],
    ['send', '--to', 'bob', '--ack-within', 'soon', 'x']
  ]) {
    const run = await cli(args, alice)
    t.equal(run.code, 2, `${args.join(' ')}: a usage error`)
    t.ok(run.err.length > 0, 'says what is wrong')
  }
  t.match(ok(await cli(['queue', 'list'], alice), 'queue list').out, /^jobs\s+available 1 /m, 'nothing changed by them')
  t.match(ok(await cli(['queue', 'list'], alice), 'queue list').out, /^(?![\s\S]*q2)/, 'q2 was not created')
})
