import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import SQLite from 'better-sqlite3'
import t from 'tap'
import { startServer } from '../process.js'

const run = promisify(execFile)
const json = { 'content-type': 'application/json' }

t.test('npm run backup takes a consistent copy while the bus serves, and the copy has every message', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'bus.db')
  // 300 sends at once from one address: more connections than the per-address cap allows.
  const server = startServer({ BUS_DB: db, BUS_MAX_CONNECTIONS_PER_ADDRESS: '0' })
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.url
  const token = (await (await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'alice' }) })).json()).token
  const sendSome = (from: number, to: number) => Promise.all(Array.from({ length: to - from }, (_, i) => fetch(`${base}/send`, {
    method: 'POST', headers: { ...json, authorization: `Bearer ${token}` }, body: JSON.stringify({ to: 'alice', body: `m${from + i}` })
  })))
  t.ok((await sendSome(0, 300)).every((res) => res.status === 201), 'the first 300 sends were stored')
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

interface Failed { code: number, stdout: string, stderr: string }
const backup = (args: string[], env: Record<string, string> = {}) =>
  run(process.execPath, ['dist/scripts/backup.js', ...args], { env: { ...process.env, ...env } }).catch((err: Failed) => err)

t.test('backup without a target, or with an unknown option, explains its use', async (t) => {
  for (const args of [[], ['--forse', 'copy.db'], ['a.db', 'b.db']]) {
    t.match(await backup(args), { code: 2, stderr: /^usage: npm run backup -- \[--force\] <file>/ }, args.join(' '))
  }
})

// The backup needs only a SQLite file at BUS_DB, not a running bus.
function smallBus (dir: string): string {
  const path = join(dir, 'bus.db')
  const db = new SQLite(path)
  db.exec("create table messages (body text); insert into messages values ('kept')")
  db.close()
  return path
}

t.test('a backup into a folder that does not exist fails with one line, not a stack trace, and creates nothing', async (t) => {
  const dir = t.testdir()
  const failed = await backup([join(dir, 'missing', 'copy.db')], { BUS_DB: smallBus(dir) })
  t.match(failed, { code: 1, stderr: /^agent-bus backup: folder \S*missing does not exist: create it first\n$/ })
  t.notOk(existsSync(join(dir, 'missing')))
})

t.test('a backup refuses to overwrite an existing file, and overwrites it with --force before or after the file', async (t) => {
  const dir = t.testdir({ 'copy.db': 'an earlier backup' })
  const env = { BUS_DB: smallBus(dir) }
  const target = join(dir, 'copy.db')
  t.match(await backup([target], env), { code: 1, stderr: /^agent-bus backup: \S*copy\.db already exists: add --force to overwrite it\n$/ })
  t.equal(readFileSync(target, 'utf8'), 'an earlier backup', 'the existing file is untouched')

  for (const args of [['--force', target], [target, '--force']]) {
    t.match(await backup(args, env), { stdout: /^backed up \S*bus\.db to \S*copy\.db/ }, args.join(' '))
    const copy = new SQLite(target, { readonly: true })
    t.strictSame(copy.prepare('select body from messages').all(), [{ body: 'kept' }], 'the file is now the copy')
    copy.close()
  }
  t.strictSame(readdirSync(dir).sort(), ['bus.db', 'copy.db'], 'no partial copy is left beside it')
})
