import { once } from 'node:events'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { Test } from 'tap'
import t from 'tap'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../config.js'
import { setWebhook } from '../../db/webhooks.js'
import { createWebhookPoster } from '../../webhooks/post.js'
import { createTargetPolicy } from '../../webhooks/target.js'
import { build, register, send, testDb, until } from '../helper.js'

// Every address below is only checked, never connected to: the policy refuses before any connection.
const refusedByDefault = [
  'http://127.0.0.1/h', 'http://127.1.2.3/h', 'http://2130706433/h', 'http://0x7f.1/h', 'http://[::1]/h',
  'http://10.1.2.3/h', 'http://172.16.0.1/h', 'http://172.31.255.254/h', 'http://192.168.1.1/h', 'http://100.64.0.1/h',
  'http://169.254.169.254/latest/meta-data/', 'http://[fe80::1]/h', 'http://[fd00::1]/h', 'http://[fc00::1]/h',
  'http://0.0.0.0/h', 'http://[::]/h', 'http://224.0.0.1/h', 'http://[ff02::1]/h',
  'http://[::ffff:127.0.0.1]/h', 'http://[::ffff:a9fe:a9fe]/h', 'http://[::ffff:10.0.0.1]/h', 'http://[64:ff9b::a9fe:a9fe]/h'
]

t.test('by default webhooks may not target loopback, private, link-local, unique-local, CGNAT, unspecified or multicast addresses', async (t) => {
  const policy = createTargetPolicy({ allow: [], allowPrivate: false })
  t.same(refusedByDefault.filter((url) => policy.refuseUrl(url) === undefined), [], 'every one refused')
  t.match(policy.refuseUrl('http://169.254.169.254/'), /link-local address/)
  t.match(policy.refuseUrl('http://[::ffff:127.0.0.1]/'), /loopback address.*BUS_WEBHOOK_ALLOW_PRIVATE/)
  t.equal(policy.refuseUrl('http://172.32.0.1/h'), undefined, 'just outside 172.16/12')
  t.equal(policy.refuseUrl('http://100.128.0.1/h'), undefined, 'just outside 100.64/10')
})

t.test('BUS_WEBHOOK_ALLOW_PRIVATE opens the private networks, and BUS_WEBHOOK_ALLOW names anything else', async (t) => {
  const lan = createTargetPolicy({ allow: [], allowPrivate: true })
  for (const url of ['http://127.0.0.1/h', 'http://[::1]/h', 'http://10.1.2.3/h', 'http://192.168.1.1/h', 'http://[fd00::1]/h', 'http://100.64.0.1/h']) {
    t.equal(lan.refuseUrl(url), undefined, url)
  }
  for (const url of ['http://169.254.169.254/', 'http://0.0.0.0/h', 'http://224.0.0.1/h', 'http://[::ffff:a9fe:a9fe]/h']) {
    t.match(lan.refuseUrl(url), /list it in BUS_WEBHOOK_ALLOW/, `${url} still refused`)
  }
  const listed = createTargetPolicy({ allow: ['169.254.169.254', '10.0.0.0/8'], allowPrivate: false })
  t.equal(listed.refuseUrl('http://169.254.169.254/'), undefined)
  t.equal(listed.refuseUrl('http://[::ffff:10.9.9.9]/'), undefined, 'a listed range in its IPv4-mapped form')
  t.match(listed.refuseUrl('http://192.168.1.1/'), /not in BUS_WEBHOOK_ALLOW/)
})

t.test('registration refuses private targets and URLs with credentials, with a 400 that says why', async (t) => {
  const app = await build(t)
  const attempt = async (url: string) => app.inject({ method: 'POST', url: '/agents', payload: { name: 'x', webhook_url: url } })
  for (const [url, why] of [['http://169.254.169.254/latest', /link-local/], ['http://127.0.0.1:9/h', /loopback/],
    ['http://[::ffff:127.0.0.1]/h', /loopback/], ['http://localhost:9/h', /localhost resolves to .*loopback/]] as const) {
    const res = await attempt(url)
    t.equal(res.statusCode, 400, url)
    t.match(res.json(), { code: 'BUS_BAD_WEBHOOK', message: why })
  }
  const res = await attempt('https://hook-user:hunter2-secret@example.com/h')
  t.equal(res.statusCode, 400)
  t.match(res.json(), { code: 'BUS_BAD_WEBHOOK', message: /must not contain credentials/ })
  t.notMatch(res.body, /hunter2/, 'the password is not repeated')
  const bob = await register(app, 'bob')
  const patch = await app.inject({ method: 'PATCH', url: '/agents/bob', headers: bob.auth, payload: { webhook_url: 'http://u:p@example.com/h' } })
  t.equal(patch.statusCode, 400)
})

// A TCP listener on 127.0.0.1 that counts the connections it gets: none, when the policy does its job.
async function listener (t: Test) {
  let connections = 0
  const server = createServer((socket) => { connections++; socket.destroy() })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  return { port: (server.address() as { port: number }).port, connections: () => connections }
}

t.test('the address checked is the one connected to: a name that now resolves to loopback is refused at connect time', async (t) => {
  const target = await listener(t)
  const poster = createWebhookPoster({ policy: createTargetPolicy({ allow: [], allowPrivate: false }), timeoutMs: 2000 })
  t.teardown(() => poster.close())
  const signal = new AbortController().signal
  await t.rejects(poster.post(`http://localhost:${target.port}/h`, '{}', {}, signal), { code: 'BUS_WEBHOOK_ADDRESS_REFUSED', message: /localhost resolves to .*loopback/ })
  await t.rejects(poster.post(`http://127.0.0.1:${target.port}/h`, '{}', {}, signal), { code: 'BUS_WEBHOOK_ADDRESS_REFUSED' }, 'a literal address, which Node connects to without a lookup')
  await t.rejects(poster.post(`http://[::ffff:127.0.0.1]:${target.port}/h`, '{}', {}, signal), { code: 'BUS_WEBHOOK_ADDRESS_REFUSED' })
  t.equal(target.connections(), 0, 'no connection was made')
})

t.test('the dispatcher sends nothing to a webhook whose name resolves to a refused address, and logs no credentials', async (t) => {
  const target = await listener(t)
  const lines: string[] = []
  const stream = new Writable({ write (chunk, _, done) { lines.push(String(chunk)); done() } })
  const config = loadConfig({ BUS_DB: await testDb(t), BUS_MAX_EVENT_LOOP_DELAY_MS: '0', BUS_WEBHOOK_RETRY_BASE_MS: '60000' })
  const app = await buildApp(config, { loops: false, logger: { level: 'info', stream }, webhookPollMs: 20 })
  t.teardown(() => app.close())
  await app.ready()
  const alice = await register(app, 'alice')
  for (const name of ['rebound', 'legacy']) await register(app, name)
  const agents = await app.db.selectFrom('agents').select(['id', 'name']).execute()
  const id = (name: string) => agents.find((a) => a.name === name)?.id as number
  // Stored as registration would have when the name pointed elsewhere, and before credentials were refused.
  await setWebhook(app.db, id('rebound'), `http://localhost:${target.port}/h`, 'whsec_AAAA')
  await setWebhook(app.db, id('legacy'), `http://hook-user:hunter2-secret@example.com/h`, 'whsec_AAAA')
  await send(app, alice, { to: ['rebound', 'legacy'], body: 'not for the loopback' })
  const attempted = async () => (await app.db.selectFrom('deliveries').select('webhook_attempts').where('webhook_attempts', '>', 0).execute()).length
  await until('both attempts are made', async () => await attempted() >= 2)
  t.equal(await attempted(), 2, 'both attempts made and failed')
  t.equal(target.connections(), 0, 'nothing reached the loopback listener')
  const failures = lines.filter((l) => l.includes('webhook attempt failed'))
  t.match(failures.join(''), /loopback/)
  t.match(failures.join(''), /credentials/)
  t.notMatch(lines.join(''), /hunter2/, 'no credentials in the log')
})
