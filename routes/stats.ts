import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { agentStats } from '../db/agents.js'
import { latestSchemaVersion } from '../db/migrate.js'
import { messageStats } from '../db/messages.js'
import { authErrors, ref } from '../schemas/common.js'
import { Stats } from '../schemas/stats.js'

const stats: FastifyPluginAsyncTypebox = async (app) => {
  const { db } = app
  const startedAt = Date.now()

  app.get('/stats', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'getStats',
      tags: ['system'],
      summary: 'Counts of agents and messages, database size, uptime',
      security: [{ bearer: [] }],
      response: { 200: ref(Stats, 'Current counts.'), ...authErrors }
    }
  }, async () => {
    return {
      agents: await agentStats(db),
      messages: await messageStats(db),
      database: { size_bytes: app.dbSize(), schema_version: latestSchemaVersion },
      uptime_s: (Date.now() - startedAt) / 1000
    }
  })
}

export default stats
