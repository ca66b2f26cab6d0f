import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sql } from 'kysely'
import { ErrorResponse, ref } from '../schemas/common.js'
import { Health } from '../schemas/stats.js'

const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', {
    schema: {
      operationId: 'getHealth',
      tags: ['system'],
      summary: 'Liveness and database check, without auth',
      description: 'Answers 503 while the bus shuts down or cannot reach its database.',
      response: { 200: ref(Health), 503: ref(ErrorResponse) }
    }
  }, async () => {
    await sql`select 1`.execute(app.db)
    return { status: 'ok' as const }
  })
}

export default health
