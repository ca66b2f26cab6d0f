import type { FastifyPluginAsync } from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import fp from 'fastify-plugin'
import client, { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { agentStats } from '../db/agents.js'
import { listQueues } from '../db/queues.js'
import { messageStats } from '../db/stats.js'
import type { StorageObserver } from '../db/storage.js'
import { webhookBacklog } from '../db/webhooks.js'
import type { BusObserver } from '../bus/observer.js'

declare module 'fastify' {
  interface FastifyInstance {
    // (fastify-metrics has app.metrics.)
    telemetry: Telemetry
  }
}

export interface Telemetry {
  // This app's own registry: several buses in one process (the tests) keep their figures apart.
  readonly registry: Registry
  readonly bus: BusObserver
  readonly storage: StorageObserver
  // One webhook attempt (plugins/webhooks.ts): delivered (2xx), failed (to be retried) or expired (given up).
  webhook: (event: 'message' | 'overdue', outcome: 'delivered' | 'failed' | 'expired') => void
  // Reads the figures the database holds (the same on every node of a cluster): run before each scrape.
  refresh: () => Promise<void>
}

// Prometheus metrics (GET /metrics, routes/metrics.ts). Two kinds, named apart in the README:
// - what this process did since it started: `_total` counters, histograms, and its open readers. Each node of a
//   cluster counts its own; a restart starts them at zero, which rate() and increase() read as a counter reset.
// - what the database holds (agents, stored and unread messages, queue depths, webhook backlog, size): read at each
//   scrape, so they are right across restarts, and every node of a cluster reports the same figures.
// Registered before the database, whose group commit reports its batches here.
// Queue names are labels, and any agent may create queues: the deepest MAX_QUEUE_SERIES have series of their own, the
// rest are summed under queue="_other" (no queue can be named so), so that a flood of queues cannot flood a scrape.
const MAX_QUEUE_SERIES = 100
const QUEUE_STATES = ['available', 'delayed', 'leased', 'dead'] as const

const metrics: FastifyPluginAsync = async (app) => {
  const registry = new Registry()
  const registers = [registry]

  // Process and Node series (process_*, nodejs_*), and one request-duration histogram by route, method and status.
  // A CommonJS module: its plugin is its `default` export.
  await app.register(fastifyMetrics.default, {
    endpoint: null,
    promClient: client,
    clearRegisterOnInit: false,
    defaultMetrics: { enabled: true, register: registry },
    routeMetrics: {
      enabled: { histogram: true, summary: false },
      // A stream's time is how long its reader stayed (agent_bus_open_readers counts them), not a latency.
      routeBlacklist: ['/metrics', '/stream', '/dashboard/events'],
      overrides: {
        histogram: {
          name: 'agent_bus_http_request_duration_seconds',
          help: 'Time to answer an HTTP request, by route, method and status (a long-poll: with its wait; streams are left out).',
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
          registers
        },
        // Made even when off: kept out of every registry, the global one included, where a second app would clash.
        summary: { registers: [] }
      }
    }
  })

  const stored = new Counter({ name: 'agent_bus_messages_stored_total', help: 'Messages this node stored, by kind (direct, broadcast, topic, queue).', labelNames: ['kind'], registers })
  const delivered = new Counter({ name: 'agent_bus_deliveries_total', help: 'Messages this node handed to agents for the first time, by path (inbox, stream, webhook); claim: every lease of a queue message.', labelNames: ['path'], registers })
  const acked = new Counter({ name: 'agent_bus_acks_total', help: 'Messages acknowledged on this node: copies marked read (message) and queue messages acked (queue).', labelNames: ['kind'], registers })
  const readers = new Gauge({ name: 'agent_bus_open_readers', help: 'Readers open on this node: SSE streams, inbox long-polls, claims waiting for work.', labelNames: ['kind'], registers })
  const attempts = new Counter({ name: 'agent_bus_webhook_attempts_total', help: 'Webhook POSTs this node made, by event (message, overdue) and outcome (delivered, failed, expired).', labelNames: ['event', 'outcome'], registers })
  const batch = new Histogram({ name: 'agent_bus_commit_batch_writes', help: 'Writes per group commit (on PostgreSQL, the batches of sends).', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers })
  const commit = new Histogram({ name: 'agent_bus_commit_duration_seconds', help: 'Time a group commit took, from BEGIN to the end of COMMIT (the fsync included).', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers })
  // Registered once the engine is known to have a cluster (PostgreSQL).
  const notifications = new Counter({ name: 'agent_bus_notifications_received_total', help: 'Notifications from other nodes of the cluster that this node received.', registers: [] })
  // Every label seen from the start, so that a rate over a kind not used yet is 0, not absent.
  for (const kind of ['direct', 'broadcast', 'topic', 'queue']) stored.inc({ kind }, 0)
  for (const path of ['inbox', 'stream', 'claim', 'webhook']) delivered.inc({ path }, 0)
  for (const kind of ['message', 'queue']) acked.inc({ kind }, 0)
  for (const kind of ['stream', 'poll', 'claim']) readers.set({ kind }, 0)

  // From the database, at each scrape.
  const up = new Gauge({ name: 'agent_bus_database_up', help: '1 if the database answers and takes writes (as GET /health), else 0 (when it cannot be read, the database figures are those of the scrape before).', registers })
  const info = new Gauge({ name: 'agent_bus_info', help: 'The engine and schema version of the database, as labels; always 1.', labelNames: ['engine', 'schema_version'], registers })
  const agents = new Gauge({ name: 'agent_bus_agents', help: 'Agents by state: registered, and online (of the registered).', labelNames: ['state'], registers })
  const messages = new Gauge({ name: 'agent_bus_messages', help: 'Messages in the database by priority, archived ones included (every node reports the same).', labelNames: ['priority'], registers })
  const unread = new Gauge({ name: 'agent_bus_unread_copies', help: 'Copies of messages that their registered recipients have not acknowledged.', registers })
  const archived = new Gauge({ name: 'agent_bus_archived_messages', help: 'Messages moved to the archive.', registers })
  const size = new Gauge({ name: 'agent_bus_database_size_bytes', help: 'Bytes the database takes.', registers })
  const backlog = new Gauge({ name: 'agent_bus_webhook_pending', help: 'Webhook deliveries waiting for an attempt or a retry.', registers })
  const queued = new Gauge({ name: 'agent_bus_queue_messages', help: `Messages of each work queue by state: available, delayed, leased, dead (the ${MAX_QUEUE_SERIES} deepest queues; the rest summed as queue="_other").`, labelNames: ['queue', 'state'], registers })

  const bus: BusObserver = {
    stored: (kind) => { stored.inc({ kind }) },
    delivered: (path, count) => { if (count > 0) delivered.inc({ path }, count) },
    acked: (kind, count) => { if (count > 0) acked.inc({ kind }, count) },
    opened (kind) {
      readers.inc({ kind })
      let open = true
      return () => {
        if (open) readers.dec({ kind })
        open = false
      }
    }
  }

  async function refresh (): Promise<void> {
    const { db, storage } = app
    const now = new Date().toISOString()
    try {
      const [a, m, bytes, pending, queues] = await Promise.all([agentStats(db), messageStats(db), storage.size(), webhookBacklog(db), listQueues(db, now)])
      agents.set({ state: 'registered' }, a.total)
      agents.set({ state: 'online' }, a.online)
      for (const [priority, count] of Object.entries(m.by_priority)) messages.set({ priority }, count)
      unread.set(m.unread)
      archived.set(m.archived)
      size.set(bytes)
      backlog.set(pending)
      queued.reset()
      const depth = (q: typeof queues[number]) => q.available + q.delayed + q.leased + q.dead
      const deepest = queues.sort((a, b) => depth(b) - depth(a) || a.name.localeCompare(b.name))
      for (const q of deepest.slice(0, MAX_QUEUE_SERIES)) for (const state of QUEUE_STATES) queued.set({ queue: q.name, state }, q[state])
      const rest = deepest.slice(MAX_QUEUE_SERIES)
      if (rest.length > 0) for (const state of QUEUE_STATES) queued.set({ queue: '_other', state }, rest.reduce((sum, q) => sum + q[state], 0))
      // A database that reads but cannot keep a write (disk full, file deleted, read-only) is down for the bus.
      up.set(storage.problem() === undefined ? 1 : 0)
    } catch (err) {
      if (storage.describeError(err) === undefined) throw err
      up.set(0)
    }
  }

  app.decorate('telemetry', {
    registry,
    bus,
    storage: {
      commit (writes, seconds) {
        batch.observe(writes)
        commit.observe(seconds)
      },
      notification: () => { notifications.inc() }
    },
    webhook: (event, outcome) => {
      attempts.inc({ event, outcome })
      if (event === 'message' && outcome === 'delivered') delivered.inc({ path: 'webhook' })
    },
    refresh
  } satisfies Telemetry)

  app.addHook('onReady', async () => {
    info.set({ engine: app.storage.engine, schema_version: app.storage.schemaVersion }, 1)
    if (app.storage.cluster !== undefined) registry.registerMetric(notifications)
    // The pool's figures, where the engine has one.
    const pool = app.storage.pool
    if (pool === undefined) return
    new Gauge({ // eslint-disable-line no-new
      name: 'agent_bus_db_pool_connections',
      help: 'Connections of this node\'s database pool, by state: busy (running a query) and idle.',
      labelNames: ['state'],
      registers,
      collect () {
        const { total, idle } = pool()
        this.set({ state: 'busy' }, total - idle)
        this.set({ state: 'idle' }, idle)
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'agent_bus_db_pool_waiting',
      help: 'Queries of this node waiting for a free connection of its pool.',
      registers,
      collect () { this.set(pool().waiting) }
    })
  })
}

export default fp(metrics, { name: 'metrics', fastify: '5.x' })
