import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { createBus, type Bus } from '../bus/bus.js'

declare module 'fastify' {
  interface FastifyInstance {
    // The operations of the bus (bus/), which the routes call.
    bus: Bus
  }
}

export interface BusPluginOptions {
  maxMessageBytes: number
  // A waiting reader reads again this often even when nothing woke it (bus/bus.ts).
  recheckMs: number
}

const bus: FastifyPluginAsync<BusPluginOptions> = async (app, { maxMessageBytes, recheckMs }) => {
  app.decorate('bus', createBus({
    db: app.db,
    write: app.write,
    notifier: app.fanout,
    readers: app.readers,
    cache: app.messageCache,
    maxMessageBytes,
    recheckMs,
    exclusively: app.storage.exclusively,
    // The webhooks plugin builds the target policy from its own options and is registered after this one; it is
    // asked only when an agent sets a webhook, long after both are ready.
    refuseWebhook: async (url) => app.webhookPolicy.refuse(url)
  }))
}

export default fp(bus, { name: 'bus', dependencies: ['db', 'fanout'], fastify: '5.x' })
