import { sql, type Kysely } from 'kysely'

// As db/migrations/sqlite/0003-add-request-hash.ts: the fingerprint of the request that stored a message with an
// Idempotency-Key, last in both tables because the archiver copies rows column by column in order.
// PostgreSQL expands a view's * when the view is made, so the union views of 0001 are made again around the change
// to take the new column in, as SQLite's do by themselves.
export async function up (db: Kysely<any>): Promise<void> {
  await sql`drop view all_deliveries, all_messages`.execute(db)
  for (const table of ['messages', 'archived_messages']) {
    await sql`alter table ${sql.table(table)} add column request_hash text`.execute(db)
  }
  await unionViews(db)
}

export async function down (db: Kysely<any>): Promise<void> {
  await sql`drop view all_deliveries, all_messages`.execute(db)
  for (const table of ['messages', 'archived_messages']) {
    await sql`alter table ${sql.table(table)} drop column request_hash`.execute(db)
  }
  await unionViews(db)
}

async function unionViews (db: Kysely<any>): Promise<void> {
  for (const table of ['messages', 'deliveries']) {
    await sql`create view ${sql.table(`all_${table}`)} as
      select *, 0 as archived from ${sql.table(table)} union all select *, 1 as archived from ${sql.table(`archived_${table}`)}`.execute(db)
  }
}
