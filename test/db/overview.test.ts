import type { Kysely } from 'kysely'
import t from 'tap'
import { agentsOverview, failingWebhooks, Traffic } from '../../db/overview.js'
import type { Database } from '../../db/schema.js'
import { testStorage } from '../helper.js'

// The operator's view of the bus (db/overview.ts), over rows inserted directly: above all Traffic, the messages a
// minute by priority over the last hour, counted incrementally by seq from where a binary search over seq puts the
// start of the hour.
// Tens of thousands of rows on PostgreSQL: generous on a busy machine.
t.setTimeout(600_000)

const MINUTE = 60_000
// A fixed clock, 20 s into its minute; the window is the 60 minutes ending with the current one.
const NOW = Date.parse('2026-03-02T10:30:20.000Z')
const windowStart = (now: number) => Math.floor(now / MINUTE) * MINUTE - 59 * MINUTE
const START = windowStart(NOW)

const NORMAL = 0
const HIGH = 1
const URGENT = 2

async function sender (db: Kysely<Database>, name = 'sender'): Promise<number> {
  const { id } = await db.insertInto('agents').values({
    name, description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: new Date(NOW - 86_400_000).toISOString(),
    last_seen_at: null, deleted_at: null, webhook_url: null, webhook_secret: null
  }).returning('id').executeTakeFirstOrThrow()
  return Number(id)
}

// Messages stored at these times (ms) with these priorities, in this order (seq grows with created_at, as on the
// bus), a thousand a statement; answers their seqs.
async function store (db: Kysely<Database>, senderId: number, rows: Array<[at: number, priority: number]>): Promise<number[]> {
  const seqs: number[] = []
  for (let from = 0; from < rows.length; from += 1000) {
    const inserted = await db.insertInto('messages').values(rows.slice(from, from + 1000).map(([at, priority]) => ({
      sender_id: senderId, recipients: null, subject: null, body: 'x', data: null, priority, reply_to: null, thread_id: 0,
      created_at: new Date(at).toISOString(), idempotency_key: null
    }))).returning('seq').execute()
    seqs.push(...inserted.map((r) => Number(r.seq)))
  }
  return seqs
}

type Series = Awaited<ReturnType<Traffic['read']>>

// The series a read over this window should answer: counts[minute index] = [normal, high, urgent].
function expected (start: number, counts: Record<number, [number, number, number]>): Series {
  const minutes = Array.from({ length: 60 }, (_, i) => (start + i * MINUTE) / 1000)
  const rank = (r: number) => minutes.map((_, i) => counts[i]?.[r] ?? 0)
  return { minutes, normal: rank(NORMAL), high: rank(HIGH), urgent: rank(URGENT) }
}

// What a read should answer, counted the plain way from the rows stored.
function counted (rows: Array<[at: number, priority: number]>, now: number): Series {
  const start = windowStart(now)
  const counts: Record<number, [number, number, number]> = {}
  for (const [at, priority] of rows) {
    const i = Math.floor((Math.floor(at / MINUTE) * MINUTE - start) / MINUTE)
    if (i < 0 || i >= 60) continue
    counts[i] ??= [0, 0, 0]
    counts[i][priority]++
  }
  return expected(start, counts)
}

t.test('an empty table: sixty zero minutes, a minute apart, ending with the current one', async (t) => {
  const { db } = await testStorage(t)
  const traffic = new Traffic()
  const read = await traffic.read(db, NOW)
  t.strictSame(read, expected(START, {}))
  t.equal(read.minutes.length, 60)
  t.equal(read.minutes[59], Math.floor(NOW / MINUTE) * 60, 'the last minute is the current one, in epoch seconds')
  for (let i = 1; i < 60; i++) t.equal(read.minutes[i] - read.minutes[i - 1], 60, `minute ${i} follows minute ${i - 1}`)
  for (const series of [read.normal, read.high, read.urgent]) t.equal(series.length, 60)
  t.strictSame(await traffic.read(db, NOW), expected(START, {}), 'and again')
  t.strictSame(await new Traffic().read(db, NOW + 90 * MINUTE), expected(windowStart(NOW + 90 * MINUTE), {}), 'at any time')
})

t.test('each message counts in its minute and priority; older ones never do, however many', async (t) => {
  const { db } = await testStorage(t)
  const id = await sender(db)
  // More old messages than a read takes at most (20,000): a read that walked from the first seq instead of
  // searching for the start of the hour would not reach the new ones on its first read.
  const OLD = 25_000
  const old: Array<[number, number]> = Array.from({ length: OLD }, (_, i) => [NOW - 5 * 3_600_000 + i * 500, i % 3])
  old.push([START - 1, URGENT], [START - 1, NORMAL])
  t.ok(old.every(([at]) => at < START), 'every one of them before the hour')
  await store(db, id, old)
  const fresh: Array<[number, number]> = [
    [START, NORMAL], // the first instant of the window
    [START + 30_000, URGENT],
    [START + 10 * MINUTE + 5_000, HIGH],
    [START + 10 * MINUTE + 59_999, HIGH],
    [START + 11 * MINUTE, NORMAL],
    [NOW - MINUTE, URGENT],
    [NOW - 1, NORMAL],
    [NOW, NORMAL]
  ]
  await store(db, id, fresh)

  const traffic = new Traffic()
  const first = await traffic.read(db, NOW)
  t.strictSame(first, expected(START, {
    0: [1, 0, 1],
    10: [0, 2, 0],
    11: [1, 0, 0],
    58: [0, 0, 1],
    59: [2, 0, 0]
  }), 'the new ones, each in its minute and priority, on the first read')
  t.strictSame(first, counted([...old, ...fresh], NOW))

  // A second read after more are stored adds those only.
  await store(db, id, [[NOW, HIGH], [NOW + 10_000, URGENT], [NOW + 39_000, NORMAL]])
  const second = await traffic.read(db, NOW + 39_500)
  t.strictSame(second, expected(START, {
    0: [1, 0, 1],
    10: [0, 2, 0],
    11: [1, 0, 0],
    58: [0, 0, 1],
    59: [3, 1, 1]
  }), 'the three new ones added to the current minute; nothing counted twice')
  t.strictSame(await traffic.read(db, NOW + 39_600), second, 'a read with nothing new changes nothing')

  // Minutes fall out of the window as the clock moves on.
  const later = NOW + 10 * MINUTE
  await store(db, id, [[later - 2 * MINUTE, HIGH], [later, URGENT]])
  const moved = await traffic.read(db, later)
  t.strictSame(moved.minutes[0], (START + 10 * MINUTE) / 1000, 'the window starts ten minutes later')
  t.strictSame(moved, expected(START + 10 * MINUTE, {
    0: [0, 2, 0],
    1: [1, 0, 0],
    48: [0, 0, 1],
    49: [3, 1, 1],
    57: [0, 1, 0],
    59: [0, 0, 1]
  }), 'minutes 0 to 9 dropped, the rest ten places earlier, the new ones in their minutes')
  const gone = await traffic.read(db, later + 2 * 3_600_000)
  t.strictSame(gone, expected(windowStart(later + 2 * 3_600_000), {}), 'two hours on, nothing is left')
  await store(db, id, [[later + 2 * 3_600_000, HIGH]])
  t.strictSame(await traffic.read(db, later + 2 * 3_600_000), expected(windowStart(later + 2 * 3_600_000), { 59: [0, 1, 0] }),
    'and a message stored then counts')
})

t.test('the start of the hour is found wherever it falls: before every message, after every one, in a gap of seqs', async (t) => {
  const { db } = await testStorage(t)
  const id = await sender(db)
  // One message every 7 s over three hours, some deleted (archived, in the bus) so that seq has gaps, the first
  // ones included.
  const times = Array.from({ length: 1600 }, (_, i) => NOW - 3 * 3_600_000 + i * 7_000)
  const rows: Array<[number, number]> = times.map((at, i) => [at, (i * 7) % 3])
  const seqs = await store(db, id, rows)
  const dropped = new Set<number>()
  for (let i = 0; i < rows.length; i++) if (i < 5 || (i % 11 === 0) || (i >= 700 && i < 760)) dropped.add(i)
  await db.deleteFrom('messages').where('seq', 'in', seqs.filter((_, i) => dropped.has(i))).execute()
  const kept = rows.filter((_, i) => !dropped.has(i))

  // Clocks that put the start of the hour before the first message, on it, after the last, in the deleted run
  // (700 to 760, from about 1 h 38 min), and at many places in between.
  const nows = [
    times[0] - 2 * 3_600_000, times[0] - 59 * MINUTE, times[0] + 59 * MINUTE, times[5] + 59 * MINUTE,
    times[730] + 59 * MINUTE, times[700] + 59 * MINUTE, times[760] + 59 * MINUTE,
    times[1599] + 59 * MINUTE, times[1599] + 60 * MINUTE, times[1599] + 5 * 3_600_000,
    ...Array.from({ length: 12 }, (_, k) => times[0] + k * 17 * MINUTE + 13_000)
  ]
  for (const now of nows) {
    t.strictSame(await new Traffic().read(db, now), counted(kept, now), `a first read at ${new Date(now).toISOString()}`)
  }
})

t.test('a reader that fell far behind catches up over its next reads, never counting a message twice', async (t) => {
  const { db } = await testStorage(t)
  const id = await sender(db)
  const traffic = new Traffic()
  // Read once (the dashboard open), then three hours of messages (the dashboard closed): more than a read takes.
  t.strictSame(await traffic.read(db, NOW - 3 * 3_600_000), expected(windowStart(NOW - 3 * 3_600_000), {}))
  const rows: Array<[number, number]> = Array.from({ length: 45_000 }, (_, i) => [NOW - 3 * 3_600_000 + 1000 + i * 239, i % 3])
  t.ok(rows[rows.length - 1][0] < NOW, 'all stored before now')
  await store(db, id, rows)
  const want = counted(rows, NOW)
  t.ok(sum(want.normal) + sum(want.high) + sum(want.urgent) > 10_000, 'thousands in the last hour')
  let read = await traffic.read(db, NOW)
  for (let reads = 1; reads < 10 && !same(read, want); reads++) {
    for (const rank of ['normal', 'high', 'urgent'] as const) {
      t.ok(read[rank].every((n, i) => n <= want[rank][i]), `read ${reads}: no ${rank} minute counted beyond its messages`)
    }
    read = await traffic.read(db, NOW)
  }
  t.strictSame(read, want, 'caught up')
  t.strictSame(await traffic.read(db, NOW), want, 'and stays so')
})

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0)
const same = (a: Series, b: Series) => JSON.stringify(a) === JSON.stringify(b)

t.test('a single message, and a table where every message is in the hour', async (t) => {
  const { db } = await testStorage(t)
  const id = await sender(db)
  await store(db, id, [[NOW - 30 * MINUTE, HIGH]])
  t.strictSame(await new Traffic().read(db, NOW), expected(START, { 29: [0, 1, 0] }))
  t.strictSame(await new Traffic().read(db, NOW + 30 * MINUTE), expected(windowStart(NOW + 30 * MINUTE), {}), 'out of the window')
  await store(db, id, [[NOW - 20 * MINUTE, NORMAL], [NOW - 20 * MINUTE, URGENT], [NOW, NORMAL]])
  t.strictSame(await new Traffic().read(db, NOW), expected(START, { 29: [0, 1, 0], 39: [1, 0, 1], 59: [1, 0, 0] }))
})

t.test('agents: online first, then by name, the first 200 listed and the rest counted', async (t) => {
  const { db } = await testStorage(t)
  const names = Array.from({ length: 201 }, (_, i) => `agent-${String(i).padStart(3, '0')}`)
  await db.insertInto('agents').values(names.map((name, i) => ({
    name, description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: new Date(NOW).toISOString(),
    last_seen_at: i % 50 === 7 ? new Date(NOW).toISOString() : null, online: i % 50 === 7 ? 1 as const : 0 as const,
    deleted_at: null, webhook_url: null, webhook_secret: null
  }))).execute()
  const { agents, more } = await agentsOverview(db)
  t.equal(agents.length, 200)
  t.equal(more, true, 'one more than shown')
  const online = names.filter((_, i) => i % 50 === 7)
  t.strictSame(agents.slice(0, online.length).map((a) => [a.name, a.status]), online.map((name) => [name, 'online']), 'the online ones first')
  t.strictSame(agents.slice(online.length).map((a) => a.name), names.filter((_, i) => i % 50 !== 7).slice(0, 200 - online.length), 'then the rest by name')
  t.ok(agents.every((a) => a.unread === 0))

  // One deregistered: 200 left, all shown.
  await db.updateTable('agents').set({ deleted_at: new Date(NOW).toISOString() }).where('name', '=', names[0]).execute()
  const after = await agentsOverview(db)
  t.equal(after.agents.length, 200)
  t.equal(after.more, false)
  t.notOk(after.agents.some((a) => a.name === names[0]), 'a deregistered agent is not listed')
})

t.test('failing webhooks: the host of the URL only, null for one that is no URL', async (t) => {
  const { db } = await testStorage(t)
  const id = await sender(db)
  const hooked = async (name: string, url: string) => (await db.insertInto('agents').values({
    name, description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: new Date(NOW).toISOString(),
    last_seen_at: null, deleted_at: null, webhook_url: url, webhook_secret: 'whsec_x'
  }).returning('id').executeTakeFirstOrThrow()).id
  const creds = await hooked('creds', 'https://user:pass@hooks.example.com:8443/secret/path?token=abc')
  const broken = await hooked('broken', 'not a url')
  const fine = await hooked('fine', 'https://ok.example.com/h')
  const seqs = await store(db, id, [[NOW, NORMAL], [NOW, NORMAL], [NOW, NORMAL]])
  const next = new Date(NOW + MINUTE).toISOString()
  await db.insertInto('deliveries').values([
    ...seqs.map((seq, i) => ({ message_seq: seq, recipient_id: creds, priority: 0, read_at: null, delivered_at: null, webhook_attempts: i + 1, webhook_next_at: next })),
    { message_seq: seqs[0], recipient_id: broken, priority: 0, read_at: null, delivered_at: null, webhook_attempts: 4, webhook_next_at: next },
    // Pending but not yet tried, and tried and delivered: not failing.
    { message_seq: seqs[0], recipient_id: fine, priority: 0, read_at: null, delivered_at: null, webhook_attempts: 0, webhook_next_at: next },
    { message_seq: seqs[1], recipient_id: fine, priority: 0, read_at: null, delivered_at: new Date(NOW).toISOString(), webhook_attempts: 2, webhook_next_at: null }
  ]).execute()
  t.strictSame(await failingWebhooks(db, 20), [
    { agent: 'creds', host: 'hooks.example.com:8443', pending: 3, attempts: 3, next_at: next },
    { agent: 'broken', host: null, pending: 1, attempts: 4, next_at: next }
  ], 'most pending first; neither credentials nor path nor query')
  t.strictSame((await failingWebhooks(db, 1)).map((w) => w.agent), ['creds'], 'at most the limit')
})
