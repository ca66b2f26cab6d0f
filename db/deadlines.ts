import type { Kysely, Transaction } from 'kysely'
import type { Database } from './schema.js'

export interface Overdue { seq: number, senderId: number, agent: string, ackBy: string }

// Ack deadlines: the unread copies of direct messages sent with ack_within_s whose deadline has passed, marked
// overdue once each (up to `limit` a round), with what the sender is told. A late ack still marks the copy read.
export async function markOverdue (trx: Transaction<Database>, now: string, limit: number): Promise<Overdue[]> {
  const due = await trx.selectFrom('deliveries as d')
    .innerJoin('messages as m', 'm.seq', 'd.message_seq').innerJoin('agents as a', 'a.id', 'd.recipient_id')
    .select(['d.message_seq', 'd.recipient_id', 'd.ack_by', 'm.sender_id', 'a.name'])
    .where('d.ack_by', 'is not', null).where('d.overdue_at', 'is', null).where('d.read_at', 'is', null)
    .where('d.ack_by', '<=', now)
    .orderBy('d.ack_by').limit(limit).execute()
  if (due.length === 0) return []
  await trx.updateTable('deliveries as d').set({ overdue_at: now })
    .where((eb) => eb(eb.refTuple('d.message_seq', 'd.recipient_id'), 'in', due.map((r) => eb.tuple(r.message_seq, r.recipient_id))))
    .execute()
  return due.map((r) => ({ seq: Number(r.message_seq), senderId: Number(r.sender_id), agent: r.name, ackBy: r.ack_by as string }))
}

// Whether an ack deadline has passed that is not marked yet: one index probe, so that a sweep with nothing to do writes
// nothing.
export async function deadlinesPassed (db: Kysely<Database>, now: string): Promise<boolean> {
  return (await db.selectFrom('deliveries').select('message_seq')
    .where('ack_by', 'is not', null).where('overdue_at', 'is', null).where('read_at', 'is', null)
    .where('ack_by', '<=', now).limit(1).executeTakeFirst()) !== undefined
}
