import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sql } from 'kysely'
import { Unavailable } from '../errors.js'
import { errorResponse, ref } from '../schemas/common.js'
import { Health } from '../schemas/stats.js'

const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', {
    schema: {
      operationId: 'getHealth',
      tags: ['system'],
      summary: 'Liveness and database check, without auth',
      description: 'Answers 503 while the bus shuts down or cannot reach its database.',
      response: { 200: ref(Health, 'Serving.'), 503: errorResponse('Shutting down, or the database is unavailable.') }
    }
  }, async (request) => {
    try {
      await sql`select 1`.execute(app.db)
    } catch (err) {
      request.log.error({ err }, 'health check failed')
      throw new Unavailable('database unavailable')
    }
    return { status: 'ok' as const }
  })
}

export default health
