import type { Kysely, Transaction } from 'kysely'
import type { Database } from './schema.js'

type Db = Kysely<Database> | Transaction<Database>

// Topics: a message published to a topic is stored once (recipients null, `topic` set), as a broadcast is, and each
// subscriber's copy is made when it next reads (syncBroadcasts in db/messages.ts), for the messages stored after it
// subscribed. Subscribing and unsubscribing are ordered writes (they must not race a publish in flight): the position
// a subscription starts from is then the newest one stored.

export interface TopicRow { name: string, description: string | null, created_by: number, created_at: string }

export async function createTopic (trx: Transaction<Database>, row: TopicRow): Promise<boolean> {
  return (await trx.insertInto('topics').values(row).onConflict((oc) => oc.column('name').doNothing()).returning('name').executeTakeFirst()) !== undefined
}

export async function topicExists (db: Db, name: string): Promise<boolean> {
  return (await db.selectFrom('topics').select('name').where('name', '=', name).executeTakeFirst()) !== undefined
}

// Every topic, with its registered subscribers and whether the caller is one of them.
export async function listTopics (db: Db, agentId: number) {
  const rows = await db.selectFrom('topics as t').innerJoin('agents as c', 'c.id', 't.created_by')
    .select((eb) => ['t.name', 't.description', 't.created_at', 'c.name as created_by',
      // Deregistration deletes an agent's subscriptions: every one is a registered agent's.
      eb.selectFrom('subscriptions as s').select((s) => s.fn.countAll<number>().as('n')).whereRef('s.topic', '=', 't.name').as('subscribers'),
      eb.exists(eb.selectFrom('subscriptions as s').select('s.agent_id').whereRef('s.topic', '=', 't.name').where('s.agent_id', '=', agentId)).as('subscribed')])
    .orderBy('t.name').execute()
  return rows.map((r) => ({ ...r, subscribers: Number(r.subscribers), subscribed: Boolean(r.subscribed) }))
}

// Subscribes the agent from the newest message on; answers false when it already was (its start stays).
export async function subscribe (trx: Transaction<Database>, topic: string, agentId: number, now: string): Promise<boolean> {
  const [{ latest }] = await trx.selectNoFrom((eb) => eb.fn.coalesce(
    eb.selectFrom('messages').select((m) => m.fn.max('seq').as('seq')),
    eb.selectFrom('archived_messages').select((m) => m.fn.max('seq').as('seq'))
  ).as('latest')).execute()
  const inserted = await trx.insertInto('subscriptions')
    .values({ topic, agent_id: agentId, since_seq: Number(latest ?? 0), subscribed_at: now })
    .onConflict((oc) => oc.columns(['topic', 'agent_id']).doNothing())
    .returning('agent_id').executeTakeFirst()
  return inserted !== undefined
}

// Ends the subscription; answers false when there was none. The messages published while it lasted stay the agent's:
// the copies it has not made yet are made now, before the subscription that entitles it to them goes.
export async function unsubscribe (trx: Transaction<Database>, topic: string, agentId: number): Promise<boolean> {
  const subscription = await trx.selectFrom('subscriptions').select('since_seq')
    .where('topic', '=', topic).where('agent_id', '=', agentId).executeTakeFirst()
  if (subscription === undefined) return false
  await trx.insertInto('deliveries').columns(['message_seq', 'recipient_id', 'priority'])
    .expression(trx.selectFrom('messages as m').innerJoin('agents as a', (j) => j.on('a.id', '=', agentId).on('a.deleted_at', 'is', null))
      .select((eb) => ['m.seq', eb.cast(eb.val(agentId), 'bigint').as('recipient_id'), 'm.priority'])
      .where('m.topic', '=', topic).where('m.recipients', 'is', null).where('m.sender_id', '!=', agentId)
      .where('m.seq', '>', subscription.since_seq).whereRef('m.seq', '>', 'a.broadcasts_upto'))
    .onConflict((oc) => oc.doNothing())
    .execute()
  await trx.deleteFrom('subscriptions').where('topic', '=', topic).where('agent_id', '=', agentId).execute()
  return true
}
