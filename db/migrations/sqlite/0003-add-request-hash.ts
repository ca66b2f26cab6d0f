import { sql, type Kysely } from 'kysely'

// A fingerprint of the request that stored a message with an Idempotency-Key, so that the same key sent with a
// different request is refused (422) instead of answered with the first message. Added to the archive as well,
// last in both tables, because the archiver copies rows column by column in order. Older rows have none and are
// taken as matching any request with their key, as before.
export async function up (db: Kysely<any>): Promise<void> {
  for (const table of ['messages', 'archived_messages']) {
    await db.schema.alterTable(table).addColumn('request_hash', 'text').execute()
  }
}

export async function down (db: Kysely<any>): Promise<void> {
  // SQLite checks every view after a DROP COLUMN, and the union views of 0001 would not line up between the two
  // drops: take them down and put them back as they were.
  for (const table of ['messages', 'deliveries']) await db.schema.dropView(`all_${table}`).execute()
  for (const table of ['messages', 'archived_messages']) {
    await db.schema.alterTable(table).dropColumn('request_hash').execute()
  }
  for (const table of ['messages', 'deliveries']) {
    await db.schema.createView(`all_${table}`).as(
      db.selectFrom(table).selectAll().select(sql<number>`0`.as('archived'))
        .unionAll(db.selectFrom(`archived_${table}`).selectAll().select(sql<number>`1`.as('archived')))
    ).execute()
  }
}
