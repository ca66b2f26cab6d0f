import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { fastifySSE } from '@fastify/sse'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { agentStats } from '../db/agents.js'
import { agentsOverview, failingWebhooks, latestMessages, Traffic } from '../db/overview.js'
import { listQueues } from '../db/queues.js'
import { messageStats } from '../db/stats.js'
import { listTopics } from '../db/topics.js'
import { webhookBacklog } from '../db/webhooks.js'

export interface DashboardOptions {
  // How often an open dashboard is refreshed when no event asks for it sooner (reads, acks and last-seen times
  // publish no event).
  refreshMs?: number
}

// The files of the page: dashboard/ in the repository (one folder up from routes/, two from dist/routes/), and
// uPlot's build from node_modules. Read once; the page needs no build step.
const here = fileURLToPath(new URL('.', import.meta.url))
const folder = ['../dashboard/', '../../dashboard/'].map((up) => fileURLToPath(new URL(up, `file://${here}`))).find((dir) => existsSync(dir))
const require = createRequire(import.meta.url)
const ASSETS: Record<string, { type: string, path: string }> = {
  'dashboard.js': { type: 'text/javascript; charset=utf-8', path: `${folder}dashboard.js` },
  'dashboard.css': { type: 'text/css; charset=utf-8', path: `${folder}dashboard.css` },
  'uPlot.js': { type: 'text/javascript; charset=utf-8', path: require.resolve('uplot/dist/uPlot.iife.min.js') },
  'uPlot.css': { type: 'text/css; charset=utf-8', path: require.resolve('uplot/dist/uPlot.min.css') }
}

// One snapshot of the whole bus for the operator: metadata, never a message body.
async function snapshot (app: FastifyInstance, traffic: Traffic, startedAt: number) {
  const { db, storage } = app
  const now = Date.now()
  const [agents, counts, messages, bytes, latest, webhooksPending, failing, topics, queues, perMinute] = await Promise.all([
    agentsOverview(db), agentStats(db), messageStats(db), storage.size(), latestMessages(db, 25), webhookBacklog(db),
    failingWebhooks(db, 20), listTopics(db, 0), listQueues(db, new Date(now).toISOString()), traffic.read(db, now)
  ])
  return {
    at: new Date(now).toISOString(),
    bus: { engine: storage.engine, schema_version: storage.schemaVersion, size_bytes: bytes, uptime_s: Math.round((now - startedAt) / 1000) },
    totals: { agents: counts.total, online: counts.online, messages: messages.total, unread: messages.unread, archived: messages.archived, webhooks_pending: webhooksPending },
    agents: agents.agents,
    more_agents: agents.more,
    traffic: perMinute,
    latest,
    failing_webhooks: failing,
    topics: topics.map(({ name, subscribers }) => ({ name, subscribers })),
    queues: queues.map(({ name, available, delayed, leased, dead }) => ({ name, available, delayed, leased, dead }))
  }
}
type Snapshot = Awaited<ReturnType<typeof snapshot>>

// GET /dashboard: a page for the people who run the bus (dashboard/). Its data comes from GET /dashboard/events, an
// SSE stream of snapshots for the admin or metrics token (as /metrics). A snapshot is made when the bus publishes an
// event (a message, a presence change, queue work), at most every MIN_GAP_MS, and every refreshMs otherwise; one
// snapshot serves every open dashboard of this node, and none is made while no dashboard is open.
const MIN_GAP_MS = 250
// A viewer that takes no snapshot for this long is cut off (its page reconnects).
const STALL_MS = 30_000

const dashboard: FastifyPluginAsync<DashboardOptions> = async (app, { refreshMs = 5000 }) => {
  await app.register(fastifySSE, { heartbeatInterval: 15_000 })
  const startedAt = Date.now()
  let traffic = new Traffic()
  interface Viewer { show: (made: Snapshot) => void, end: () => void }
  const viewers = new Set<Viewer>()
  let latest: Snapshot | undefined
  let making: Promise<void> | undefined
  let again = false
  let gap: NodeJS.Timeout | undefined
  let timer: NodeJS.Timeout | undefined
  let unsubscribe: (() => void) | undefined
  let closing = false

  // Makes one snapshot for every viewer; asked again meanwhile, makes one more after it.
  function refresh (): void {
    if (making !== undefined || gap !== undefined) {
      again = true
      return
    }
    making = snapshot(app, traffic, startedAt)
      .then((made) => {
        latest = made
        for (const viewer of viewers) viewer.show(made)
      }, (err: unknown) => {
        if (app.storage.describeError(err) === undefined) app.log.error({ err }, 'dashboard snapshot failed')
      })
      .finally(() => {
        making = undefined
        if (closing) return
        gap = setTimeout(() => {
          gap = undefined
          if (again && viewers.size > 0) {
            again = false
            refresh()
          }
        }, MIN_GAP_MS)
        gap.unref()
      })
  }

  function watch (viewer: Viewer): () => void {
    viewers.add(viewer)
    if (viewers.size === 1) {
      // Process-wide (agent 0): messages, presence and queue events of every agent; and the bus closing.
      unsubscribe = app.fanout.subscribe(0, (event) => {
        if (event.kind === 'shutdown') for (const open of viewers) open.end()
        else if (event.kind !== 'receipt' && event.kind !== 'overdue') refresh()
      })
      timer = setInterval(refresh, refreshMs)
      timer.unref()
      latest = undefined
      // Counted afresh: while no dashboard was open, nothing kept up with what was stored.
      traffic = new Traffic()
    }
    if (latest !== undefined) viewer.show(latest)
    else refresh()
    return () => {
      viewers.delete(viewer)
      if (viewers.size > 0) return
      unsubscribe?.()
      clearInterval(timer)
    }
  }
  app.addHook('onClose', async () => {
    closing = true
    clearInterval(timer)
    clearTimeout(gap)
    await making
  })

  const page = readFileSync(`${folder}index.html`)
  app.get('/dashboard', { schema: { hide: true }, logLevel: 'warn' }, async (_request, reply) => reply.type('text/html; charset=utf-8').send(page))
  app.get<{ Params: { file: string } }>('/dashboard/:file', { schema: { hide: true }, logLevel: 'warn' }, async (request, reply) => {
    const asset = Object.hasOwn(ASSETS, request.params.file) ? ASSETS[request.params.file] : undefined
    if (asset === undefined) return reply.code(404).send({ statusCode: 404, code: 'BUS_ROUTE_NOT_FOUND', error: 'Not Found', message: `no file ${request.params.file} in the dashboard` })
    return reply.type(asset.type).header('cache-control', 'no-cache').send(readFileSync(asset.path))
  })

  app.get('/dashboard/events', { sse: 'only', onRequest: app.requireOperator, schema: { hide: true }, exposeHeadRoute: false }, async (request, reply) => {
    let wake: (() => void) | undefined
    let pending: Snapshot | undefined
    let closed = false
    // Ends the loop, and a send stuck on a reader that stopped reading (or the bus closing under it) with it.
    let sending = false
    const end = (): void => {
      closed = true
      wake?.()
      if (sending) reply.raw.destroy()
    }
    const stop = watch({
      show (made) {
        pending = made
        wake?.()
      },
      end
    })
    reply.sse.onClose(end)
    if (reply.raw.destroyed) end()
    try {
      reply.sse.keepAlive()
      reply.sse.sendHeaders()
      reply.raw.flushHeaders()
      while (!closed) {
        if (pending === undefined) await new Promise<void>((resolve) => { wake = resolve })
        wake = undefined
        // Only the newest: a viewer that fell behind skips the snapshots in between.
        const next = pending
        pending = undefined
        if (next === undefined || closed) continue
        sending = true
        let timer: NodeJS.Timeout | undefined
        const stalled = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), STALL_MS) })
        const sent = await Promise.race([reply.sse.send({ event: 'snapshot', data: next }).then(() => true), stalled])
        clearTimeout(timer)
        sending = false
        if (!sent) {
          request.log.warn('dashboard reader too slow: closing')
          reply.raw.destroy()
          break
        }
      }
    } finally {
      stop()
      reply.sse.close()
    }
  })
}

export default dashboard
