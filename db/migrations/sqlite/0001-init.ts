import { sql, type Kysely } from 'kysely'

export async function up (db: Kysely<any>): Promise<void> {
  await db.schema.createTable('agents')
    .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text')
    .addColumn('capabilities', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('metadata', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('token_hash', 'text')
    .addColumn('registered_at', 'text', (c) => c.notNull())
    .addColumn('last_seen_at', 'text')
    .addColumn('online', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('deleted_at', 'text')
    .addColumn('webhook_url', 'text')
    .addColumn('webhook_secret', 'text')
    .execute()
  // A name is taken while its agent is registered; deregistered rows keep their name for history.
  await db.schema.createIndex('agents_name_live').on('agents').column('name').unique()
    .where(sql.ref('deleted_at'), 'is', null).execute()
  // Every authenticated request looks its agent up by token hash.
  await db.schema.createIndex('agents_token_hash').on('agents').column('token_hash').unique().execute()

  for (const prefix of ['', 'archived_']) {
    await db.schema.createTable(`${prefix}messages`)
      .addColumn('seq', 'integer', (c) => prefix === '' ? c.primaryKey().autoIncrement() : c.primaryKey())
      .addColumn('sender_id', 'integer', (c) => c.notNull())
      .addColumn('recipients', 'text')
      .addColumn('subject', 'text')
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('data', 'text')
      .addColumn('priority', 'integer', (c) => c.notNull())
      .addColumn('reply_to', 'integer')
      .addColumn('thread_id', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('idempotency_key', 'text')
      .execute()
    // History: what an agent sent, in seq order.
    await db.schema.createIndex(`${prefix}messages_sender`).on(`${prefix}messages`).columns(['sender_id', 'seq']).execute()
    // Threads: a reply chain in order.
    await db.schema.createIndex(`${prefix}messages_thread`).on(`${prefix}messages`).columns(['thread_id', 'seq']).execute()

    await db.schema.createTable(`${prefix}deliveries`)
      .addColumn('message_seq', 'integer', (c) => c.notNull())
      .addColumn('recipient_id', 'integer', (c) => c.notNull())
      .addColumn('priority', 'integer', (c) => c.notNull())
      .addColumn('read_at', 'text')
      .addColumn('delivered_at', 'text')
      .addColumn('webhook_attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('webhook_next_at', 'text')
      .addPrimaryKeyConstraint(`${prefix}deliveries_pk`, ['recipient_id', 'message_seq'])
      .execute()
    // Receipts and the archiver: all deliveries of one message.
    await db.schema.createIndex(`${prefix}deliveries_message`).on(`${prefix}deliveries`).columns(['message_seq', 'read_at']).execute()
  }
  // The inbox order: priority first (urgent = 2), then oldest first.
  await db.schema.createIndex('deliveries_inbox').on('deliveries').columns(['recipient_id', 'priority desc', 'message_seq']).execute()
  // The unread inbox, the common case, stays small however much has been read.
  await db.schema.createIndex('deliveries_unread').on('deliveries').columns(['recipient_id', 'priority desc', 'message_seq'])
    .where(sql.ref('read_at'), 'is', null).execute()
  // The webhook dispatcher: deliveries whose next attempt is due.
  await db.schema.createIndex('deliveries_webhook_due').on('deliveries').columns(['webhook_next_at'])
    .where(sql.ref('webhook_next_at'), 'is not', null).execute()
  // Idempotent retries: one message per (sender, key).
  await db.schema.createIndex('messages_idempotency').on('messages').columns(['sender_id', 'idempotency_key']).unique()
    .where(sql.ref('idempotency_key'), 'is not', null).execute()
  // History, threads and single messages read live and archived rows alike through these views.
  for (const table of ['messages', 'deliveries']) {
    await db.schema.createView(`all_${table}`).as(
      db.selectFrom(table).selectAll().select(sql<number>`0`.as('archived'))
        .unionAll(db.selectFrom(`archived_${table}`).selectAll().select(sql<number>`1`.as('archived')))
    ).execute()
  }
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropView('all_deliveries').execute()
  await db.schema.dropView('all_messages').execute()
  for (const table of ['archived_deliveries', 'archived_messages', 'deliveries', 'messages', 'agents']) {
    await db.schema.dropTable(table).execute()
  }
}
