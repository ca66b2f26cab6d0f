import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { createWebhookPoster } from '../../webhooks/post.js'
import { createTargetPolicy } from '../../webhooks/target.js'
import { build, register, send, until } from '../helper.js'
import { receiver, type Answer } from '../webhook-receiver.js'

// A full garbage collection on demand, without starting the test process with --expose-gc. On Node 20 a
// collection may take an AbortSignal.timeout() inside AbortSignal.any() before it fires (nodejs/node#57736).
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

// Waits until `done`, with a full collection before each further look.
async function collectUntil (what: string, done: () => boolean): Promise<void> {
  await until(what, () => {
    if (done()) return true
    gc()
    return false
  })
}

for (const [stall, how] of [['hang', 'never answers'], ['hang-body', 'sends its headers and never finishes the body']] as Array<[Answer, string]>) {
  t.test(`a receiver that ${how} is cut off by BUS_WEBHOOK_TIMEOUT_MS, garbage collections or not, and retried`, async (t) => {
    const hook = await receiver((n) => n === 1 ? stall : 200)
    t.teardown(hook.close)
    // 1 s: the cut-off applies to the retry too, whose 200 must come back within it, on a machine that may be busy
    // (the collections below run on the bus's own event loop).
    const app = await build(t, {
      BUS_WEBHOOK_ALLOW_PRIVATE: 'true', BUS_WEBHOOK_TIMEOUT_MS: '1000', BUS_WEBHOOK_RETRY_BASE_MS: '20'
    })
    await app.inject({ method: 'POST', url: '/agents', payload: { name: 'bob', webhook_url: hook.url } })
    const alice = await register(app, 'alice')
    const id = (await send(app, alice, { to: 'bob', body: 'one' })).json().id
    await until('the first attempt arrived', () => hook.hits.length >= 1)
    await collectUntil('the message is retried', () => hook.hits.length >= 2)
    t.ok(hook.hits[0].closedAt !== undefined, 'the stalled attempt\'s connection was closed by the bus')
    // Every later attempt is answered 200; one answered too late for a loaded bus is cut off and tried again, which is
    // right, so the count of retries is not asserted (test/plugins/webhooks.test.ts asserts none after a success).
    t.ok(hook.hits.length >= 2, 'and the message retried')
    t.strictSame(hook.hits.slice(1).map((h) => h.status), hook.hits.slice(1).map(() => 200))
    // The receiver has answered; the bus records the delivery right after.
    const receipts = async () => (await app.inject({ url: `/messages/${id}`, headers: alice.auth })).json().receipts
    await until('the delivery is recorded', async () => (await receipts())[0].delivered_at !== null)
    t.match(await receipts(), [{ agent: 'bob', delivered_at: String }], 'delivered by the retry')
  })
}

t.test('a post rejects with BUS_WEBHOOK_TIMEOUT under garbage collections, and one that answers leaves no timer behind', async (t) => {
  const hanging = await receiver(() => 'hang')
  const answering = await receiver(() => 204)
  t.teardown(hanging.close)
  t.teardown(answering.close)
  const poster = createWebhookPoster({ policy: createTargetPolicy({ allow: [], allowPrivate: true }), timeoutMs: 200 })
  t.teardown(() => poster.close())
  const closing = new AbortController()
  let outcome: unknown
  poster.post(hanging.url, '{}', {}, closing.signal).then((status) => { outcome = status }, (err: unknown) => { outcome = err })
  await collectUntil('the post settles', () => outcome !== undefined)
  t.match(outcome, { code: 'BUS_WEBHOOK_TIMEOUT' })
  // A generous budget for the one that must answer: this machine may be busy.
  const patient = createWebhookPoster({ policy: createTargetPolicy({ allow: [], allowPrivate: true }), timeoutMs: 60_000 })
  t.teardown(() => patient.close())
  const timers = () => (process as unknown as { getActiveResourcesInfo (): string[] }).getActiveResourcesInfo().filter((r) => r === 'Timeout').length
  const before = timers()
  t.equal(await patient.post(answering.url, '{}', {}, closing.signal), 204)
  t.ok(timers() <= before, 'the timeout is cleared once the answer is in')
  closing.abort()
  await t.rejects(patient.post(answering.url, '{}', {}, closing.signal), 'nothing is sent once the bus is closing')
  t.equal(answering.hits.length, 1)
})
