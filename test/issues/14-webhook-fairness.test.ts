import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { build, register, send } from '../helper.js'
import { receiver } from '../webhook-receiver.js'

t.test('an agent whose endpoint hangs, with many messages due, does not delay another agent\'s webhook', async (t) => {
  const stuck = await receiver(() => 'hang')
  const healthy = await receiver(() => 204)
  t.teardown(stuck.close)
  t.teardown(healthy.close)
  // The timeout only ends a test that would hang; closing the app aborts the stuck attempts at teardown.
  const app = await build(t, { BUS_WEBHOOK_ALLOW_PRIVATE: 'true', BUS_SYNC: 'normal', BUS_WEBHOOK_TIMEOUT_MS: '60000', BUS_WEBHOOK_PER_RECIPIENT: '2' })
  await app.inject({ method: 'POST', url: '/agents', payload: { name: 'slow', webhook_url: stuck.url } })
  await app.inject({ method: 'POST', url: '/agents', payload: { name: 'fast', webhook_url: healthy.url } })
  const alice = await register(app, 'alice')
  for (let i = 0; i < 40; i++) await send(app, alice, { to: 'slow', body: `backlog ${i}` })
  while (stuck.hits.length < 2) await sleep(10)

  await send(app, alice, { to: 'fast', body: 'no waiting' })
  // Until the healthy endpoint has its webhook or the stuck one's first attempt is cut off, whichever comes first.
  while (healthy.hits.length === 0 && stuck.hits.every((h) => h.closedAt === undefined)) await sleep(10)
  t.equal(healthy.hits.length, 1, 'the healthy endpoint got its webhook')
  t.ok(stuck.hits.every((h) => h.closedAt === undefined || h.closedAt > healthy.hits[0].at), 'while the stuck one still hangs')
  t.equal(stuck.hits.length, 2, 'the stuck endpoint holds no more than its own slots')
})
