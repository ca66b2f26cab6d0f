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

// Marks offline every agent silent for longer than ttlMs, except those with an open stream; returns their names.
export async function sweepStaleAgents (db: Kysely<Database>, now: Date, ttlMs: number, connected: number[] = []): Promise<string[]> {
  return markOfflineBefore(db, new Date(now.getTime() - ttlMs).toISOString(), connected)
}

const heartbeat: FastifyPluginAsync<HeartbeatOptions> = async (app, { offlineAfterMs, intervalMs }) => {
  const log = app.log.child({ plugin: 'heartbeat' })
  startLoop(app, intervalMs, async () => {
    const names = await sweepStaleAgents(app.db, new Date(), offlineAfterMs, app.fanout.connectedAgents())
    for (const agent of names) app.fanout.publish({ kind: 'presence', agent, status: 'offline' })
    if (names.length > 0) log.info({ offline: names.length }, 'agents went offline')
  }, log)
}

export default fp(heartbeat, { name: 'heartbeat', dependencies: ['db', 'fanout'], fastify: '5.x', encapsulate: true })
