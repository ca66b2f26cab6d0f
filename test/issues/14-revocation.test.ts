import t from 'tap'
import { build, register, send, until, type Env } from '../helper.js'

const ADMIN = 'admin-token-0123456789'
const admin = { authorization: `Bearer ${ADMIN}` }

async function serve (t: Parameters<typeof build>[0], env: Env = {}) {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN, ...env })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, base }
}

// A raw stream over real HTTP: `text` grows as events arrive; `ended` resolves with everything once the server ends
// it, or with undefined if it is still open after `ms` (generous: ending is immediate, the bound only keeps a broken
// bus from hanging the test).
async function openRaw (base: string, token: string) {
  const abort = new AbortController()
  const res = await fetch(`${base}/stream`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal: abort.signal })
  let text = ''
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  const done = (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }))
      if (done) return text
      text += value
    }
  })()
  return {
    status: res.status,
    text: () => text,
    ended: async (ms = 30_000) => Promise.race([done, new Promise<undefined>((resolve) => setTimeout(resolve, ms))]),
    close: () => abort.abort()
  }
}

t.test('rotating a token ends the streams and long-polls opened with the old one', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice', {}, admin)
  const bob = await register(app, 'bob', {}, admin)
  await send(app, alice, { to: 'bob', body: 'before' })
  const stream = await openRaw(base, bob.token)
  t.teardown(stream.close)
  t.equal(stream.status, 200)
  await until('the stream is live', () => stream.text().includes('"before"'))
  const poll = fetch(`${base}/inbox?unread=true&wait=30&cursor=${Buffer.from('0.999999').toString('base64url')}`, { headers: bob.auth })

  const rotated = await app.inject({ method: 'POST', url: '/agents/bob/token', headers: bob.auth })
  t.equal(rotated.statusCode, 200)
  const ended = await stream.ended()
  t.not(ended, undefined, 'the stream ended at once')
  const polled = await poll
  t.equal(polled.status, 401, 'the long-poll is answered 401, not with mail')
  t.match(await polled.json(), { code: 'BUS_UNAUTHORIZED', message: /revoked/ })

  await send(app, alice, { to: 'bob', body: 'after rotation' })
  t.notMatch(stream.text(), /after rotation/)
  const fresh = await openRaw(base, rotated.json().token)
  t.teardown(fresh.close)
  await until('the new token reads on', () => fresh.text().includes('after rotation'))
})

t.test('deregistering ends the agent\'s streams, and broadcasts no longer reach it', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice', {}, admin)
  const bob = await register(app, 'bob', {}, admin)
  const stream = await openRaw(base, bob.token)
  t.teardown(stream.close)
  await send(app, alice, { body: 'first broadcast' })
  await until('the stream has the first broadcast', () => stream.text().includes('first broadcast'))
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/bob', headers: admin })).statusCode, 204)
  t.not(await stream.ended(), undefined, 'the stream ended')
  await send(app, alice, { body: 'second broadcast' })
  t.notMatch(stream.text(), /second broadcast/)
  t.notMatch((await app.inject({ url: '/agents', headers: alice.auth })).body, /"bob"/, 'bob is not listed, not even as online')
})

t.test('an agent sees its own webhook; rotation removes it and says so', async (t) => {
  const app = await build(t, { BUS_ADMIN_TOKEN: ADMIN, BUS_WEBHOOK_ALLOW_PRIVATE: 'true' })
  const alice = await register(app, 'alice', {}, admin)
  const bob = await register(app, 'bob', { webhook_url: 'http://127.0.0.1:9/hook' }, admin)
  t.match((await app.inject({ url: '/agents/bob', headers: bob.auth })).json(), { webhook_url: 'http://127.0.0.1:9/hook' }, 'bob sees his own webhook')
  t.match((await app.inject({ url: '/agents/bob', headers: admin })).json(), { webhook_url: 'http://127.0.0.1:9/hook' }, 'so does the admin')
  t.notOk('webhook_url' in (await app.inject({ url: '/agents/bob', headers: alice.auth })).json(), 'others do not')
  const listed = (await app.inject({ url: '/agents', headers: bob.auth })).json().agents
  t.match(listed, [{ name: 'alice' }, { name: 'bob', webhook_url: 'http://127.0.0.1:9/hook' }])
  t.notOk('webhook_url' in listed[0], 'the list shows only the caller\'s own webhook')

  const rotated = (await app.inject({ method: 'POST', url: '/agents/bob/token', headers: bob.auth })).json()
  t.equal(rotated.webhook_removed, true)
  const after = (await app.inject({ url: '/agents/bob', headers: { authorization: `Bearer ${rotated.token as string}` } })).json()
  t.equal(after.webhook_url, null, 'a webhook a thief may have set does not survive rotation')
  t.equal((await app.inject({ method: 'POST', url: '/agents/bob/token', headers: admin })).json().webhook_removed, false)
})

t.test('a deregistered agent\'s name is not handed to a new agent unless the admin says so', async (t) => {
  const open = await build(t)
  const alice = await register(open, 'alice')
  await register(open, 'bob')
  await send(open, alice, { to: 'bob', body: 'for the first bob' })
  const bob = await register(open, 'carol')
  t.equal((await open.inject({ method: 'DELETE', url: '/agents/carol', headers: bob.auth })).statusCode, 204)
  const again = await open.inject({ method: 'POST', url: '/agents', payload: { name: 'carol' } })
  t.equal(again.statusCode, 409)
  t.match(again.json(), { code: 'BUS_NAME_RETIRED', message: /carol belonged to a deregistered agent; only the admin/ })
  const sneaky = await open.inject({ method: 'POST', url: '/agents', payload: { name: 'carol', reuse_name: true } })
  t.equal(sneaky.statusCode, 403, 'without an admin token nobody may reuse a name')

  const { app } = await serve(t)
  const dave = await register(app, 'dave', {}, admin)
  t.equal((await app.inject({ method: 'DELETE', url: '/agents/dave', headers: dave.auth })).statusCode, 204)
  t.equal((await app.inject({ method: 'POST', url: '/agents', headers: admin, payload: { name: 'dave' } })).statusCode, 409)
  const reused = await app.inject({ method: 'POST', url: '/agents', headers: admin, payload: { name: 'dave', reuse_name: true } })
  t.equal(reused.statusCode, 201, 'the admin may')
})

t.test('an agent holds at most BUS_MAX_READERS_PER_AGENT readers: one more ends its oldest, the others read on', async (t) => {
  const { app, base } = await serve(t, { BUS_MAX_READERS_PER_AGENT: '2' })
  const alice = await register(app, 'alice', {}, admin)
  const bob = await register(app, 'bob', {}, admin)
  const first = await openRaw(base, bob.token)
  t.teardown(first.close)
  await send(app, alice, { to: 'bob', body: 'one' })
  await until('the first stream reads "one"', () => first.text().includes('"one"'))
  const second = await openRaw(base, bob.token)
  const third = await openRaw(base, bob.token)
  t.teardown(second.close)
  t.teardown(third.close)
  t.not(await first.ended(), undefined, 'the oldest stream was ended')
  const { id } = await app.db.selectFrom('agents').select('id').where('name', '=', 'bob').executeTakeFirstOrThrow()
  await until('two readers are open', () => app.readers.count(id) === 2)
  await send(app, alice, { to: 'bob', body: 'two' })
  await until('the newer two both read on', () => second.text().includes('"two"') && third.text().includes('"two"'))
  // A long-poll counts as a reader too: it ends the oldest stream.
  const poll = fetch(`${base}/inbox?unread=true&wait=1&cursor=${Buffer.from('0.999999').toString('base64url')}`, { headers: bob.auth })
  t.not(await second.ended(), undefined, 'a long-poll took the place of the oldest stream')
  t.equal((await poll).status, 200)
})

t.test('a stream or long-poll opened while its token is being rotated never reads with the old token', async (t) => {
  const { app, base } = await serve(t)
  const alice = await register(app, 'alice', {}, admin)
  let token = (await register(app, 'bob', {}, admin)).token
  for (let round = 0; round < 8; round++) {
    const old = token
    // The reader and the rotation race; whichever way they interleave, the old token must read nothing after it.
    const [stream, poll, rotated] = await Promise.all([
      openRaw(base, old),
      fetch(`${base}/inbox?unread=true&wait=5&cursor=${Buffer.from('0.999999').toString('base64url')}`, { headers: { authorization: `Bearer ${old}` } }),
      app.inject({ method: 'POST', url: '/agents/bob/token', headers: admin })
    ])
    t.teardown(stream.close)
    token = rotated.json().token
    await send(app, alice, { to: 'bob', body: `after rotation ${round}` })
    if (stream.status === 200) t.not(await stream.ended(), undefined, `round ${round}: the stream ended`)
    else t.equal(stream.status, 401, `round ${round}: the stream was refused`)
    t.notMatch(stream.text(), `after rotation ${round}`, `round ${round}: the stream read nothing after the rotation`)
    t.equal(poll.status, 401, `round ${round}: the long-poll was refused`)
  }
})
