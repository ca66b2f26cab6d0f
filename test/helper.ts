import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../app.js'
import { loadConfig } from '../config.js'
import { openStorage } from '../db/dialects/index.js'
import type { Storage } from '../db/storage.js'
import { createDatabase, dropDatabase } from '../scripts/pg-cluster.mjs'

export type Env = Record<string, string>

// The engine the suite runs on: `npm test` runs it on SQLite, then on a throwaway PostgreSQL (scripts/test.mjs sets
// BUS_TEST_POSTGRES_URL to that server). Tests about one engine live in test/sqlite/ and test/postgres/.
export const postgresUrl = process.env.BUS_TEST_POSTGRES_URL === '' ? undefined : process.env.BUS_TEST_POSTGRES_URL
export const engine = postgresUrl === undefined ? 'sqlite' : 'postgresql'

// A fresh, empty database for one test, as a BUS_DB value: a SQLite file in the test's own folder, or a new
// database on the test server, dropped when the test ends.
export async function testDb (t: Test): Promise<string> {
  if (postgresUrl === undefined) return join(t.testdir(), 'bus.db')
  const name = `t_${randomBytes(6).toString('hex')}`
  const url = await createDatabase(postgresUrl, name)
  t.teardown(() => dropDatabase(postgresUrl, name))
  return url
}

// The storage of a fresh database (opened and migrated), closed when the test ends.
export async function testStorage (t: Test, sync: 'full' | 'normal' = 'normal'): Promise<Storage> {
  const storage = await openStorage({ url: await testDb(t), sync })
  t.teardown(() => storage.close())
  return storage
}

// An app on a fresh database (testDb), loops off, silent, closed when the test ends. Load shedding is off unless a
// test turns it on: on a busy machine the event loop of a test process lags past its limit, and the bus would
// rightly answer 503 to requests that the test means to be served.
export async function build (t: Test, env: Env = {}) {
  const app = await buildApp(loadConfig({ BUS_DB: env.BUS_DB ?? await testDb(t), BUS_MAX_EVENT_LOOP_DELAY_MS: '0', ...env }), { loops: false })
  t.teardown(() => app.close())
  await app.ready()
  return app
}

export type TestApp = Awaited<ReturnType<typeof build>>

export interface Registered { name: string, token: string, auth: { authorization: string } }

export async function register (app: TestApp, name: string, body: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<Registered> {
  const res = await app.inject({ method: 'POST', url: '/agents', payload: { name, ...body }, headers })
  if (res.statusCode !== 201) throw new Error(`register ${name}: ${res.statusCode} ${res.body}`)
  const { token } = res.json()
  return { name, token, auth: { authorization: `Bearer ${token}` } }
}

export async function send (app: TestApp, from: Registered, payload: Record<string, unknown>, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/send', headers: { ...from.auth, ...headers }, payload })
}

// Waits until `check` holds, looking every 25 ms: for a condition that the server (or a process under test) brings
// about by itself. The deadline only keeps a broken build from hanging; it is not a speed assertion, so it is
// generous (a loaded 2-core CI machine can lag by many seconds). Not for a negative check ("nothing more arrives
// within X ms"), whose bound is the point of its test. `what` completes "timed out waiting until ...".
export async function until (what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(25)
  }
}
