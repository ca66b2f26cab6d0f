import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { startLoop } from './loop.js'

export interface HeartbeatOptions {
  offlineAfterMs: number
  // How often to sweep; 0 disables the loop (tests call app.bus.sweepOffline directly).
  intervalMs: number
}

const heartbeat: FastifyPluginAsync<HeartbeatOptions> = async (app, { offlineAfterMs, intervalMs }) => {
  const log = app.log.child({ plugin: 'heartbeat' })
  startLoop(app, intervalMs, async () => {
    const names = await app.bus.sweepOffline(new Date(), offlineAfterMs)
    if (names.length > 0) log.info({ offline: names.length }, 'agents went offline')
  }, log)
}

export default fp(heartbeat, { name: 'heartbeat', dependencies: ['bus'], fastify: '5.x', encapsulate: true })
