import { sql, type Kysely } from 'kysely'

// As db/migrations/sqlite/0004-add-stats-counters.ts: the message figures of /stats as counters (db/stats.ts),
// counted from the data once here, and a trigger that takes a deregistered agent's unread copies off the count.
export async function up (db: Kysely<any>): Promise<void> {
  await sql`create table counters (name text collate "C" primary key, value bigint not null)`.execute(db)
  const stored = (rank: number) => sql`(select count(*) from messages where priority = ${sql.lit(rank)})
    + (select count(*) from archived_messages where priority = ${sql.lit(rank)})`
  const unread = sql`(select count(*) from deliveries d join agents a on a.id = d.recipient_id
      where d.read_at is null and a.deleted_at is null)
    + (select count(*) from agents a join messages m on m.recipients is null and m.seq > a.broadcasts_upto and m.sender_id != a.id
      where a.deleted_at is null
        and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = a.id))`
  await sql`insert into counters (name, value) values
    ('messages_normal', ${stored(0)}), ('messages_high', ${stored(1)}), ('messages_urgent', ${stored(2)}),
    ('messages_archived', (select count(*) from archived_messages)), ('unread', ${unread})`.execute(db)
  await sql`create function agents_deregistered_unread() returns trigger language plpgsql as $$
    begin
      update counters set value = value
        - (select count(*) from deliveries where recipient_id = new.id and read_at is null)
        - (select count(*) from messages m where m.recipients is null and m.seq > old.broadcasts_upto and m.sender_id != new.id
            and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = new.id))
      where name = 'unread';
      return null;
    end $$`.execute(db)
  await sql`create trigger agents_deregistered_unread after update of deleted_at on agents
    for each row when (old.deleted_at is null and new.deleted_at is not null)
    execute function agents_deregistered_unread()`.execute(db)
  await sql`create index agents_registered_online on agents (online, deleted_at) where deleted_at is null`.execute(db)
}

export async function down (db: Kysely<any>): Promise<void> {
  await sql`drop index agents_registered_online`.execute(db)
  await sql`drop trigger agents_deregistered_unread on agents`.execute(db)
  await sql`drop function agents_deregistered_unread()`.execute(db)
  await sql`drop table counters`.execute(db)
}
