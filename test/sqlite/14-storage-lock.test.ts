import { execFile, execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, linkSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import SQLite from 'better-sqlite3'
import t from 'tap'
import { startServer } from '../process.js'

// Issue 14: the one-bus-per-file guard was named after the path, so a hardlink ran a second bus with a WAL of its
// own, and a later open replayed that stale WAL over the shared file, erasing acknowledged messages. The guard is
// now a lock on the file itself. These run the built server (npm run build first).

const run = promisify(execFile)
// Load shedding off: a busy test machine must not turn a request into under-pressure's 503.
const calm = { BUS_MAX_EVENT_LOOP_DELAY_MS: '0' }
const json = { 'content-type': 'application/json' }

// How a second server ends: its exit code and stderr, or 'listening' (then it is stopped) if it was let in.
async function refusal (env: Record<string, string>) {
  const server = startServer(env)
  // 'close', not 'exit': it comes once the process's stderr has been read to the end.
  const exited = once(server.child, 'close').then(([code]) => code as number)
  const code = await Promise.race([exited, server.url.then(() => 'listening' as const, () => exited)])
  if (code === 'listening') {
    server.child.kill('SIGKILL')
    await exited
  }
  return { code, stderr: server.errors() }
}

t.test('a second server on a hardlink to the same file is refused in one line, and backup still works', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'bus.db')
  const first = startServer({ ...calm, BUS_DB: db })
  t.teardown(() => first.child.kill('SIGKILL'))
  const base = await first.url
  const { token } = await (await fetch(`${base}/agents`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'alice' }) })).json()
  const sent = await fetch(`${base}/send`, { method: 'POST', headers: { ...json, authorization: `Bearer ${token}` }, body: JSON.stringify({ to: 'alice', body: 'acknowledged' }) })
  t.equal(sent.status, 201)

  mkdirSync(join(dir, 'other'))
  const link = join(dir, 'other', 'link.db')
  linkSync(db, link)
  const second = await refusal({ BUS_DB: link })
  t.equal(second.code, 1)
  t.match(second.stderr, /^agent-bus: .*link\.db is already served by another agent-bus process.*\n$/)
  t.equal(second.stderr.split('\n').length, 2, `one line: ${second.stderr}`)
  t.notOk(existsSync(`${link}-wal`), 'the refused server never opened the file, so it left no WAL of its own')

  const copy = join(dir, 'copy.db')
  const backup = await run(process.execPath, ['dist/scripts/backup.js', copy], { env: { ...process.env, BUS_DB: db } })
  t.match(backup.stdout, /backed up .*bus\.db to .*copy\.db/, 'backup reads the file while the bus holds its lock')
  const restored = new SQLite(copy, { readonly: true })
  t.teardown(() => restored.close())
  t.strictSame(restored.prepare('select body from messages').all(), [{ body: 'acknowledged' }])

  // The lock goes with the process, however it dies, and the next server starts. (Through the path the WAL sits
  // beside: SQLite names the WAL after the path it was given, which is why two names must never both be served.)
  first.child.kill('SIGKILL')
  await once(first.child, 'exit')
  const third = startServer({ ...calm, BUS_DB: db })
  t.teardown(() => third.child.kill('SIGKILL'))
  const inbox = await (await fetch(`${await third.url}/inbox`, { headers: { authorization: `Bearer ${token}` } })).json()
  t.match(inbox.messages, [{ body: 'acknowledged' }], 'the acknowledged message is there')
})

// The container case: a bind mount shows the same file under another real path. Not in t.testdir(): tap removes
// that before later teardowns run, and a mount point cannot be removed.
const outside = mkdtempSync(join(tmpdir(), 'bus-bind-'))
mkdirSync(join(outside, 'data'))
mkdirSync(join(outside, 'mnt'))
let cannotBind: string | undefined
try {
  execFileSync('mount', ['--bind', join(outside, 'data'), join(outside, 'mnt')], { stdio: 'pipe' })
} catch (err) {
  cannotBind = `mount --bind is not permitted here (${String((err as { stderr?: Buffer }).stderr ?? err).trim()})`
  rmSync(outside, { recursive: true })
}

t.test('a second server on a bind mount of the folder is refused too', { skip: cannotBind ?? false }, async (t) => {
  const first = startServer({ ...calm, BUS_DB: join(outside, 'data', 'bus.db') })
  t.teardown(async () => {
    if (first.child.exitCode === null && first.child.signalCode === null) {
      first.child.kill('SIGKILL')
      await once(first.child, 'exit')
    }
    execFileSync('umount', [join(outside, 'mnt')])
    rmSync(outside, { recursive: true })
  })
  await first.url
  const second = await refusal({ BUS_DB: join(outside, 'mnt', 'bus.db') })
  t.equal(second.code, 1)
  t.match(second.stderr, /already served by another agent-bus process/)
})
