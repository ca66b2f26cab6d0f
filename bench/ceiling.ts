import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ref } from '../schemas/common.js'
import { schemas } from '../schemas/index.js'
import { InboxQuery, MessageCreate, MessagePage, MessageSent } from '../schemas/message.js'

// The baseline: the same HTTP work as the bus (parsing, validating against the same schemas, serializing the same
// response shapes) with no storage, auth or fan-out. Every bus figure is reported as a ratio to this one.
export async function buildCeiling () {
  const app = Fastify({ logger: false }).withTypeProvider<TypeBoxTypeProvider>()
  for (const schema of schemas) app.addSchema(schema)
  const now = new Date().toISOString()
  const sent = { id: 1, thread_id: 1, from: 'agent-0', to: ['agent-1'], broadcast: false, topic: null, queue: null, recipients: 1, priority: 'normal' as const, created_at: now }
  const page = {
    messages: Array.from({ length: 50 }, (_, i) => ({
      id: i + 1, from: 'agent-0', to: ['agent-1'], broadcast: false, topic: null, queue: null, subject: null, body: 'benchmark message body '.repeat(4), data: null,
      priority: 'normal' as const, reply_to: null, thread_id: i + 1, created_at: now, delivered_at: now, read_at: null, ack_by: null, archived: false
    })),
    next_cursor: 'MC41MA'
  }
  app.post('/send', { schema: { body: ref(MessageCreate), response: { 201: ref(MessageSent) } } }, async (_request, reply) => {
    reply.code(201)
    return sent
  })
  app.get('/inbox', { schema: { querystring: InboxQuery, response: { 200: ref(MessagePage) } } }, async () => page)
  app.get('/health', async () => ({ status: 'ok' }))
  return app
}

if (process.argv[1]?.endsWith('ceiling.js')) {
  const app = await buildCeiling()
  await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 0) })
}
