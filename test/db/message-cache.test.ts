import t from 'tap'
import { MessageCache, type StoredMessage } from '../../db/message-cache.js'
import { archiveBatch, listInbox } from '../../db/messages.js'
import { build, engine, register, send } from '../helper.js'

const message = (id: number, body = 'hello'): StoredMessage => ({
  id, from: 'ann', to: ['bob'], broadcast: false, topic: null, queue: null, subject: null, body, data: null, priority: 'normal', reply_to: null, thread_id: id, created_at: '2026-01-01T00:00:00.000Z'
})

t.test('the cache keeps the most recently used messages within its byte budget and skips large ones', async (t) => {
  const cache = new MessageCache(10 * 1000, 2000)
  for (let id = 1; id <= 20; id++) cache.set(message(id), 100)
  // Each entry counts 2 × 100 + 400 bytes: 16 fit in 10,000.
  t.equal(cache.size, 16)
  t.ok(cache.bytes <= 10_000)
  t.equal(cache.get(1), undefined, 'the oldest went first')
  t.equal(cache.get(5)?.id, 5)
  cache.set(message(21), 100)
  t.equal(cache.get(5)?.id, 5, 'a message just read is kept')
  t.equal(cache.get(6), undefined, 'the least recently used one went')
  cache.set(message(22, 'x'.repeat(1000)), 1000)
  t.equal(cache.get(22), undefined, 'larger than an entry may be: not kept')
  cache.set(message(5, 'changed'), 100)
  t.equal(cache.get(5)?.body, 'changed')
  t.ok(cache.bytes <= 10_000)
})

t.test('inbox pages are the same from the cache as from the database', async (t) => {
  const app = await build(t)
  const ann = await register(app, 'ann')
  const bob = await register(app, 'bob')
  await send(app, ann, { to: 'bob', body: 'one', subject: 's', data: { k: [1] }, priority: 'high' })
  await send(app, ann, { to: ['bob', 'ann'], body: 'two' })
  const read = async () => (await app.inject({ method: 'GET', url: '/inbox', headers: bob.auth })).json().messages
  const first = await read()
  t.equal(app.messageCache.size, 2, 'the first read filled the cache')
  t.strictSame(await read(), first)
  t.match(first, [{ body: 'one', subject: 's', data: { k: [1] }, priority: 'high', to: ['bob'] }, { body: 'two', to: ['bob', 'ann'] }])
})

t.test('a message archived between reading its delivery and reading it is read from the archive', { skip: engine !== 'sqlite' && 'needs SQLite\'s one connection to order the two' }, async (t) => {
  const app = await build(t)
  const ann = await register(app, 'ann')
  const bob = await register(app, 'bob')
  const { id } = (await send(app, ann, { to: 'bob', body: 'old news' })).json()
  await app.inject({ method: 'POST', url: '/ack', headers: bob.auth, payload: { ids: [id] } })
  const agentId = (await app.db.selectFrom('agents').select('id').where('name', '=', 'bob').executeTakeFirstOrThrow()).id
  // The one connection serves queries in turn: the archiver's transaction runs between the page's two reads.
  const page = listInbox(app.db, app.messageCache, agentId, { limit: 10 })
  const moved = archiveBatch(app.storage, new Date(Date.now() + 60_000).toISOString(), 10)
  t.equal(await moved, 1)
  t.match(await page, [{ id, body: 'old news', from: 'ann' }])
  t.equal((await listInbox(app.db, app.messageCache, agentId, { limit: 10 })).length, 0, 'gone from the inbox afterwards')
})
