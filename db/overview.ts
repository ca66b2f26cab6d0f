import type { Kysely } from 'kysely'
import { PRIORITIES } from './messages.js'
import type { Database } from './schema.js'

// The operator's view of the bus (the dashboard, routes/dashboard.ts): metadata only, never a body.

// Agents shown; the rest are counted.
const AGENTS_SHOWN = 200
// Broadcast and topic copies not yet made, counted per agent up to this many.
const PENDING_AT_MOST = 10_000

// Registered agents, online first, with their unread copies: rows not yet acknowledged, plus the broadcast and topic
// messages stored since the agent last read, which become rows on its next read (db/messages.ts syncBroadcasts).
export async function agentsOverview (db: Kysely<Database>) {
  const rows = await db.selectFrom('agents as a').where('a.deleted_at', 'is', null)
    .select((eb) => ['a.name', 'a.online', 'a.last_seen_at', 'a.registered_at',
      eb.selectFrom('deliveries as d').select((s) => s.fn.countAll<number>().as('n'))
        .whereRef('d.recipient_id', '=', 'a.id').where('d.read_at', 'is', null).as('unread'),
      // Counted up to PENDING_AT_MOST: an agent that never reads must not make every snapshot walk its whole backlog.
      eb.selectFrom((p) => p.selectFrom('messages as m').select('m.seq')
        .where('m.recipients', 'is', null).whereRef('m.seq', '>', 'a.broadcasts_upto').whereRef('m.sender_id', '!=', 'a.id')
        .where((m) => m.or([
          m('m.topic', 'is', null),
          m.exists(m.selectFrom('subscriptions as s').select('s.agent_id')
            .whereRef('s.topic', '=', 'm.topic').whereRef('s.agent_id', '=', 'a.id').whereRef('m.seq', '>', 's.since_seq'))
        ]))
        .where((m) => m.not(m.exists(m.selectFrom('deliveries as o').select('o.message_seq')
          .whereRef('o.message_seq', '=', 'm.seq').whereRef('o.recipient_id', '=', 'a.id'))))
        .limit(PENDING_AT_MOST).as('p'))
        .select((s) => s.fn.countAll<number>().as('n')).as('pending')])
    .orderBy('a.online', 'desc').orderBy('a.name').limit(AGENTS_SHOWN + 1).execute()
  return {
    agents: rows.slice(0, AGENTS_SHOWN).map((r) => ({
      name: r.name,
      status: r.online === 1 ? 'online' as const : 'offline' as const,
      last_seen_at: r.last_seen_at,
      unread: Number(r.unread) + Number(r.pending)
    })),
    more: rows.length > AGENTS_SHOWN
  }
}

// The newest messages, with how many copies were delivered and read: one pass over their deliveries.
export async function latestMessages (db: Kysely<Database>, limit: number) {
  const rows = await db.selectFrom('messages as m').innerJoin('agents as s', 's.id', 'm.sender_id')
    .select((eb) => ['m.seq', 's.name as sender', 'm.recipients', 'm.topic', 'm.queue', 'm.subject', 'm.priority', 'm.created_at',
      eb.selectFrom('queue_entries as q').select('q.acked_at').whereRef('q.message_seq', '=', 'm.seq').as('acked_at')])
    .orderBy('m.seq', 'desc').limit(limit).execute()
  const counts = new Map((rows.length === 0 ? [] : await db.selectFrom('deliveries')
    .select((eb) => ['message_seq', eb.fn.countAll<number>().as('copies'), eb.fn.count<number>('delivered_at').as('delivered'),
      eb.fn.count<number>('read_at').as('read')])
    .where('message_seq', 'in', rows.map((r) => r.seq)).groupBy('message_seq').execute()).map((c) => [c.message_seq, c]))
  return rows.map((r) => ({
    id: r.seq,
    from: r.sender,
    // Names for a direct message; null for a broadcast, a topic or a queue message.
    to: r.recipients === null || r.queue !== null ? null : JSON.parse(r.recipients) as string[],
    topic: r.topic,
    queue: r.queue,
    subject: r.subject,
    priority: PRIORITIES[r.priority],
    created_at: r.created_at,
    // Copies made so far (a broadcast's are made as its recipients read), and of those, delivered and read; a queue
    // message has no copies: acked tells.
    copies: Number(counts.get(r.seq)?.copies ?? 0),
    delivered: Number(counts.get(r.seq)?.delivered ?? 0),
    read: Number(counts.get(r.seq)?.read ?? 0),
    acked: r.acked_at !== null && r.acked_at !== undefined
  }))
}

// Recipients whose webhook attempts are failing: deliveries pending a retry after at least one failed attempt.
export async function failingWebhooks (db: Kysely<Database>, limit: number) {
  const rows = await db.selectFrom('deliveries as d').innerJoin('agents as a', 'a.id', 'd.recipient_id')
    .select((eb) => ['a.name', 'a.webhook_url', eb.fn.countAll<number>().as('pending'), eb.fn.max('d.webhook_attempts').as('attempts'),
      eb.fn.min('d.webhook_next_at').as('next_at')])
    .where('d.webhook_next_at', 'is not', null).where('d.webhook_attempts', '>', 0)
    .groupBy(['a.name', 'a.webhook_url']).orderBy('pending', 'desc').limit(limit).execute()
  return rows.map((r) => ({
    agent: r.name,
    // The host alone: a URL may carry credentials.
    host: hostOf(r.webhook_url),
    pending: Number(r.pending),
    attempts: Number(r.attempts),
    next_at: r.next_at
  }))
}

function hostOf (url: string | null): string | null {
  try {
    return url === null ? null : new URL(url).host
  } catch {
    return null
  }
}

const MINUTE = 60_000
const WINDOW_MINUTES = 60
// Rows read per refresh at most; a burst bigger than this is counted over the next refreshes.
const READ_AT_MOST = 20_000

// Messages stored per minute by priority over the last hour, counted incrementally: each read takes only the
// messages stored since the one before (by seq, which grows with time), so a refresh costs what was sent meanwhile,
// not an hour of rows. The first read finds where the hour starts by a binary search over seq.
export class Traffic {
  #upTo: number | undefined
  readonly #minutes = new Map<number, number[]>()

  async read (db: Kysely<Database>, now: number) {
    const start = Math.floor(now / MINUTE) * MINUTE - (WINDOW_MINUTES - 1) * MINUTE
    this.#upTo ??= await lastSeqBefore(db, new Date(start).toISOString())
    let left = READ_AT_MOST
    while (left > 0) {
      const rows = await db.selectFrom('messages').select(['seq', 'created_at', 'priority'])
        .where('seq', '>', this.#upTo).orderBy('seq').limit(Math.min(left, 5000)).execute()
      for (const { seq, created_at: createdAt, priority } of rows) {
        this.#upTo = seq
        const minute = Math.floor(Date.parse(createdAt) / MINUTE) * MINUTE
        if (minute < start) continue
        const counts = this.#minutes.get(minute) ?? [0, 0, 0]
        counts[priority]++
        this.#minutes.set(minute, counts)
      }
      left -= rows.length
      if (rows.length < 5000) break
    }
    for (const minute of this.#minutes.keys()) if (minute < start) this.#minutes.delete(minute)
    const minutes = Array.from({ length: WINDOW_MINUTES }, (_, i) => start + i * MINUTE)
    const series = (rank: number) => minutes.map((m) => this.#minutes.get(m)?.[rank] ?? 0)
    return { minutes: minutes.map((m) => m / 1000), normal: series(0), high: series(1), urgent: series(2) }
  }
}

// The highest seq of a message stored before `iso`, or 0: created_at grows with seq, so a binary search over seq
// finds it in a few primary-key lookups, without an index on created_at.
async function lastSeqBefore (db: Kysely<Database>, iso: string): Promise<number> {
  const bounds = await db.selectFrom('messages').select((eb) => [eb.fn.min('seq').as('lo'), eb.fn.max('seq').as('hi')]).executeTakeFirst()
  let lo = Number(bounds?.lo ?? 0) - 1 // stored before iso (or nothing)
  let hi = Number(bounds?.hi ?? 0) + 1 // stored at or after iso (or nothing)
  if (bounds?.lo === null || bounds?.lo === undefined) return 0
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    const row = await db.selectFrom('messages').select(['seq', 'created_at']).where('seq', '>=', mid).orderBy('seq').limit(1).executeTakeFirst()
    if (row === undefined || row.created_at >= iso) hi = mid
    else lo = row.seq
  }
  return Math.max(lo, 0)
}
