import t from 'tap'
import { createGroupCommit } from '../../db/group-commit.js'
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
