import { sql, type Kysely } from 'kysely'

// Broadcasts are fanned out on read from here on (see syncBroadcasts in db/messages.ts): a broadcast is stored once,
// and each agent's delivery rows are created when it next reads. broadcasts_upto says how far that has gone.
export async function up (db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('agents').addColumn('broadcasts_upto', 'integer', (c) => c.notNull().defaultTo(0)).execute()
  // Every broadcast stored before this migration was fanned out when it was sent.
  await sql`update agents set broadcasts_upto = (select coalesce(max(seq), 0) from messages)`.execute(db)
  // The broadcasts an agent has not caught up with: a range scan after its broadcasts_upto.
  await db.schema.createIndex('messages_broadcast').on('messages').column('seq').where(sql.ref('recipients'), 'is', null).execute()
  // The archiver: agents that have not caught up with a broadcast yet.
  await db.schema.createIndex('agents_broadcasts_upto').on('agents').column('broadcasts_upto')
    .where(sql.ref('deleted_at'), 'is', null).execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  // Back to fan-out on write: give every agent the rows it has not caught up with yet.
  await sql`insert into deliveries (message_seq, recipient_id, priority)
    select m.seq, a.id, m.priority from agents a join messages m on m.recipients is null and m.seq > a.broadcasts_upto and m.sender_id != a.id
    where a.deleted_at is null on conflict do nothing`.execute(db)
  await db.schema.dropIndex('agents_broadcasts_upto').execute()
  await db.schema.dropIndex('messages_broadcast').execute()
  await db.schema.alterTable('agents').dropColumn('broadcasts_upto').execute()
}
