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
  // How often the backstop behind notifications runs (bus/backstop.ts): notifications only wake readers, so a lost
  // one (a node's LISTEN connection dropped) costs at most this much latency, never a message. 0: never (tests).
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
    exclusively: app.storage.exclusively,
    // The webhooks plugin builds the target policy from its own options and is registered after this one; it is
    // asked only when an agent sets a webhook, long after both are ready.
    refuseWebhook: async (url) => app.webhookPolicy.refuse(url)
  }))

  if (recheckMs > 0) {
    let round: Promise<void> | undefined
    const timer = setInterval(() => {
      // A round still under way (a slow database) is not doubled.
      round ??= app.bus.recheckReaders()
        .catch((err: unknown) => app.log.warn({ err }, 'rechecking readers failed'))
        .finally(() => { round = undefined })
    }, recheckMs)
    timer.unref()
    app.addHook('onClose', async () => {
      clearInterval(timer)
      await round
    })
  }
}

export default fp(bus, { name: 'bus', dependencies: ['db', 'fanout'], fastify: '5.x' })
