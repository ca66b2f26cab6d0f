import { sql, type Kysely } from 'kysely'

// As db/migrations/sqlite/0005-topics-queues-deadlines.ts, in PostgreSQL's words. The views of 0001 keep the
// columns they were made with (PostgreSQL fixes a view's * when it is created); nothing reads the new ones through them.
export async function up (db: Kysely<any>): Promise<void> {
  for (const prefix of ['', 'archived_']) {
    await sql`alter table ${sql.table(`${prefix}messages`)} add column topic text collate "C", add column queue text collate "C"`.execute(db)
    await sql`alter table ${sql.table(`${prefix}deliveries`)} add column ack_by text collate "C", add column overdue_at text collate "C"`.execute(db)
  }
  await sql`create index deliveries_ack_due on deliveries (ack_by) where ack_by is not null and overdue_at is null and read_at is null`.execute(db)
  await sql`create index messages_topic on messages (topic, seq) where topic is not null`.execute(db)
  await sql`create table topics (
    name text collate "C" primary key,
    description text,
    created_by bigint not null,
    created_at text collate "C" not null
  )`.execute(db)
  await sql`create table subscriptions (
    topic text collate "C" not null,
    agent_id bigint not null,
    since_seq bigint not null,
    subscribed_at text collate "C" not null,
    constraint subscriptions_pk primary key (topic, agent_id)
  )`.execute(db)
  await sql`create index subscriptions_agent on subscriptions (agent_id, topic)`.execute(db)
  await sql`create table queues (
    name text collate "C" primary key,
    description text,
    lease_s integer not null,
    max_deliveries integer not null,
    created_by bigint not null,
    created_at text collate "C" not null
  )`.execute(db)
  await sql`create table queue_entries (
    message_seq bigint primary key,
    queue text collate "C" not null,
    priority integer not null,
    available_at text collate "C" not null,
    holder_id bigint,
    lease_expires_at text collate "C",
    delivery_count integer not null default 0,
    claimed_by bigint,
    acked_by bigint,
    acked_at text collate "C",
    dead_at text collate "C"
  )`.execute(db)
  await sql`create index queue_entries_ready on queue_entries (queue, priority desc, message_seq)
    where holder_id is null and acked_at is null and dead_at is null`.execute(db)
  await sql`create index queue_entries_leases on queue_entries (lease_expires_at) where holder_id is not null`.execute(db)
  await sql`create index queue_entries_open on queue_entries (queue, message_seq) where acked_at is null`.execute(db)
  await sql`create or replace function agents_deregistered_unread() returns trigger language plpgsql as $$
    begin
      update counters set value = value
        - (select count(*) from deliveries where recipient_id = new.id and read_at is null)
        - (select count(*) from messages m where m.recipients is null and m.seq > old.broadcasts_upto and m.sender_id != new.id
            and (m.topic is null or exists (select 1 from subscriptions s where s.topic = m.topic and s.agent_id = new.id and s.since_seq < m.seq))
            and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = new.id))
      where name = 'unread';
      return null;
    end $$`.execute(db)
}

export async function down (db: Kysely<any>): Promise<void> {
  await sql`create or replace function agents_deregistered_unread() returns trigger language plpgsql as $$
    begin
      update counters set value = value
        - (select count(*) from deliveries where recipient_id = new.id and read_at is null)
        - (select count(*) from messages m where m.recipients is null and m.seq > old.broadcasts_upto and m.sender_id != new.id
            and not exists (select 1 from deliveries o where o.message_seq = m.seq and o.recipient_id = new.id))
      where name = 'unread';
      return null;
    end $$`.execute(db)
  await sql`drop table queue_entries, queues, subscriptions, topics`.execute(db)
  await sql`drop index messages_topic`.execute(db)
  await sql`drop index deliveries_ack_due`.execute(db)
  for (const prefix of ['', 'archived_']) {
    await sql`alter table ${sql.table(`${prefix}messages`)} drop column topic, drop column queue`.execute(db)
    await sql`alter table ${sql.table(`${prefix}deliveries`)} drop column ack_by, drop column overdue_at`.execute(db)
  }
}
