import type { Test } from 'tap'
import { join } from 'node:path'
import { buildApp } from '../app.js'
import { loadConfig } from '../config.js'

export type Env = Record<string, string>

// An app on a real SQLite file in the test's own folder, loops off, silent, closed when the test ends. Load shedding
// is off unless a test turns it on: on a busy machine the event loop of a test process lags past its limit, and the
// bus would rightly answer 503 to requests that the test means to be served.
export async function build (t: Test, env: Env = {}) {
  const dir = t.testdir()
  const app = await buildApp(loadConfig({ BUS_DB: join(dir, 'bus.db'), BUS_MAX_EVENT_LOOP_DELAY_MS: '0', ...env }), { loops: false })
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
