import { sql, type Kysely } from 'kysely'

// Topics, work queues and ack deadlines (db/topics.ts, db/queues.ts, db/deadlines.ts). One transaction, as 0004.
// - A topic message is stored once with recipients null, as a broadcast is, and `topic` names its topic; each
//   subscriber's copy is made when it next reads (syncBroadcasts), for the messages stored after it subscribed
//   (subscriptions.since_seq).
// - A queue message is stored once with no recipients ('[]') and `queue` set; queue_entries holds its lease.
// - A direct message sent with ack_within_s gives each delivery an ack_by; the deadline sweep sets overdue_at.
// New columns go last in both the live and the archive tables, in the same order: the archiver copies rows column by
// column.
export async function up (db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    for (const prefix of ['', 'archived_']) {
      await trx.schema.alterTable(`${prefix}messages`).addColumn('topic', 'text').execute()
      await trx.schema.alterTable(`${prefix}messages`).addColumn('queue', 'text').execute()
      await trx.schema.alterTable(`${prefix}deliveries`).addColumn('ack_by', 'text').execute()
      await trx.schema.alterTable(`${prefix}deliveries`).addColumn('overdue_at', 'text').execute()
    }
    // The deadline sweep: unread copies whose deadline is set and not yet reported.
    await trx.schema.createIndex('deliveries_ack_due').on('deliveries').column('ack_by')
      .where(sql<boolean>`ack_by is not null and overdue_at is null and read_at is null`).execute()
    // History by topic.
    await trx.schema.createIndex('messages_topic').on('messages').columns(['topic', 'seq']).where(sql.ref('topic'), 'is not', null).execute()

    await trx.schema.createTable('topics')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('description', 'text')
      .addColumn('created_by', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .execute()
    await trx.schema.createTable('subscriptions')
      .addColumn('topic', 'text', (c) => c.notNull())
      .addColumn('agent_id', 'integer', (c) => c.notNull())
      // The subscriber gets the topic's messages stored after this seq.
      .addColumn('since_seq', 'integer', (c) => c.notNull())
      .addColumn('subscribed_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('subscriptions_pk', ['topic', 'agent_id'])
      .execute()
    await trx.schema.createIndex('subscriptions_agent').on('subscriptions').columns(['agent_id', 'topic']).execute()

    await trx.schema.createTable('queues')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('description', 'text')
      .addColumn('lease_s', 'integer', (c) => c.notNull())
      .addColumn('max_deliveries', 'integer', (c) => c.notNull())
      .addColumn('created_by', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .execute()
    await trx.schema.createTable('queue_entries')
      .addColumn('message_seq', 'integer', (c) => c.primaryKey())
      .addColumn('queue', 'text', (c) => c.notNull())
      .addColumn('priority', 'integer', (c) => c.notNull())
      // Not claimable before (a release with a delay).
      .addColumn('available_at', 'text', (c) => c.notNull())
      .addColumn('holder_id', 'integer')
      .addColumn('lease_expires_at', 'text')
      .addColumn('delivery_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('claimed_by', 'integer')
      .addColumn('acked_by', 'integer')
      .addColumn('acked_at', 'text')
      .addColumn('dead_at', 'text')
      .execute()
    // Claims: the unheld entries of a queue, most urgent and then oldest first.
    await trx.schema.createIndex('queue_entries_ready').on('queue_entries').columns(['queue', 'priority desc', 'message_seq'])
      .where(sql<boolean>`holder_id is null and acked_at is null and dead_at is null`).execute()
    // The lease sweep.
    await trx.schema.createIndex('queue_entries_leases').on('queue_entries').column('lease_expires_at')
      .where(sql.ref('holder_id'), 'is not', null).execute()
    // Depths and dead letters: what is not acked yet.
    await trx.schema.createIndex('queue_entries_open').on('queue_entries').columns(['queue', 'message_seq'])
      .where(sql.ref('acked_at'), 'is', null).execute()

    // A deregistered agent's unread copies leave the count (0004); a topic message is one of them only if the agent
    // was subscribed when it was stored.
    await sql`drop trigger agents_deregistered_unread`.execute(trx)
    await sql`create trigger agents_deregistered_unread after update of deleted_at on agents
      when old.deleted_at is null and new.deleted_at is not null
      begin
        update counters set value = value
          - (select count(*) from deliveries where recipient_id = new.id and read_at is null)
          - (select count(*) from messages m where m.recipients is null and m.seq > old.broadcasts_upto and m.sender_id != new.id
              and (m.topic is null or exists (select 1 from subscriptions s where s.topic = m.topic and s.agent_id = new.id and s.since_seq < m.seq))
              and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = new.id))
        where name = 'unread';
      end`.execute(trx)
  })
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`drop trigger agents_deregistered_unread`.execute(trx)
    await sql`create trigger agents_deregistered_unread after update of deleted_at on agents
      when old.deleted_at is null and new.deleted_at is not null
      begin
        update counters set value = value
          - (select count(*) from deliveries where recipient_id = new.id and read_at is null)
          - (select count(*) from messages m where m.recipients is null and m.seq > old.broadcasts_upto and m.sender_id != new.id
              and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = new.id))
        where name = 'unread';
      end`.execute(trx)
    for (const table of ['queue_entries', 'queues', 'subscriptions', 'topics']) await trx.schema.dropTable(table).execute()
    await trx.schema.dropIndex('messages_topic').execute()
    await trx.schema.dropIndex('deliveries_ack_due').execute()
    // SQLite checks every view after a DROP COLUMN (see 0003): down with the views, and back up after.
    for (const table of ['messages', 'deliveries']) await trx.schema.dropView(`all_${table}`).execute()
    for (const prefix of ['', 'archived_']) {
      for (const column of ['queue', 'topic']) await trx.schema.alterTable(`${prefix}messages`).dropColumn(column).execute()
      for (const column of ['overdue_at', 'ack_by']) await trx.schema.alterTable(`${prefix}deliveries`).dropColumn(column).execute()
    }
    for (const table of ['messages', 'deliveries']) {
      await trx.schema.createView(`all_${table}`).as(
        trx.selectFrom(table).selectAll().select(sql<number>`0`.as('archived'))
          .unionAll(trx.selectFrom(`archived_${table}`).selectAll().select(sql<number>`1`.as('archived')))
      ).execute()
    }
  })
}
