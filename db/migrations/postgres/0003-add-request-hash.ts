import { sql, type Kysely } from 'kysely'

// As db/migrations/sqlite/0003-add-request-hash.ts: the fingerprint of the request that stored a message with an
// Idempotency-Key, last in both tables because the archiver copies rows column by column in order.
export async function up (db: Kysely<any>): Promise<void> {
  for (const table of ['messages', 'archived_messages']) {
    await sql`alter table ${sql.table(table)} add column request_hash text`.execute(db)
  }
}

export async function down (db: Kysely<any>): Promise<void> {
  for (const table of ['messages', 'archived_messages']) {
    await sql`alter table ${sql.table(table)} drop column request_hash`.execute(db)
  }
}
