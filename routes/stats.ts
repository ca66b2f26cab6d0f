import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { agentStats } from '../db/agents.js'
import { messageStats } from '../db/stats.js'
import { Forbidden } from '../errors.js'
import { authErrors, ref } from '../schemas/common.js'
import { Stats } from '../schemas/stats.js'

export interface StatsOptions {
  // Whether the bus has an admin token (BUS_ADMIN_TOKEN). Then the figures are the admin's alone: they describe the
  // whole bus (how many agents, how much mail, how big the database), which is the operator's business, not any
  // one agent's. A bus without one (loopback) has no operator to keep them for, so any agent may read them.
  adminOnly?: boolean
}

const stats: FastifyPluginAsyncTypebox<StatsOptions> = async (app, { adminOnly = false }) => {
  const { db } = app
  const startedAt = Date.now()

  app.get('/stats', {
    onRequest: app.requireAgentOrAdmin,
    schema: {
      operationId: 'getStats',
      tags: ['system'],
      summary: 'Counts of agents and messages, database size, uptime',
      description: 'Only the admin when the bus has an admin token (BUS_ADMIN_TOKEN); any agent on a bus without one. How many ' +
        'agents are registered and online, how many messages are stored, unread and archived, the database size and schema ' +
        'version, and how long the bus has run. The message figures are counters kept by every write, so a call costs the ' +
        'same whatever the size of the bus.',
      security: [{ bearer: [] }],
      response: { 200: ref(Stats, 'Current counts.'), ...authErrors }
    }
  }, async (request) => {
    if (adminOnly && request.caller?.kind !== 'admin') {
      throw new Forbidden('stats are for the admin on a bus with an admin token: call with BUS_ADMIN_TOKEN')
    }
    return {
      agents: await agentStats(db),
      messages: await messageStats(db),
      database: { engine: app.storage.engine, size_bytes: await app.storage.size(), schema_version: app.storage.schemaVersion },
      uptime_s: (Date.now() - startedAt) / 1000
    }
  })
}

export default stats
