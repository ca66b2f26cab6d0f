import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { retryDelayMs } from '../../plugins/webhooks.js'
import { newWebhookSecret, signWebhook } from '../../webhooks/sign.js'
import { createTargetPolicy } from '../../webhooks/target.js'
import { build, register, send, until } from '../helper.js'
import { receiver, verify, verifyLegacy } from '../webhook-receiver.js'

// The receivers of these tests listen on 127.0.0.1, which webhooks may not reach by default.
const local = { BUS_WEBHOOK_ALLOW_PRIVATE: 'true' }

t.test('signatures verify, and fail for another body, secret or an old timestamp', async (t) => {
  const secret = newWebhookSecret()
  const now = Math.floor(Date.now() / 1000)
  const hit = (body: string, headers: object) => ({ headers: { ...headers }, body })
  t.ok(verify(secret, hit('{"a":1}', signWebhook(secret, '7', now, '{"a":1}'))))
  t.notOk(verify(secret, hit('{"a":2}', signWebhook(secret, '7', now, '{"a":1}'))))
  t.notOk(verify(newWebhookSecret(), hit('{"a":1}', signWebhook(secret, '7', now, '{"a":1}'))))
  t.notOk(verify(secret, hit('{"a":1}', { ...signWebhook(secret, '7', now, '{"a":1}'), 'webhook-id': '8' })), 'the id is signed')
  t.notOk(verify(secret, hit('{"a":1}', signWebhook(secret, '7', now - 3600, '{"a":1}'))), 'an old timestamp is a replay')
})

t.test('retry delays grow exponentially with jitter, capped at an hour', async (t) => {
  t.equal(retryDelayMs(1000, 1, () => 0), 500)
  t.equal(retryDelayMs(1000, 1, () => 1), 1000)
  t.equal(retryDelayMs(1000, 4, () => 1), 8000)
  t.equal(retryDelayMs(1000, 40, () => 1), 3_600_000)
})

t.test('targets: http(s) only, and within BUS_WEBHOOK_ALLOW when set', async (t) => {
  const open = createTargetPolicy({ allow: [], allowPrivate: false })
  t.equal(open.refuseUrl('https://example.com/x'), undefined, 'a name is checked when the attempt connects')
  t.match(await open.refuse('ftp://example.com/x'), /http/)
  t.match(await open.refuse('not a url'), /not a URL/)
  const strict = createTargetPolicy({ allow: ['hooks.internal', '10.0.0.0/8', '::1'], allowPrivate: false })
  t.equal(await strict.refuse('http://hooks.internal/x'), undefined)
  t.equal(await strict.refuse('http://10.1.2.3:8080/x'), undefined)
  t.equal(await strict.refuse('http://[::1]/x'), undefined)
  t.match(await strict.refuse('http://192.168.1.1/x'), /not in BUS_WEBHOOK_ALLOW/)
  t.match(await strict.refuse('http://localhost/x'), /not in BUS_WEBHOOK_ALLOW/, 'a name resolving outside the list')
})

t.test('registering and updating webhooks', async (t) => {
  const app = await build(t, { BUS_WEBHOOK_ALLOW: '127.0.0.1' })
  const bad = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'x', webhook_url: 'http://10.0.0.1/h' } })
  t.equal(bad.statusCode, 400)
  t.match(bad.json(), { code: 'BUS_BAD_WEBHOOK', message: /webhook_url host 10.0.0.1/ })
  t.equal((await app.inject({ method: 'POST', url: '/agents', payload: { name: 'x', webhook_url: 'javascript:alert(1)' } })).statusCode, 400)

  const reg = await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: 'http://127.0.0.1:9/h' } })
  t.match(reg.json(), { webhook_url: 'http://127.0.0.1:9/h', webhook_secret: /^whsec_/ })
  const bob = { auth: { authorization: `Bearer ${reg.json().token}` } }
  const alice = await register(app, 'alice')
  t.notOk('webhook_url' in (await app.inject({ url: '/agents/bob', headers: alice.auth })).json(), 'others do not see the URL')
  t.equal((await app.inject({ method: 'PATCH', url: '/agents/bob', headers: alice.auth, payload: { webhook_url: null } })).statusCode, 403)

  const patched = await app.inject({ method: 'PATCH', url: '/agents/bob', headers: bob.auth, payload: { description: 'reviewer', webhook_url: 'http://127.0.0.1:10/h' } })
  t.equal(patched.statusCode, 200)
  t.match(patched.json(), { description: 'reviewer', webhook_url: 'http://127.0.0.1:10/h', webhook_secret: /^whsec_/ })
  t.not(patched.json().webhook_secret, reg.json().webhook_secret, 'a new URL gets a new secret')
  const cleared = await app.inject({ method: 'PATCH', url: '/agents/bob', headers: bob.auth, payload: { webhook_url: null } })
  t.match(cleared.json(), { webhook_url: null, description: 'reviewer' })
  t.notOk('webhook_secret' in cleared.json())
  t.equal((await app.inject({ method: 'PATCH', url: '/agents/bob', headers: bob.auth, payload: { name: 'robert' } })).statusCode, 400)
})

t.test('a message is POSTed signed to the recipient\'s webhook; a failing receiver is retried until it answers 2xx', async (t) => {
  const hook = await receiver((n) => n <= 3 ? 500 : 204)
  t.teardown(hook.close)
  const app = await build(t, { ...local, BUS_WEBHOOK_RETRY_BASE_MS: '20' })
  const bob = (await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } })).json()
  const alice = await register(app, 'alice')
  const id = (await send(app, alice, { to: 'bob', body: 'pushed', data: { n: 1 } })).json().id
  await until('four attempts arrived', () => hook.hits.length >= 4)
  await sleep(300)
  t.equal(hook.hits.length, 4, 'three failures, one success, no more')
  t.equal(hook.hits.filter((h) => h.status === 204).length, 1, 'delivered exactly once')
  for (const hit of hook.hits) t.ok(verify(bob.webhook_secret, hit), 'every attempt is signed')
  for (const hit of hook.hits) t.ok(verifyLegacy(bob.webhook_secret, hit), 'and still carries the deprecated X-Bus-Signature')
  t.match(JSON.parse(hook.hits[3].body), { id, from: 'alice', body: 'pushed', data: { n: 1 } })
  t.same(hook.hits.map((h) => h.headers['webhook-id']), [String(id), String(id), String(id), String(id)], 'retries keep the id, for dedup')
  t.equal(hook.hits[3].headers['x-bus-message-id'], String(id))
  // The receiver has answered; the bus records the delivery right after.
  const receipts = async () => (await app.inject({ url: `/messages/${id}`, headers: alice.auth })).json().receipts
  await until('the delivery is recorded', async () => (await receipts())[0].delivered_at !== null)
  t.match(await receipts(), [{ agent: 'bob', delivered_at: String, read_at: null }], 'delivered and read are separate')
})

t.test('a broadcast is pushed to every recipient with a webhook once, and reading it later makes no second copy', async (t) => {
  const hook = await receiver(() => 204)
  t.teardown(hook.close)
  const app = await build(t, { ...local, BUS_WEBHOOK_RETRY_BASE_MS: '20' })
  const bob = (await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } })).json()
  const alice = await register(app, 'alice')
  await register(app, 'carol')
  const id = (await send(app, alice, { body: 'to all' })).json().id
  await until('the broadcast is pushed', () => hook.hits.length >= 1)
  t.match(JSON.parse(hook.hits[0].body), { id, broadcast: true, body: 'to all' })
  const inbox = (await app.inject({ url: '/inbox', headers: { authorization: `Bearer ${bob.token}` } })).json().messages
  t.match(inbox, [{ id, delivered_at: String }], 'bob\'s inbox shows the pushed copy, delivered')
  await sleep(200)
  t.equal(hook.hits.length, 1, 'pushed once')
  t.match((await app.inject({ url: `/messages/${id}`, headers: alice.auth })).json().receipts,
    [{ agent: 'bob', delivered_at: String }, { agent: 'carol', delivered_at: null }])
})
