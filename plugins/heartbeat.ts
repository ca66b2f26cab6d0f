import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { markOfflineBefore } from '../db/agents.js'
import type { Database } from '../db/schema.js'
import { startLoop } from './loop.js'

export interface HeartbeatOptions {
  offlineAfterMs: number
  // How often to sweep; 0 disables the loop (tests call sweepStaleAgents directly).
  intervalMs: number
}

// Marks offline every agent silent for longer than ttlMs; returns how many changed.
export async function sweepStaleAgents (db: Kysely<Database>, now: Date, ttlMs: number): Promise<number> {
  return markOfflineBefore(db, new Date(now.getTime() - ttlMs).toISOString())
}

const heartbeat: FastifyPluginAsync<HeartbeatOptions> = async (app, { offlineAfterMs, intervalMs }) => {
  const log = app.log.child({ plugin: 'heartbeat' })
  startLoop(app, intervalMs, async () => {
    const n = await sweepStaleAgents(app.db, new Date(), offlineAfterMs)
    if (n > 0) log.info({ offline: n }, 'agents went offline')
  }, log)
}

export default fp(heartbeat, { name: 'heartbeat', dependencies: ['db'], fastify: '5.x', encapsulate: true })
