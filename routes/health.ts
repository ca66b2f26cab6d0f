import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Unavailable } from '../errors.js'
import { errorResponse, ref } from '../schemas/common.js'
import { Health } from '../schemas/stats.js'

const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', {
    schema: {
      operationId: 'getHealth',
      tags: ['system'],
      summary: 'Liveness and database check, without auth',
      description: 'Answers 503 while the bus shuts down, cannot reach its database, or cannot write to it (disk full, ' +
        'read-only, the database file deleted or moved); the message says which.',
      response: { 200: ref(Health, 'Serving.'), 503: errorResponse('Shutting down, or the database is unavailable or cannot write.', { retry: true }) }
    }
  }, async (request, reply) => {
    let problem: string | undefined
    try {
      problem = await app.storage.check()
    } catch (err) {
      request.log.error({ err }, 'health check failed')
      reply.header('retry-after', '5')
      throw new Unavailable('database unavailable')
    }
    // A store that reads but cannot keep a write (disk full, file deleted, read-only) is not serving: say which.
    if (problem !== undefined) {
      reply.header('retry-after', '5')
      throw new Unavailable(`database cannot write: ${problem}`)
    }
    return { status: 'ok' as const }
  })
}

export default health
