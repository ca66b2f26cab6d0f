import { execFileSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import t from 'tap'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../config.js'
import { register, send, type TestApp } from '../helper.js'

// Issue 14: a full disk must answer the documented 503 + Retry-After (not a 500 whose rollback error hid the
// SQLITE_FULL), keep nothing partial, show on /health, and heal once there is room again.

const count = async (app: TestApp, table: 'messages' | 'deliveries') =>
  Number((await app.db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)

// Load shedding off: a busy test machine must not turn a request into under-pressure's 503.
const config = (path: string) => loadConfig({ BUS_DB: path, BUS_MAX_EVENT_LOOP_DELAY_MS: '0' })

// A real small filesystem: mount needs root (CAP_SYS_ADMIN); without it the test says so and skips.
function mountTmpfs (dir: string, size: string): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    return `mount -t tmpfs is not permitted here (${String((err as { stderr?: Buffer }).stderr ?? err).trim()})`
  }
}

// Fills the filesystem until the kernel says ENOSPC, the way a runaway log would.
function fill (path: string): void {
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(4096, 1)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
}

// Not in t.testdir(): tap removes that before later teardowns run, and a mount point cannot be removed.
const small = mkdtempSync(join(tmpdir(), 'bus-full-'))
const cannotMount = mountTmpfs(small, '2m')
if (cannotMount !== undefined) rmSync(small, { recursive: true })

t.test('a real full disk answers 503 with Retry-After, shows on /health, keeps nothing partial, and heals', { skip: cannotMount ?? false }, async (t) => {
  const dir = small
  const app = await buildApp(config(join(dir, 'bus.db')), { loops: false })
  t.teardown(async () => {
    await app.close()
    execFileSync('umount', [dir])
    rmSync(dir, { recursive: true })
  })
  await app.ready()
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  await register(app, 'carol')
  t.equal((await send(app, alice, { to: 'bob', body: 'before' })).statusCode, 201)
  const messages = await count(app, 'messages')
  const deliveries = await count(app, 'deliveries')

  fill(join(dir, 'filler'))
  const big = 'x'.repeat(60_000)
  // A single send is a batch of one (the plain transaction path); three at once share a batch (the savepoint path).
  const alone = await send(app, alice, { to: ['bob', 'carol'], body: big })
  const together = await Promise.all([1, 2, 3].map((i) => send(app, alice, { to: ['bob', 'carol'], body: big + i })))
  for (const res of [alone, ...together]) {
    t.equal(res.statusCode, 503, res.body)
    t.match(res.json(), { statusCode: 503, code: 'BUS_STORAGE_UNAVAILABLE', message: /disk full/ })
    t.equal(res.headers['retry-after'], '5')
  }
  // Registration runs in a transaction of its own (Kysely's transaction().execute), not in the group commit.
  const registration = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'dave', description: big.slice(0, 1000) } })
  t.equal(registration.statusCode, 503, registration.body)
  t.equal(registration.headers['retry-after'], '5')
  t.equal(await count(app, 'messages'), messages, 'no message row was kept')
  t.equal(await count(app, 'deliveries'), deliveries, 'no delivery row was kept')
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 503, 'health reports a store that cannot write')
  t.match(health.json(), { statusCode: 503, message: /disk full/ })

  rmSync(join(dir, 'filler'))
  t.equal((await send(app, alice, { to: ['bob', 'carol'], body: big })).statusCode, 201, 'writes work again once there is room')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'and health says so')
  t.equal(await count(app, 'messages'), messages + 1)
  t.equal((await app.db.selectFrom('messages').select('body').orderBy('seq', 'desc').executeTakeFirstOrThrow()).body, big)
  const { rows } = await sql<{ integrity_check: string }>`pragma integrity_check`.execute(app.db)
  t.strictSame(rows, [{ integrity_check: 'ok' }])
})

t.test('a file at its page limit (SQLITE_FULL without a full disk) shows on /health until a write succeeds', async (t) => {
  const app = await buildApp(config(join(t.testdir(), 'bus.db')), { loops: false })
  t.teardown(() => app.close())
  await app.ready()
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  const { rows } = await sql<{ page_count: number }>`pragma page_count`.execute(app.db)
  await sql.raw(`pragma max_page_count = ${rows[0].page_count}`).execute(app.db)
  const big = 'x'.repeat(60_000)
  const full = await send(app, alice, { to: 'bob', body: big })
  t.equal(full.statusCode, 503)
  t.equal(full.headers['retry-after'], '5')
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 503)
  t.match(health.json(), { message: /cannot write.*disk full/ })
  t.equal((await send(app, alice, { to: 'bob', body: 'small enough' })).statusCode, 201, 'a write that fits still fits')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'a write that succeeded clears the remembered failure')

  await sql.raw('pragma max_page_count = 1073741823').execute(app.db)
  t.equal((await send(app, alice, { to: 'bob', body: big })).statusCode, 201)
})
