import { join } from 'node:path'
import t from 'tap'
import { sql } from 'kysely'
import { migrateDown, migrateToLatest } from '../../db/migrate.js'
import { migrations } from '../../db/migrations/index.js'
import { openDatabase } from '../../db/open.js'

const tables = async (db: ReturnType<typeof openDatabase>['db']) =>
  (await sql<{ name: string }>`select name from sqlite_master where type in ('table', 'view') and name not like 'sqlite_%' and name not like 'kysely_%' order by name`.execute(db)).rows.map((r) => r.name)

t.test('migrations go up, all the way down, and up again on a fresh file', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateToLatest(db)
  const all = ['agents', 'all_deliveries', 'all_messages', 'archived_deliveries', 'archived_messages', 'deliveries', 'messages']
  t.strictSame(await tables(db), all)
  for (let i = 0; i < Object.keys(migrations).length; i++) await migrateDown(db)
  t.strictSame(await tables(db), [])
  await migrateToLatest(db)
  t.strictSame(await tables(db), all)
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
  await migrateToLatest(db)
  t.ok(sizeBytes() > 0)
  await db.destroy()
})
