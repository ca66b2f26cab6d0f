import { CompiledQuery } from 'kysely'
import t from 'tap'
import { inboxPageAll, unreadInboxPage } from '../../db/messages.js'
import { build } from '../helper.js'

// SQLite plans without statistics; these pin the plans the hot reads depend on.
t.test('inbox reads walk the inbox index, whatever bounds them: no sort of the agent\'s whole inbox', async (t) => {
  const app = await build(t)
  const plan = async (compiled: CompiledQuery) => {
    const rows = (await app.db.executeQuery<{ detail: string }>(CompiledQuery.raw(`explain query plan ${compiled.sql}`, [...compiled.parameters]))).rows
    return rows.map((r) => r.detail).join('; ')
  }
  // Every option is bound on every read (db/messages.ts), so these are the plans of every inbox read.
  const unread = await plan(unreadInboxPage.compile(app.db, 1, 0, 2, 9, 1, 3, 50))
  t.match(unread, /USING INDEX deliveries_unread/)
  t.notMatch(unread, /TEMP B-TREE/)
  const all = await plan(inboxPageAll.compile(app.db, 1, 1, 1, 9, 3, 0, 50))
  t.match(all, /USING INDEX deliveries_inbox/)
  t.notMatch(all, /TEMP B-TREE/)
})
