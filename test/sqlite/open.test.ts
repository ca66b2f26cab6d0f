import { join } from 'node:path'
import { sql } from 'kysely'
import t from 'tap'
import { migrations } from '../../db/migrations/sqlite/index.js'
import { migrateToLatest } from '../../db/migrate.js'
import { describeStorageError, openDatabase } from '../../db/dialects/sqlite.js'

const agent = (name: string) => ({
  name, description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: 'now', last_seen_at: null, deleted_at: null
})

t.test('a transaction SQLite already rolled back fails with its own error, not with the ROLLBACK after it', async (t) => {
  const { db } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full' })
  t.teardown(() => db.destroy())
  await migrateToLatest(db, migrations)
  const diskFull = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' })
  // As SQLite does on SQLITE_FULL at the wrong moment: the transaction is gone before Kysely sends ROLLBACK.
  await t.rejects(db.transaction().execute(async (trx) => {
    await trx.insertInto('agents').values(agent('gone')).execute()
    await sql`rollback`.execute(trx)
    throw diskFull
  }), diskFull)
  t.strictSame(await db.selectFrom('agents').select('name').execute(), [])
  await db.transaction().execute((trx) => trx.insertInto('agents').values(agent('next')).execute())
  t.strictSame(await db.selectFrom('agents').select('name').execute(), [{ name: 'next' }], 'the next transaction runs')
})

t.test('while checkFile names a problem, writes are refused with it and reads go on', async (t) => {
  let problem: string | undefined
  const { db, writeProblem } = openDatabase({ path: join(t.testdir(), 'bus.db'), sync: 'full', checkFile: () => problem })
  t.teardown(() => db.destroy())
  await migrateToLatest(db, migrations)
  problem = 'the database file was deleted while the bus ran'
  const refused = { name: 'StorageFault', message: problem }
  await t.rejects(db.insertInto('agents').values(agent('outside')).execute(), refused, 'outside a transaction')
  const err = await db.transaction().execute((trx) => trx.insertInto('agents').values(agent('inside')).execute()).catch((e: unknown) => e)
  t.match(err, refused, 'inside one')
  t.equal(describeStorageError(err), problem, 'the error handler names it (503)')
  t.equal(writeProblem(), problem)
  t.strictSame(await db.selectFrom('agents').select('name').execute(), [], 'reads work, nothing was written')

  problem = undefined
  await db.insertInto('agents').values(agent('back')).execute()
  t.equal(writeProblem(), undefined)
})
