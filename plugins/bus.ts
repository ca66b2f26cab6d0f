import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
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
  // How often the sweep runs (bus/sweep.ts: ended leases, passed ack deadlines). 0: never (tests call app.bus.sweep()).
  sweepMs: number
}

// Runs work on a timer, never two rounds at once (a slow database), and waits for the round under way on close.
function every (app: FastifyInstance, ms: number, what: string, work: () => Promise<unknown>): void {
  let round: Promise<void> | undefined
  const timer = setInterval(() => {
    round ??= work()
      .then(() => undefined, (err: unknown) => {
        // An unavailable database is logged once by the db plugin, not every round here.
        if (app.storage.describeError(err) === undefined) app.log.warn({ err }, `${what} failed`)
      })
      .finally(() => { round = undefined })
  }, ms)
  timer.unref()
  app.addHook('onClose', async () => {
    clearInterval(timer)
    await round
  })
}

const bus: FastifyPluginAsync<BusPluginOptions> = async (app, { maxMessageBytes, recheckMs, sweepMs }) => {
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
    refuseWebhook: async (url) => app.webhookPolicy.refuse(url),
    claimRows: app.storage.claimRows,
    observer: app.hasDecorator('telemetry') ? app.telemetry.bus : undefined
  }))

  if (recheckMs > 0) every(app, recheckMs, 'rechecking readers', app.bus.recheckReaders)
  if (sweepMs > 0) {
    every(app, sweepMs, 'the sweep', async () => {
      const { overdue } = await app.bus.sweep()
      // Senders with a webhook hear of missed deadlines there too; the node that found them tells them, once.
      if (overdue.length > 0 && app.hasDecorator('pushOverdue')) app.pushOverdue(overdue)
    })
  }
}

export default fp(bus, { name: 'bus', dependencies: ['db', 'fanout'], fastify: '5.x' })
