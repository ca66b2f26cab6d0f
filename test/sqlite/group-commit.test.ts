import { join } from 'node:path'
import SQLite from 'better-sqlite3'
import { sql, type Transaction } from 'kysely'
import t from 'tap'
import { migrations } from '../../db/migrations/sqlite/index.js'
import { createGroupCommit } from '../../db/group-commit.js'
import { migrateToLatest } from '../../db/migrate.js'
import { openDatabase } from '../../db/dialects/sqlite.js'
import type { Database } from '../../db/schema.js'

const agent = (name: string) => ({
  name, description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: 'now', last_seen_at: null, deleted_at: null
})

t.test('concurrent writes share one commit; a failing one is rolled back alone', async (t) => {
  const path = join(t.testdir(), 'bus.db')
  const { db } = openDatabase({ path, sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateToLatest(db, migrations)
  const write = createGroupCommit(db)
  const other = new SQLite(path, { readonly: true })
  t.teardown(() => other.close())
  const visibleAtFirstAnswer: number[] = []

  const writes = Array.from({ length: 50 }, (_, i) => write(async (trx) => {
    if (i === 17) {
      await trx.insertInto('agents').values(agent('doomed')).execute()
      throw new Error('write 17 fails after writing')
    }
    return (await trx.insertInto('agents').values(agent(`a${i}`)).returning('id').executeTakeFirstOrThrow()).id
  }).then((id) => {
    // Seen from another connection: everything committed by the time the first caller hears back.
    if (visibleAtFirstAnswer.length === 0) visibleAtFirstAnswer.push((other.prepare('select count(*) n from agents').get() as { n: number }).n)
    return id
  }))
  const results = await Promise.allSettled(writes)
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 49)
  t.match(results[17], { status: 'rejected', reason: { message: 'write 17 fails after writing' } })
  t.strictSame(visibleAtFirstAnswer, [49], 'all 49 were committed together before any caller was answered')
  const names = (await db.selectFrom('agents').select('name').execute()).map((r) => r.name)
  t.notOk(names.includes('doomed'), 'the failing write left nothing behind')
})

t.test('a failed commit rejects every write in the batch', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full' })
  await migrateToLatest(db, migrations)
  const write = createGroupCommit(db)
  await db.destroy()
  const results = await Promise.allSettled([1, 2, 3].map(() => write(async (trx) => trx.selectFrom('agents').selectAll().execute())))
  t.ok(results.every((r) => r.status === 'rejected'))
})

t.test('when SQLite rolls a transaction back by itself, every caller hears the first error, and writing goes on', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateToLatest(db, migrations)
  const write = createGroupCommit(db)
  // What SQLite does on SQLITE_FULL or an I/O error at the wrong moment: the whole transaction is gone, so the
  // ROLLBACK (or ROLLBACK TO) sent afterwards fails with "no transaction is active" or "no such savepoint".
  const diskFull = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' })
  const failLikeSqlite = async (trx: Transaction<Database>) => {
    await sql`rollback`.execute(trx)
    throw diskFull
  }

  const alone = await Promise.allSettled([write(failLikeSqlite)])
  t.strictSame(alone, [{ status: 'rejected', reason: diskFull }], 'a batch of one')

  const together = await Promise.allSettled([
    write(async (trx) => trx.insertInto('agents').values(agent('kept-by-nobody')).execute()),
    write(failLikeSqlite),
    write(async (trx) => trx.insertInto('agents').values(agent('nor-this')).execute())
  ])
  t.strictSame(together.map((r) => r.status === 'rejected' ? r.reason : 'resolved'), [diskFull, diskFull, diskFull],
    'a shared batch: its earlier writes were rolled back with it, so they fail with the same error')
  t.strictSame(await db.selectFrom('agents').select('name').execute(), [], 'nothing of either batch was kept')

  await write(async (trx) => trx.insertInto('agents').values(agent('after')).execute())
  t.strictSame(await db.selectFrom('agents').select('name').execute(), [{ name: 'after' }], 'the next batch commits')
})
