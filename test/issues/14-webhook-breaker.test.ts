import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import t from 'tap'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../config.js'
import { Breakers } from '../../webhooks/breaker.js'
import { register, send, testDb, until } from '../helper.js'
import { receiver } from '../webhook-receiver.js'

// An app whose log lines the test reads.
async function logged (t: Test, env: Record<string, string>) {
  const lines: Array<{ msg: string, level: number }> = []
  const stream = new Writable({ write (chunk, _, done) { lines.push(JSON.parse(String(chunk))); done() } })
  const config = loadConfig({ BUS_DB: await testDb(t), BUS_WEBHOOK_ALLOW_PRIVATE: 'true', BUS_SYNC: 'normal', BUS_MAX_EVENT_LOOP_DELAY_MS: '0', ...env })
  const app = await buildApp(config, { loops: false, logger: { level: 'info', stream }, webhookPollMs: 20 })
  t.teardown(() => app.close())
  await app.ready()
  return { app, said: (pattern: RegExp) => lines.filter((l) => pattern.test(l.msg)).length }
}

t.test('a circuit opens after N failures in a row, probes once per cool-down, doubles it while probes fail, and closes on success', async (t) => {
  const b = new Breakers({ failures: 3, cooldownMs: 1000, maxCooldownMs: 3000 })
  const url = 'http://x/h'
  t.equal(b.failure(1, url, 0), undefined)
  t.equal(b.failure(1, url, 0), undefined)
  t.equal(b.state(1, url, 0), 'closed')
  t.equal(b.failure(1, url, 10), 'opened')
  t.equal(b.state(1, url, 500), 'open')
  t.same(b.open(500), [{ recipientId: 1, url }])
  t.equal(b.failure(1, url, 600), undefined, 'an attempt that started before it opened extends nothing')
  t.equal(b.openUntil(1), 1010)
  t.equal(b.state(1, url, 1010), 'probe')
  t.equal(b.failure(1, url, 1010), 'reopened')
  t.equal(b.openUntil(1), 3010, 'twice as long')
  t.equal(b.failure(1, url, 3010), 'reopened')
  t.equal(b.openUntil(1), 6010, 'at most maxCooldownMs')
  t.equal(b.state(2, url, 3010), 'closed', 'per recipient')
  t.equal(b.state(1, 'http://y/h', 3010), 'closed', 'a new URL starts afresh')
  t.equal(b.failure(1, url, 0), undefined)
  t.equal(b.success(1, url), undefined, 'a success while closed is no transition')
  t.equal(b.failure(1, url, 0), undefined, 'and resets the count')
  t.equal(b.failure(1, url, 0), undefined)
  t.equal(b.failure(1, url, 0), 'opened')
  t.equal(b.success(1, url), 'closed')
  t.equal(b.state(1, url, 0), 'closed')
})

t.test('an endpoint that keeps failing gets no attempt while its circuit is open, and the opening is logged once', async (t) => {
  const hook = await receiver(() => 500)
  t.teardown(hook.close)
  const { app, said } = await logged(t, { BUS_WEBHOOK_RETRY_BASE_MS: '5', BUS_WEBHOOK_BREAKER_FAILURES: '3', BUS_WEBHOOK_BREAKER_COOLDOWN_MS: '600000', BUS_WEBHOOK_PER_RECIPIENT: '1' })
  await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } })
  const alice = await register(app, 'alice')
  for (let i = 0; i < 3; i++) await send(app, alice, { to: 'bob', body: `m${i}` })
  await until('the circuit opens', () => said(/circuit opened/) > 0)
  // Without the circuit, retries 5 ms apart would keep coming; the dispatcher polls every 20 ms.
  await sleep(500)
  t.equal(hook.hits.length, 3, 'three failures, then nothing')
  t.equal(said(/circuit opened/), 1)
  const pending = await app.db.selectFrom('deliveries').select('webhook_next_at').where('webhook_next_at', 'is not', null).execute()
  t.ok(pending.length === 3 && pending.every((p) => Date.parse(p.webhook_next_at as string) > Date.now() + 500_000),
    'its pending attempts wait in the database until the cool-down ends')
})

t.test('after the cool-down one probe goes alone; its success closes the circuit, logged once, and the rest follow', async (t) => {
  // Every attempt fails until the circuit has opened. Not "the first three": with four attempts in flight, the 200 of
  // the fourth can be counted before the 503 of the third, and a success resets the failures in a row (as it should),
  // so the circuit would never open.
  let opened = (): boolean => false
  const hook = await receiver(() => opened() ? 200 : 503)
  t.teardown(hook.close)
  const { app, said } = await logged(t, { BUS_WEBHOOK_RETRY_BASE_MS: '5', BUS_WEBHOOK_BREAKER_FAILURES: '3', BUS_WEBHOOK_BREAKER_COOLDOWN_MS: '300' })
  opened = () => said(/circuit opened/) > 0
  await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } })
  const alice = await register(app, 'alice')
  for (let i = 0; i < 6; i++) await send(app, alice, { to: 'bob', body: `m${i}` })
  // Room for a busy machine: a run beside a compiler once took over 10 s to deliver the sixth.
  await until('every message is delivered', () => hook.hits.filter((h) => h.status === 200).length >= 6, 60_000)
  t.equal(hook.hits.filter((h) => h.status === 200).length, 6, 'every message delivered')
  t.equal(said(/circuit opened/), 1)
  t.equal(said(/circuit closed/), 1)
  const probe = hook.hits.findIndex((h) => h.status === 200)
  t.ok(hook.hits.slice(probe + 1).every((h) => h.at > (hook.hits[probe].closedAt as number)), 'the probe went alone')
})
