import { sql, type Kysely } from 'kysely'

// As db/migrations/sqlite/0002-broadcast-on-read.ts: broadcasts are fanned out on read from here on.
export async function up (db: Kysely<any>): Promise<void> {
  await sql`alter table agents add column broadcasts_upto bigint not null default 0`.execute(db)
  await sql`update agents set broadcasts_upto = (select coalesce(max(seq), 0) from messages)`.execute(db)
  await sql`create index messages_broadcast on messages (seq) where recipients is null`.execute(db)
  await sql`create index agents_broadcasts_upto on agents (broadcasts_upto) where deleted_at is null`.execute(db)
}

export async function down (db: Kysely<any>): Promise<void> {
  await sql`insert into deliveries (message_seq, recipient_id, priority)
    select m.seq, a.id, m.priority from agents a join messages m on m.recipients is null and m.seq > a.broadcasts_upto and m.sender_id != a.id
    where a.deleted_at is null on conflict do nothing`.execute(db)
  await sql`drop index agents_broadcasts_upto, messages_broadcast`.execute(db)
  await sql`alter table agents drop column broadcasts_upto`.execute(db)
}
