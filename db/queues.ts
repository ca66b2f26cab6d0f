import { sql, type Expression, type Kysely, type RawBuilder, type SqlBool, type Transaction, type UpdateObject, type ExpressionBuilder } from 'kysely'
import type { Database, QueueEntryTable } from './schema.js'

type Db = Kysely<Database> | Transaction<Database>

// Work queues: competing consumers with leases. A queue message is stored once in `messages` (with `queue` set and no
// recipients); its entry in queue_entries says where it stands:
// - available: no holder, and available_at has passed (a release may delay it);
// - leased: a holder whose lease_expires_at has not passed;
// - acked: acked_at set, for good;
// - dead: dead_at set, after max_deliveries deliveries ended (expired or released) without an ack, until requeued.
// A lease that has passed is over: whoever looks next (a claim, the lease sweep) ends it, so that what a claim sees is
// exact to the millisecond whatever the sweep's timing. Times are ISO-8601 strings, compared as text.

export interface QueueRow { name: string, description: string | null, lease_s: number, max_deliveries: number, created_by: number, created_at: string }

export async function createQueue (trx: Transaction<Database>, row: QueueRow): Promise<boolean> {
  return (await trx.insertInto('queues').values(row).onConflict((oc) => oc.column('name').doNothing()).returning('name').executeTakeFirst()) !== undefined
}

export async function findQueue (db: Db, name: string): Promise<QueueRow | undefined> {
  return db.selectFrom('queues').selectAll().where('name', '=', name).executeTakeFirst()
}

// Each queue with what its messages are doing now. Only entries not yet acked are counted (an index range per queue).
export async function listQueues (db: Db, now: string) {
  const rows = await db.selectFrom('queues as q').innerJoin('agents as c', 'c.id', 'q.created_by')
    .leftJoin('queue_entries as e', (j) => j.onRef('e.queue', '=', 'q.name').on('e.acked_at', 'is', null))
    .select((eb) => {
      const expired = eb.and([eb('e.holder_id', 'is not', null), eb('e.lease_expires_at', '<=', now)])
      const spent = eb('e.delivery_count', '>=', eb.ref('q.max_deliveries'))
      const count = (where: Array<Expression<SqlBool>>) => eb.fn.count<number>('e.message_seq').filterWhere(eb.and(where))
      return ['q.name', 'q.description', 'q.lease_s', 'q.max_deliveries', 'q.created_at', 'c.name as created_by',
        count([eb('e.dead_at', 'is', null), eb.or([
          eb.and([eb('e.holder_id', 'is', null), eb('e.available_at', '<=', now)]),
          eb.and([expired, eb.not(spent)])
        ])]).as('available'),
        count([eb('e.dead_at', 'is', null), eb('e.holder_id', 'is', null), eb('e.available_at', '>', now)]).as('delayed'),
        count([eb('e.holder_id', 'is not', null), eb('e.lease_expires_at', '>', now)]).as('leased'),
        count([eb.or([eb('e.dead_at', 'is not', null), eb.and([expired, spent])])]).as('dead')]
    })
    .groupBy(['q.name', 'q.description', 'q.lease_s', 'q.max_deliveries', 'q.created_at', 'c.name'])
    .orderBy('q.name').execute()
  return rows.map((r) => ({ ...r, available: Number(r.available), delayed: Number(r.delayed), leased: Number(r.leased), dead: Number(r.dead) }))
}

type ClaimRows = ((table: string) => RawBuilder<unknown>) | undefined

// In an update of queue_entries that ends a delivery: `at` if the message has had its queue's max_deliveries (it is
// dead from then), null otherwise.
const deadIfSpent = (eb: ExpressionBuilder<Database, 'queue_entries'>, at: Expression<string>) => eb.case()
  .when('delivery_count', '>=', eb.selectFrom('queues').select('max_deliveries').whereRef('queues.name', '=', 'queue_entries.queue'))
  .then(at).else(null).end()

// Ends the leases that have passed, of one queue or of all: the message is available again, or dead once it has had
// its max_deliveries. Answers the queues that got messages back, to wake their claimers. Rows another transaction
// holds are skipped (claimRows), not waited for: two claims ending the same leases in different orders would deadlock.
export async function expireLeases (trx: Transaction<Database>, claimRows: ClaimRows, now: string, queue?: string): Promise<string[]> {
  let ended = trx.selectFrom('queue_entries').select('message_seq').where('holder_id', 'is not', null).where('lease_expires_at', '<=', now)
  if (queue !== undefined) ended = ended.where('queue', '=', queue)
  const seqs = (await (claimRows === undefined ? ended : ended.modifyEnd(claimRows('queue_entries'))).execute()).map((r) => Number(r.message_seq))
  if (seqs.length === 0) return []
  const update = trx.updateTable('queue_entries')
    .set((eb) => ({
      holder_id: null,
      lease_expires_at: null,
      // Dead when its lease ended, as GET /queues and queue_status said before any sweep came (SET reads the old row).
      dead_at: deadIfSpent(eb, eb.ref('lease_expires_at') as Expression<string>)
    }))
    .where('message_seq', 'in', seqs).where('holder_id', 'is not', null).where('lease_expires_at', '<=', now)
  const rows = await update.returning(['queue', 'dead_at']).execute()
  return [...new Set(rows.filter((r) => r.dead_at === null).map((r) => r.queue))]
}

// Whether a lease has ended that no one has ended yet: one index probe, so that a sweep with nothing to do writes nothing.
export async function leasesEnded (db: Db, now: string): Promise<boolean> {
  return (await db.selectFrom('queue_entries').select('message_seq')
    .where('holder_id', 'is not', null).where('lease_expires_at', '<=', now).limit(1).executeTakeFirst()) !== undefined
}

// Whether a claim of the queue would find something now: an available entry, or a lease that has passed. One index
// probe each, so that claims waiting for work read instead of writing when they wake.
export async function claimable (db: Db, queue: string, now: string): Promise<boolean> {
  const ready = await db.selectFrom('queue_entries').select('message_seq')
    .where('queue', '=', queue).where('holder_id', 'is', null).where('acked_at', 'is', null).where('dead_at', 'is', null)
    .where('available_at', '<=', now).limit(1).executeTakeFirst()
  if (ready !== undefined) return true
  return (await db.selectFrom('queue_entries').select('message_seq')
    .where('holder_id', 'is not', null).where('lease_expires_at', '<=', now).where('queue', '=', queue).limit(1).executeTakeFirst()) !== undefined
}

export interface Lease { seq: number, delivery_count: number, lease_expires_at: string }

// Leases up to `limit` available messages of the queue to the agent, most urgent and then oldest first. On PostgreSQL
// the rows are locked as they are chosen, skipping those another node's claim holds (claimRows): two claims never
// take the same message, and neither waits for the other.
export async function claimEntries (trx: Transaction<Database>, claimRows: ClaimRows,
  queue: string, agentId: number, limit: number, now: string, leaseUntil: string): Promise<Lease[]> {
  await expireLeases(trx, claimRows, now, queue)
  const ready = trx.selectFrom('queue_entries').select('message_seq')
    .where('queue', '=', queue).where('holder_id', 'is', null).where('acked_at', 'is', null).where('dead_at', 'is', null)
    .where('available_at', '<=', now)
    .orderBy('priority', 'desc').orderBy('message_seq').limit(limit)
  const seqs = (await (claimRows === undefined ? ready : ready.modifyEnd(claimRows('queue_entries'))).execute()).map((r) => Number(r.message_seq))
  if (seqs.length === 0) return []
  const leased = await trx.updateTable('queue_entries')
    .set((eb) => ({ holder_id: agentId, claimed_by: agentId, lease_expires_at: leaseUntil, delivery_count: eb('delivery_count', '+', 1) }))
    .where('message_seq', 'in', seqs)
    .returning(['message_seq', 'delivery_count', 'lease_expires_at']).execute()
  const bySeq = new Map(leased.map((r) => [Number(r.message_seq), r]))
  // In the order chosen: most urgent, then oldest.
  return seqs.map((seq) => {
    const r = bySeq.get(seq) as { delivery_count: number, lease_expires_at: string | null }
    return { seq, delivery_count: Number(r.delivery_count), lease_expires_at: r.lease_expires_at as string }
  })
}

// Why the caller may not act on one of the ids: not in this queue, or not leased to it now.
export type LeaseProblem =
  | { id: number, problem: 'not_found' }
  | { id: number, problem: 'held', holder: string, until: string }
  | { id: number, problem: 'expired', at: string }
  | { id: number, problem: 'not_leased', state: 'available' | 'acked' | 'dead' }

type EntryState = Pick<QueueEntryTable, 'holder_id' | 'lease_expires_at' | 'acked_at' | 'acked_by' | 'dead_at'> & { message_seq: number, holder: string | null }

async function entriesOf (trx: Transaction<Database>, queue: string, ids: number[]): Promise<Map<number, EntryState>> {
  const rows = await trx.selectFrom('queue_entries as e').leftJoin('agents as h', 'h.id', 'e.holder_id')
    .select(['e.message_seq', 'e.holder_id', 'e.lease_expires_at', 'e.acked_at', 'e.acked_by', 'e.dead_at', 'h.name as holder'])
    .where('e.queue', '=', queue).where('e.message_seq', 'in', ids).execute()
  return new Map(rows.map((r) => [Number(r.message_seq), { ...r, message_seq: Number(r.message_seq), holder_id: r.holder_id === null ? null : Number(r.holder_id) }]))
}

// The problem with acting on this entry as its lease holder, or undefined when the caller holds a running lease.
function leaseProblem (id: number, entry: EntryState | undefined, agentId: number, now: string): LeaseProblem | undefined {
  if (entry === undefined) return { id, problem: 'not_found' }
  if (entry.holder_id !== null && entry.holder_id !== agentId && (entry.lease_expires_at as string) > now) {
    return { id, problem: 'held', holder: entry.holder ?? 'a deregistered agent', until: entry.lease_expires_at as string }
  }
  if (entry.holder_id === agentId && (entry.lease_expires_at as string) <= now) return { id, problem: 'expired', at: entry.lease_expires_at as string }
  if (entry.holder_id === agentId) return undefined
  // Not held by anyone now: the caller's lease, if it had one, ended (an expired lease that was swept looks the same).
  return { id, problem: 'not_leased', state: entry.acked_at !== null ? 'acked' : entry.dead_at !== null ? 'dead' : 'available' }
}

export type LeaseOutcome<T> = { ok: true, value: T } | { ok: false, problems: LeaseProblem[] }

// Acks, releases and extensions act on every id or on none: the ids must all be leased to the caller, now.
async function asHolder<T> (trx: Transaction<Database>, queue: string, agentId: number, ids: number[], now: string,
  skip: (entry: EntryState) => boolean, act: (seqs: number[]) => Promise<T>): Promise<LeaseOutcome<T>> {
  const unique = [...new Set(ids)]
  const entries = await entriesOf(trx, queue, unique)
  const problems = unique.flatMap((id) => {
    const entry = entries.get(id)
    if (entry !== undefined && skip(entry)) return []
    const problem = leaseProblem(id, entry, agentId, now)
    return problem === undefined ? [] : [problem]
  })
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, value: await act(unique.filter((id) => !skip(entries.get(id) as EntryState))) }
}

// Thrown inside the write (which rolls it back) when a lease changed between reading it and acting on it: it ended, or
// a concurrent request of the holder acted first. The update is conditional on the lease, so this is seen, never lost.
export class LeaseChanged extends Error {
  override name = 'LeaseChanged'
}

// The caller's running leases among these entries, updated; every one of them must still be.
async function updateHeld (trx: Transaction<Database>, agentId: number, seqs: number[], now: string,
  set: UpdateObject<Database, 'queue_entries'> | ((eb: ExpressionBuilder<Database, 'queue_entries'>) => UpdateObject<Database, 'queue_entries'>)): Promise<Array<{ dead_at: string | null }>> {
  if (seqs.length === 0) return []
  const rows = await trx.updateTable('queue_entries').set(set)
    .where('message_seq', 'in', seqs).where('holder_id', '=', agentId).where('lease_expires_at', '>', now)
    .returning('dead_at').execute()
  if (rows.length !== seqs.length) throw new LeaseChanged('a lease ended or changed while this request ran')
  return rows
}

// Done: the message leaves the queue for good. Acking again what the caller acked already changes nothing.
export async function ackEntries (trx: Transaction<Database>, queue: string, agentId: number, ids: number[], now: string) {
  return asHolder(trx, queue, agentId, ids, now, (e) => e.acked_by === agentId, async (seqs) => {
    await updateHeld(trx, agentId, seqs, now, { acked_at: now, acked_by: agentId, holder_id: null, lease_expires_at: null })
    return { acked: seqs.length, already_acked: new Set(ids).size - seqs.length }
  })
}

// Given back unfinished: available again after `availableAt`, or dead once it has had its max_deliveries.
export async function releaseEntries (trx: Transaction<Database>, queue: string, agentId: number, ids: number[], now: string, availableAt: string) {
  return asHolder(trx, queue, agentId, ids, now, () => false, async (seqs) => {
    const rows = await updateHeld(trx, agentId, seqs, now, (eb) => ({
      holder_id: null,
      lease_expires_at: null,
      available_at: availableAt,
      dead_at: deadIfSpent(eb, sql<string>`cast(${now} as text)`)
    }))
    const dead = rows.filter((r) => r.dead_at !== null).length
    return { released: rows.length - dead, dead }
  })
}

export async function extendEntries (trx: Transaction<Database>, queue: string, agentId: number, ids: number[], now: string, leaseUntil: string) {
  return asHolder(trx, queue, agentId, ids, now, () => false, async (seqs) => {
    await updateHeld(trx, agentId, seqs, now, { lease_expires_at: leaseUntil })
    return { extended: seqs.length, lease_expires_at: leaseUntil }
  })
}

// The dead letters of a queue, oldest first, after a position: those marked dead, and those whose last lease has
// ended without anyone ending it yet (as listQueues counts them).
export async function listDead (db: Db, queue: string, now: string, afterSeq: number, limit: number) {
  return db.selectFrom('queue_entries as e').innerJoin('queues as q', 'q.name', 'e.queue').leftJoin('agents as c', 'c.id', 'e.claimed_by')
    .select((eb) => ['e.message_seq', 'e.delivery_count', eb.fn.coalesce('e.dead_at', 'e.lease_expires_at').as('dead_at'), 'c.name as claimed_by'])
    .where('e.queue', '=', queue).where('e.acked_at', 'is', null)
    .where((eb) => eb.or([eb('e.dead_at', 'is not', null), eb.and([
      eb('e.holder_id', 'is not', null), eb('e.lease_expires_at', '<=', now), eb('e.delivery_count', '>=', eb.ref('q.max_deliveries'))
    ])]))
    .where('e.message_seq', '>', afterSeq).orderBy('e.message_seq').limit(limit).execute()
}

// Dead letters back in the queue, available now with a fresh count: the ids given, or all of them.
export async function requeueDead (trx: Transaction<Database>, queue: string, ids: number[] | undefined, now: string): Promise<number[]> {
  let update = trx.updateTable('queue_entries').set({ dead_at: null, delivery_count: 0, available_at: now, holder_id: null, lease_expires_at: null })
    .where('queue', '=', queue).where('acked_at', 'is', null).where('dead_at', 'is not', null)
  if (ids !== undefined) update = update.where('message_seq', 'in', ids)
  return (await update.returning('message_seq').execute()).map((r) => Number(r.message_seq))
}

export type QueueState = 'available' | 'delayed' | 'leased' | 'acked' | 'dead'

// Where a queue message stands, for its sender (GET /messages/{id}).
export async function queueStatus (db: Db, seq: number, now: string) {
  const row = await db.selectFrom('queue_entries as e').innerJoin('queues as q', 'q.name', 'e.queue')
    .leftJoin('agents as c', 'c.id', 'e.claimed_by').leftJoin('agents as k', 'k.id', 'e.acked_by')
    .select(['e.queue', 'e.holder_id', 'e.lease_expires_at', 'e.available_at', 'e.delivery_count', 'e.acked_at', 'e.dead_at', 'q.max_deliveries',
      'c.name as claimed_by', 'k.name as acked_by'])
    .where('e.message_seq', '=', seq).executeTakeFirst()
  if (row === undefined) return undefined
  const expired = row.holder_id !== null && (row.lease_expires_at as string) <= now
  const dead = row.dead_at ?? (expired && row.delivery_count >= row.max_deliveries ? row.lease_expires_at : null)
  const state: QueueState = row.acked_at !== null
    ? 'acked'
    : dead !== null ? 'dead' : row.holder_id !== null && !expired ? 'leased' : row.available_at > now ? 'delayed' : 'available'
  return {
    queue: row.queue,
    state,
    delivery_count: Number(row.delivery_count),
    claimed_by: row.claimed_by,
    lease_expires_at: state === 'leased' ? row.lease_expires_at : null,
    acked_by: row.acked_by,
    acked_at: row.acked_at,
    dead_at: dead
  }
}
