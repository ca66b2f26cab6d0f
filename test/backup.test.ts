import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import SQLite from 'better-sqlite3'
import t from 'tap'
import { startServer } from './process.js'

const run = promisify(execFile)
const json = { 'content-type': 'application/json' }

t.test('npm run backup takes a consistent copy while the bus serves, and the copy has every message', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'bus.db')
  const server = startServer({ BUS_DB: db })
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.url
  const token = (await (await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'alice' }) })).json()).token
  const sendSome = (from: number, to: number) => Promise.all(Array.from({ length: to - from }, (_, i) => fetch(`${base}/send`, {
    method: 'POST', headers: { ...json, authorization: `Bearer ${token}` }, body: JSON.stringify({ to: 'alice', body: `m${from + i}` })
  })))
  await sendSome(0, 300)
  const copy = join(dir, 'copy.db')
  // Sends go on while the backup runs.
  const [backup] = await Promise.all([run(process.execPath, ['dist/scripts/backup.js', copy], { env: { ...process.env, BUS_DB: db } }), sendSome(300, 400)])
  t.match(backup.stdout, /backed up .*bus\.db to .*copy\.db/)

  const restored = new SQLite(copy, { readonly: true })
  t.equal(restored.pragma('integrity_check', { simple: true }), 'ok')
  const bodies = new Set((restored.prepare('select body from messages').all() as Array<{ body: string }>).map((r) => r.body))
  restored.close()
  t.ok(Array.from({ length: 300 }, (_, i) => `m${i}`).every((b) => bodies.has(b)), 'every message sent before the backup is in it')

  // The copy is a working bus database.
  server.child.kill('SIGTERM')
  const second = startServer({ BUS_DB: copy })
  t.teardown(() => second.child.kill('SIGKILL'))
  const inbox = await (await fetch(`${await second.url}/inbox?limit=500`, { headers: { authorization: `Bearer ${token}` } })).json()
  t.ok(inbox.messages.length >= 300, `${inbox.messages.length} messages served from the restored copy`)
})

t.test('backup without a target explains its use', async (t) => {
  const failed = await run(process.execPath, ['dist/scripts/backup.js']).catch((err: { code: number, stderr: string }) => err)
  t.match(failed, { code: 2, stderr: /usage: npm run backup -- <file>/ })
})
