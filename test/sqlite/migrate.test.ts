import { join } from 'node:path'
import t from 'tap'
import { sql } from 'kysely'
import { migrateDown, migrateToLatest } from '../../db/migrate.js'
import { migrations } from '../../db/migrations/sqlite/index.js'
import { openDatabase } from '../../db/dialects/sqlite.js'

const tables = async (db: ReturnType<typeof openDatabase>['db']) =>
  (await sql<{ name: string }>`select name from sqlite_master where type in ('table', 'view') and name not like 'sqlite_%' and name not like 'kysely_%' order by name`.execute(db)).rows.map((r) => r.name)

t.test('migrations go up, all the way down, and up again on a fresh file', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateToLatest(db, migrations)
  const all = ['agents', 'all_deliveries', 'all_messages', 'archived_deliveries', 'archived_messages', 'counters', 'deliveries', 'messages',
    'queue_entries', 'queues', 'subscriptions', 'topics']
  t.strictSame(await tables(db), all)
  for (let i = 0; i < Object.keys(migrations).length; i++) await migrateDown(db, migrations)
  t.strictSame(await tables(db), [])
  await migrateToLatest(db, migrations)
  t.strictSame(await tables(db), all)
})

t.test('0004 counts the stats counters from the data already stored, and its down leaves nothing behind', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateToLatest(db, migrations)
  // Down to 0003: 0005, then 0004.
  await migrateDown(db, migrations)
  await migrateDown(db, migrations)
  const leftovers = sql<{ name: string }>`select name from sqlite_master
    where name in ('counters', 'agents_deregistered_unread', 'agents_registered_online')`
  t.strictSame((await leftovers.execute(db)).rows, [])
  // 1 is online; 3 is deregistered; 4 registered after the broadcast 3.
  await sql`insert into agents (id, name, registered_at, online, deleted_at, broadcasts_upto) values
    (1, 'a1', '2025-01-01', 1, null, 0), (2, 'a2', '2025-01-01', 0, null, 0),
    (3, 'a3', '2025-01-01', 0, '2025-01-02', 0), (4, 'a4', '2025-01-01', 0, null, 3)`.execute(db)
  // 1: urgent, 1 to 2. 2: normal, 1 to 2 and 3. 3: a high broadcast by 2. 4: a normal broadcast by 1, with 2's
  // copy made at send (a webhook). 10: high, archived.
  await sql`insert into messages (seq, sender_id, recipients, body, priority, thread_id, created_at) values
    (1, 1, '["a2"]', 'x', 2, 1, '2025-01-01'), (2, 1, '["a2","a3"]', 'x', 0, 2, '2025-01-01'),
    (3, 2, null, 'x', 1, 3, '2025-01-01'), (4, 1, null, 'x', 0, 4, '2025-01-01')`.execute(db)
  await sql`insert into archived_messages (seq, sender_id, recipients, body, priority, thread_id, created_at) values
    (10, 1, '["a2"]', 'x', 1, 10, '2024-01-01')`.execute(db)
  await sql`insert into deliveries (message_seq, recipient_id, priority, read_at) values
    (1, 2, 2, null), (2, 2, 0, '2025-01-01'), (2, 3, 0, null), (4, 2, 0, null)`.execute(db)
  await migrateToLatest(db, migrations)
  const counters = (await sql<{ name: string, value: number }>`select name, value from counters order by name`.execute(db)).rows
  t.strictSame(Object.fromEntries(counters.map((r) => [r.name, r.value])), {
    messages_archived: 1,
    messages_high: 2,
    messages_normal: 2,
    messages_urgent: 1,
    // 2's copy of 1 and of 4; 1's copy of 3 and 4's copy of 4, not made yet. Not 3's copy of 2: 3 deregistered. Not
    // 4's copy of 3: it registered after it.
    unread: 4
  })
})

t.test('every connection runs in WAL with the configured synchronous level', async (t) => {
  const dir = t.testdir()
  for (const [sync, level] of [['full', 2], ['normal', 1]] as const) {
    const { db, sqlite } = openDatabase({ path: join(dir, `${sync}.db`), sync })
    t.equal(sqlite.pragma('journal_mode', { simple: true }), 'wal')
    t.equal(sqlite.pragma('synchronous', { simple: true }), level, `synchronous=${sync}`)
    t.equal(sqlite.pragma('foreign_keys', { simple: true }), 1)
    await db.destroy()
  }
})

t.test('the folder of the database file is created', async (t) => {
  const path = join(t.testdir(), 'a', 'b', 'bus.db')
  const { db, sizeBytes } = openDatabase({ path, sync: 'full' })
  await migrateToLatest(db, migrations)
  t.ok(sizeBytes() > 0)
  await db.destroy()
})
