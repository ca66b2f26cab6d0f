import t from 'tap'
import type { Transaction } from 'kysely'
import { bulk, createGroupCommit } from '../../db/group-commit.js'
import type { Database } from '../../db/schema.js'
import { testStorage } from '../helper.js'

const agent = (name: string) => ({
  name, description: null, capabilities: '[]', metadata: '{}', token_hash: null, registered_at: 'now', last_seen_at: null, deleted_at: null, webhook_url: null, webhook_secret: null
})

// The engine-independent part of group commit (test/sqlite/group-commit.test.ts has SQLite's own cases).
t.test('without savepoints, a batch in which one write fails runs again write by write: only that one fails', async (t) => {
  const storage = await testStorage(t)
  const write = createGroupCommit(storage.db, { savepoints: false })
  const results = await Promise.allSettled([
    write(async (trx) => trx.insertInto('agents').values(agent('first')).execute()),
    write(async (trx) => {
      await trx.insertInto('agents').values(agent('doomed')).execute()
      throw new Error('fails after writing')
    }),
    write(async (trx) => trx.insertInto('agents').values(agent('third')).execute())
  ])
  t.strictSame(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled'])
  t.match((results[1] as PromiseRejectedResult).reason, { message: 'fails after writing' })
  const names = (await storage.db.selectFrom('agents').select('name').orderBy('name').execute()).map((r) => r.name)
  t.strictSame(names, ['first', 'third'], 'the failing write left nothing behind; the others are stored once')
})

t.test('bulk writes of a batch that share a run go to it in one call, in order, beside the other writes', async (t) => {
  for (const savepoints of [true, false]) {
    const storage = await testStorage(t)
    const write = createGroupCommit(storage.db, { savepoints })
    const calls: string[][] = []
    const insertAll = async (trx: Transaction<Database>, names: string[]) => {
      calls.push(names)
      await trx.insertInto('agents').values(names.map(agent)).execute()
      return names.map((name) => `stored ${name}`)
    }
    const results = await Promise.all([
      write(bulk(insertAll, 'a')),
      write(async (trx) => { await trx.insertInto('agents').values(agent('alone')).execute(); return 'alone' }),
      write(bulk(insertAll, 'b')),
      write(bulk(insertAll, 'c'))
    ])
    t.strictSame(results, ['stored a', 'alone', 'stored b', 'stored c'], `savepoints ${savepoints}: each caller gets its own output`)
    t.strictSame(calls, [['a', 'b', 'c']], 'one call for the three')
  }
})

t.test('a bulk step that fails runs again input by input: only the input at fault fails', async (t) => {
  for (const savepoints of [true, false]) {
    const storage = await testStorage(t)
    const write = createGroupCommit(storage.db, { savepoints })
    const insertAll = async (trx: Transaction<Database>, names: string[]) => {
      await trx.insertInto('agents').values(names.map(agent)).execute()
      if (names.includes('doomed')) throw new Error('doomed is refused')
      return names
    }
    const results = await Promise.allSettled([
      write(bulk(insertAll, 'first')),
      write(bulk(insertAll, 'doomed')),
      write(bulk(insertAll, 'third'))
    ])
    t.strictSame(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled'], `savepoints ${savepoints}`)
    t.match((results[1] as PromiseRejectedResult).reason, { message: 'doomed is refused' })
    const names = (await storage.db.selectFrom('agents').select('name').orderBy('name').execute()).map((r) => r.name)
    t.strictSame(names, ['first', 'third'], 'nothing of the failed input is stored; the others once')
  }
})

t.test('a bulk run that answers the wrong number of outputs fails its callers, not the process', async (t) => {
  const storage = await testStorage(t)
  const write = createGroupCommit(storage.db)
  const short = async (_trx: Transaction<Database>, inputs: number[]) => inputs.slice(1)
  const results = await Promise.allSettled([write(bulk(short, 1)), write(bulk(short, 2))])
  t.ok(results.every((r) => r.status === 'rejected'))
})
