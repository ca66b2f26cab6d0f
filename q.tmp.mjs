import SQLite from 'better-sqlite3'
import { existsSync } from 'node:fs'
import { openDatabase } from './dist/db/open.js'
import { migrateToLatest } from './dist/db/migrate.js'
import { archiveBatch } from './dist/db/messages.js'
const path = '/tmp/perf/m1.db'
if (!existsSync(path)) {
  const { db } = openDatabase({ path, sync: 'normal' }); await migrateToLatest(db); await db.destroy()
  const s = new SQLite(path)
  const ag = s.prepare("insert into agents (name, registered_at, token_hash) values (?, 'x', ?)")
  for (let i = 0; i < 100; i++) ag.run('agent-' + i, 'h' + i)
  const insertMessage = s.prepare(`insert into messages (sender_id, recipients, subject, body, data, priority, reply_to, thread_id, created_at) values (?, ?, null, ?, null, ?, null, 0, ?) returning seq`)
  const setThread = s.prepare('update messages set thread_id = seq where seq = ?')
  const insertDelivery = s.prepare('insert into deliveries (message_seq, recipient_id, priority) values (?, ?, ?)')
  const now = new Date().toISOString()
  s.transaction(() => { for (let i = 0; i < 1000000; i++) { const from = 1 + i % 100; const to = 1 + (i * 7 + 1) % 100; const { seq } = insertMessage.get(from, '["x"]', 'benchmark message body '.repeat(4), i % 10 === 0 ? 2 : 0, now); setThread.run(seq); insertDelivery.run(seq, to === from ? 1 + (from % 100) : to, 0) } })()
  s.close()
}
const { db } = openDatabase({ path, sync: 'normal' })
const t0 = performance.now()
const n = await archiveBatch(db, new Date(Date.now() - 7 * 86400000).toISOString(), 500)
console.log('archiveBatch', n, (performance.now() - t0).toFixed(0), 'ms')
const q = db.selectFrom('messages as m').select('m.seq') // placeholder
await db.destroy()
