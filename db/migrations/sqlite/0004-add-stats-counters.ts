import { sql, type Kysely } from 'kysely'

// GET /stats counted every message and delivery on each call (17 to 27 s at a million messages, with every other
// request waiting: better-sqlite3 is synchronous). From here on its message figures are counters, kept by the writes
// that change them in their own transactions (db/stats.ts), and counted from the data once, here. One transaction,
// because Kysely runs SQLite migrations without one: a start that fails half-way leaves nothing half made.
// The ranks are the ones of 0001 (normal 0, high 1, urgent 2).
export async function up (db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    // A handful of rows on one page; without rowid, so each is found by its name alone.
    await trx.schema.createTable('counters')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('value', 'integer', (c) => c.notNull())
      .modifyEnd(sql`without rowid`)
      .execute()
    const stored = (rank: number) => sql`(select count(*) from messages where priority = ${sql.lit(rank)})
      + (select count(*) from archived_messages where priority = ${sql.lit(rank)})`
    // Unread: the copies registered agents have not acknowledged, made (a delivery row) or not yet made (a broadcast
    // they have not read up to). A deregistered agent's copies will never be read: they do not count.
    const unread = sql`(select count(*) from deliveries d join agents a on a.id = d.recipient_id
        where d.read_at is null and a.deleted_at is null)
      + (select count(*) from agents a join messages m on m.recipients is null and m.seq > a.broadcasts_upto and m.sender_id != a.id
        where a.deleted_at is null
          and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = a.id))`
    await sql`insert into counters (name, value) values
      ('messages_normal', ${stored(0)}), ('messages_high', ${stored(1)}), ('messages_urgent', ${stored(2)}),
      ('messages_archived', (select count(*) from archived_messages)), ('unread', ${unread})`.execute(trx)
    // Deregistration takes the agent's unread copies off the count. A trigger rather than a statement beside the
    // UPDATE: deregisterAgent runs outside any transaction, and this way the count changes with the row, atomically,
    // whatever path deregisters. Both counts are index ranges of this one agent (deliveries_unread, messages_broadcast).
    await sql`create trigger agents_deregistered_unread after update of deleted_at on agents
      when old.deleted_at is null and new.deleted_at is not null
      begin
        update counters set value = value
          - (select count(*) from deliveries where recipient_id = new.id and read_at is null)
          - (select count(*) from messages m where m.recipients is null and m.seq > old.broadcasts_upto and m.sender_id != new.id
              and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = new.id))
        where name = 'unread';
      end`.execute(trx)
    // /stats counts registered agents and those online from this index alone, not from every row ever registered.
    // deleted_at (always null here) is a column too: SQLite takes an index as covering only if it holds every
    // column the query names, its WHERE included.
    await trx.schema.createIndex('agents_registered_online').on('agents').columns(['online', 'deleted_at'])
      .where(sql.ref('deleted_at'), 'is', null).execute()
  })
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('agents_registered_online').execute()
  await sql`drop trigger agents_deregistered_unread`.execute(db)
  await db.schema.dropTable('counters').execute()
}
