import { createHmac, randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { newWebhookSecret, signWebhook } from '../../webhooks/sign.js'
import { build, register, send } from '../helper.js'
import { receiver, verify, verifyLegacy } from '../webhook-receiver.js'

t.test('a pushed message carries webhook-id, webhook-timestamp and a webhook-signature the standardwebhooks library verifies', async (t) => {
  const hook = await receiver(() => 204)
  t.teardown(hook.close)
  const app = await build(t, { BUS_WEBHOOK_ALLOW_PRIVATE: 'true' })
  const bob = (await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } })).json()
  const alice = await register(app, 'alice')
  const id = (await send(app, alice, { to: 'bob', body: 'standard' })).json().id
  while (hook.hits.length < 1) await sleep(10)
  const [hit] = hook.hits
  t.equal(hit.headers['webhook-id'], String(id), 'the message id, so a receiver can drop a retry it already has')
  t.ok(Math.abs(Number(hit.headers['webhook-timestamp']) - Date.now() / 1000) < 60, 'unix seconds')
  t.match(hit.headers['webhook-signature'], /^v1,[A-Za-z0-9+/]+={0,2}$/)
  const payload = new Webhook(bob.webhook_secret).verify(hit.body, hit.headers as Record<string, string>)
  t.match(payload, { id, from: 'alice', body: 'standard' }, 'verified and parsed by the reference library')
  t.throws(() => new Webhook(bob.webhook_secret).verify(hit.body.replace('standard', 'forged!!'), hit.headers as Record<string, string>))
  t.ok(verifyLegacy(bob.webhook_secret, hit), 'the deprecated X-Bus-Signature is still sent for existing receivers')
  t.equal(hit.headers['x-bus-message-id'], String(id))
})

t.test('new secrets are whsec_ and standard base64 of 32 random bytes, which the reference library accepts', async (t) => {
  const app = await build(t, { BUS_WEBHOOK_ALLOW_PRIVATE: 'true', BUS_SYNC: 'normal' })
  const secrets = Array.from({ length: 200 }, newWebhookSecret)
  for (let i = 0; i < 10; i++) {
    const res = await app.inject({ method: 'POST', url: '/agents', payload: { name: `a${i}`, webhook_url: 'http://127.0.0.1:9/h' } })
    secrets.push(res.json().webhook_secret)
  }
  // base64url would put a - or _ in about three secrets of four, and no padding; the reference library refuses those.
  t.same(secrets.filter((s) => !/^whsec_[A-Za-z0-9+/]{43}=$/.test(s) || Buffer.from(s.slice(6), 'base64').length !== 32), [])
  t.same(secrets.filter((s) => { try { return !new Webhook(s) } catch { return true } }), [])
})

t.test('a secret made before, in base64url, still signs with the same key', async (t) => {
  // Such a secret, with both base64url-only characters in it.
  let key = randomBytes(32)
  while (!/[-_]/.test(key.toString('base64url'))) key = randomBytes(32)
  const old = `whsec_${key.toString('base64url')}`
  const body = '{"id":1}'
  const now = Math.floor(Date.now() / 1000)
  const headers = signWebhook(old, '1', now, body)
  const expected = createHmac('sha256', key).update(`1.${now}.${body}`).digest('base64')
  t.equal(headers['webhook-signature'], `v1,${expected}`, 'keyed with the decoded bytes, not with the text')
  // What its receiver does until the agent sets its webhook again and gets a standard secret: convert the key.
  t.ok(verify(`whsec_${key.toString('base64')}`, { headers: { ...headers }, body }))
})
