import { sql, type Kysely } from 'kysely'

// The schema of db/migrations/sqlite/0001-init.ts in PostgreSQL's words. Ids and positions are 64-bit. Names and
// times sort byte by byte (collate "C"), as SQLite sorts them: times are ISO-8601 strings, compared as text.
export async function up (db: Kysely<any>): Promise<void> {
  await sql`create table agents (
    id bigint generated always as identity primary key,
    name text collate "C" not null,
    description text,
    capabilities text not null default '[]',
    metadata text not null default '{}',
    token_hash text,
    registered_at text collate "C" not null,
    last_seen_at text collate "C",
    online integer not null default 0,
    deleted_at text collate "C",
    webhook_url text,
    webhook_secret text
  )`.execute(db)
  // A name is taken while its agent is registered; deregistered rows keep their name for history.
  await sql`create unique index agents_name_live on agents (name) where deleted_at is null`.execute(db)
  await sql`create unique index agents_token_hash on agents (token_hash)`.execute(db)

  for (const prefix of ['', 'archived_']) {
    // The archive keeps the seq it is given; the live table takes the next one.
    const seq = prefix === '' ? sql`bigint generated always as identity primary key` : sql`bigint primary key`
    await sql`create table ${sql.table(`${prefix}messages`)} (
      seq ${seq},
      sender_id bigint not null,
      recipients text,
      subject text,
      body text not null,
      data text,
      priority integer not null,
      reply_to bigint,
      thread_id bigint not null,
      created_at text collate "C" not null,
      idempotency_key text
    )`.execute(db)
    await sql`create index ${sql.id(`${prefix}messages_sender`)} on ${sql.table(`${prefix}messages`)} (sender_id, seq)`.execute(db)
    await sql`create index ${sql.id(`${prefix}messages_thread`)} on ${sql.table(`${prefix}messages`)} (thread_id, seq)`.execute(db)
    await sql`create table ${sql.table(`${prefix}deliveries`)} (
      message_seq bigint not null,
      recipient_id bigint not null,
      priority integer not null,
      read_at text collate "C",
      delivered_at text collate "C",
      webhook_attempts integer not null default 0,
      webhook_next_at text collate "C",
      constraint ${sql.id(`${prefix}deliveries_pk`)} primary key (recipient_id, message_seq)
    )`.execute(db)
    await sql`create index ${sql.id(`${prefix}deliveries_message`)} on ${sql.table(`${prefix}deliveries`)} (message_seq, read_at)`.execute(db)
  }
  await sql`create index deliveries_inbox on deliveries (recipient_id, priority desc, message_seq)`.execute(db)
  await sql`create index deliveries_unread on deliveries (recipient_id, priority desc, message_seq) where read_at is null`.execute(db)
  await sql`create index deliveries_webhook_due on deliveries (webhook_next_at) where webhook_next_at is not null`.execute(db)
  await sql`create unique index messages_idempotency on messages (sender_id, idempotency_key) where idempotency_key is not null`.execute(db)
  for (const table of ['messages', 'deliveries']) {
    await sql`create view ${sql.table(`all_${table}`)} as
      select *, 0 as archived from ${sql.table(table)} union all select *, 1 as archived from ${sql.table(`archived_${table}`)}`.execute(db)
  }
}

export async function down (db: Kysely<any>): Promise<void> {
  await sql`drop view all_deliveries, all_messages`.execute(db)
  await sql`drop table archived_deliveries, archived_messages, deliveries, messages, agents`.execute(db)
}
