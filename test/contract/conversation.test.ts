import createClient from 'openapi-fetch'
import t from 'tap'
import { build } from '../helper.js'
import type { paths } from '../../client/api.js'

// The way agents' generated clients use the bus: types generated from openapi.yaml, openapi-fetch over real HTTP.
t.test('a whole conversation through the generated client', async (t) => {
  const app = await build(t)
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 })
  const anon = createClient<paths>({ baseUrl })

  const register = async (name: string) => {
    const { data, response } = await anon.POST('/agents', { body: { name, capabilities: ['chat'] } })
    t.equal(response.status, 201)
    if (!data) throw new Error('no agent')
    return createClient<paths>({ baseUrl, headers: { authorization: `Bearer ${data.token}` } })
  }
  const alice = await register('alice')
  const bob = await register('bob')
  const carol = await register('carol')

  const sent = await alice.POST('/send', { body: { to: 'bob', body: 'can you review #12?', priority: 'high' }, headers: { 'idempotency-key': 'k1' } })
  t.equal(sent.response.status, 201)
  const question = sent.data!
  t.match(question, { from: 'alice', to: ['bob'], priority: 'high' })
  const broadcast = await alice.POST('/send', { body: { body: 'deploy at 5' } })
  t.match(broadcast.data, { broadcast: true, recipients: 2 })

  const inbox = await bob.GET('/inbox', { params: { query: { unread: true } } })
  t.strictSame(inbox.data?.messages.map((m) => m.body), ['can you review #12?', 'deploy at 5'])

  const reply = await bob.POST('/send', { body: { to: 'alice', body: 'done', reply_to: question.id } })
  t.equal(reply.data?.thread_id, question.id)

  const ack = await bob.POST('/ack', { body: { ids: inbox.data!.messages.map((m) => m.id) } })
  t.strictSame(ack.data, { acked: 2, already_read: 0, not_found: [] })

  const receipt = await alice.GET('/messages/{id}', { params: { path: { id: question.id } } })
  t.match(receipt.data?.receipts, [{ agent: 'bob', read_at: String }])

  const thread = await carol.GET('/threads/{id}', { params: { path: { id: question.id } } })
  t.equal(thread.response.status, 404)
  t.match(thread.error, { statusCode: 404, code: 'BUS_THREAD_NOT_FOUND' })
  const ownThread = await alice.GET('/threads/{id}', { params: { path: { id: question.id } } })
  t.strictSame(ownThread.data?.messages.map((m) => m.body), ['can you review #12?', 'done'])

  const history = await alice.GET('/history', { params: { query: { with: 'bob' } } })
  t.strictSame(history.data?.messages.map((m) => m.body), ['can you review #12?', 'deploy at 5', 'done'])

  const agents = await carol.GET('/agents')
  t.match(agents.data?.agents.map((a) => a.status), ['online', 'online', 'online'])
  const hb = await carol.POST('/heartbeat')
  t.equal(hb.data?.unread, 1)

  const stats = await alice.GET('/stats')
  t.match(stats.data, { agents: { total: 3, online: 3 }, messages: { total: 3, unread: 2 } })
  const health = await anon.GET('/health')
  t.strictSame(health.data, { status: 'ok' })
})
