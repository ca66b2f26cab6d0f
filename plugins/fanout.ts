import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { createClusterNotifier } from '../bus/cluster.js'
import { createLocalNotifier, Readers, type Notifier } from '../bus/events.js'

declare module 'fastify' {
  interface FastifyInstance {
    fanout: Notifier
    // The open streams and long-polls on this node, capped per agent.
    readers: Readers
  }
}

export interface FanoutOptions {
  // Streams and long-polls one agent may hold open on this node; one more ends its oldest.
  maxReadersPerAgent: number
}

const fanout: FastifyPluginAsync<FanoutOptions> = async (app, { maxReadersPerAgent }) => {
  // One process reaches its own readers; nodes that share a database also reach each other's (bus/cluster.ts).
  const local = createLocalNotifier()
  const cluster = app.storage.cluster
  const notifier = cluster === undefined ? local : createClusterNotifier(local, cluster)
  app.decorate('fanout', notifier)
  app.decorate('readers', new Readers(maxReadersPerAgent))
  // Open streams and long-polls would keep close() waiting forever: end them first.
  app.addHook('preClose', async () => { notifier.publish({ kind: 'shutdown' }) })
}

export default fp(fanout, { name: 'fanout', dependencies: ['db'], fastify: '5.x' })
