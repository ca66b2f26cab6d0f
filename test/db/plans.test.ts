import { CompiledQuery } from 'kysely'
import t from 'tap'
import { inboxQuery } from '../../db/messages.js'
import { build } from '../helper.js'

// SQLite plans without statistics; these pin the plans the hot reads depend on.
t.test('inbox reads walk the inbox index, whatever bounds them: no sort of the agent\'s whole inbox', async (t) => {
  const app = await build(t)
  const plan = async (q: Parameters<typeof inboxQuery>[2]) => {
    const compiled = inboxQuery(app.db, 1, q).compile()
    const rows = (await app.db.executeQuery<{ detail: string }>(CompiledQuery.raw(`explain query plan ${compiled.sql}`, [...compiled.parameters]))).rows
    return rows.map((r) => r.detail).join('; ')
  }
  for (const q of [{ limit: 50 }, { limit: 50, upToSeq: 9 }, { limit: 50, upToSeq: 9, after: { rank: 1, seq: 3 } }]) {
    const unread = await plan({ ...q, unread: true })
    t.match(unread, /USING INDEX deliveries_unread/, `unread ${JSON.stringify(q)}`)
    t.notMatch(unread, /TEMP B-TREE/)
    const all = await plan(q)
    t.match(all, /USING INDEX deliveries_inbox/, JSON.stringify(q))
    t.notMatch(all, /TEMP B-TREE/)
  }
})
