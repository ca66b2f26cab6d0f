import { sql, type Kysely, type Transaction } from 'kysely'
import type { PriorityName } from './messages.js'
import { prepared } from './prepared.js'
import type { Database } from './schema.js'

type Db = Kysely<Database> | Transaction<Database>

// The message figures of GET /stats, kept as counters (migration 0004) so that reading them costs the same at ten
// messages as at ten million. Each write that changes one adds to it in its own transaction (in a group commit, the
// same transaction and the same fsync as the send), so they are exact. What they count, and who keeps them:
// - messages_<priority>: messages ever stored, archived ones included (messages are archived, never deleted): sendMessage.
// - messages_archived: messages moved to the archive: archiveBatch.
// - unread: copies that registered agents have not acknowledged, broadcast copies not yet fanned out included.
//   sendMessage adds a send's recipients, ackMessages takes off what it marks read, and the trigger of 0004 takes off
//   a deregistered agent's copies. Fanning a broadcast out (syncBroadcasts) turns a pending copy into a row and
//   changes nothing; neither does archiving, which moves only copies that are read or whose agent is gone.
// A write that bypasses db/ (raw SQL in a script or a test) bypasses the counters too.
export const COUNTERS = ['messages_normal', 'messages_high', 'messages_urgent', 'messages_archived', 'unread'] as const
export type CounterName = typeof COUNTERS[number]
export interface CounterTable { name: CounterName, value: number }

// The counters table is not in the Database interface: only this module sees it, so no other code writes a counter
// by accident.
const withCounters = (db: Db) => (db as Kysely<Database>).withTables<{ counters: CounterTable }>()

// Sends: each its message, and one unread copy per recipient. One statement for any number of sends (a batch).
export async function countSent (trx: Transaction<Database>, sent: Array<{ priority: PriorityName, recipients: number }>): Promise<void> {
  const add = new Map<CounterName, number>()
  for (const { priority, recipients } of sent) {
    add.set(`messages_${priority}`, (add.get(`messages_${priority}`) ?? 0) + 1)
    add.set('unread', (add.get('unread') ?? 0) + recipients)
  }
  const names = [...add.keys()]
  await withCounters(trx).updateTable('counters')
    .set((eb) => ({
      value: eb('value', '+', names.slice(1).reduce(
        (c, name) => c.when('name', '=', name).then(bigint(add.get(name) as number)),
        eb.case().when('name', '=', names[0]).then(bigint(add.get(names[0]) as number))
      ).end())
    }))
    .where('name', 'in', names)
    .execute()
}

// PostgreSQL types an untyped parameter in a CASE as text, which it will not add to a number.
const bigint = (value: number) => sql<number>`cast(${value} as bigint)`

// An ack that raced its agent's deregistration changes nothing: the deregistration already took that agent's
// unread copies off the count.
const addRead = prepared((db, agentId: number, read: number) => withCounters(db).updateTable('counters')
  .set((eb) => ({ value: eb('value', '-', read) }))
  .where('name', '=', 'unread')
  .where((eb) => eb.exists(eb.selectFrom('agents').select('id').where('id', '=', agentId).where('deleted_at', 'is', null))))

export async function countRead (trx: Transaction<Database>, agentId: number, read: number): Promise<void> {
  if (read > 0) await addRead(trx, agentId, read)
}

const addArchived = prepared((db, moved: number) => withCounters(db).updateTable('counters')
  .set((eb) => ({ value: eb('value', '+', moved) })).where('name', '=', 'messages_archived'))

export async function countArchived (trx: Transaction<Database>, moved: number): Promise<void> {
  if (moved > 0) await addArchived(trx, moved)
}

const readCounters = prepared((db) => withCounters(db).selectFrom('counters').select(['name', 'value']))

export async function messageStats (db: Db) {
  const c = Object.fromEntries((await readCounters(db)).map((r) => [r.name, Number(r.value)])) as Record<CounterName, number>
  const byPriority = { normal: c.messages_normal, high: c.messages_high, urgent: c.messages_urgent }
  return {
    total: byPriority.normal + byPriority.high + byPriority.urgent,
    unread: c.unread,
    archived: c.messages_archived,
    by_priority: byPriority
  }
}
