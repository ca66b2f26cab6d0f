import { setMaxListeners } from 'node:events'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Overdue } from '../db/deadlines.js'
import { claimWebhooks, postponeWebhooks, releaseWebhooks, webhookDelivered, webhookFailed, webhookOf, type DueWebhook } from '../db/webhooks.js'
import { Breakers } from '../webhooks/breaker.js'
import { createWebhookPoster } from '../webhooks/post.js'
import { legacySignature, signWebhook } from '../webhooks/sign.js'
import { createTargetPolicy, type TargetPolicy } from '../webhooks/target.js'

export interface WebhookOptions {
  retryBaseMs: number
  maxAgeMs: number
  timeoutMs: number
  // Hosts, addresses and CIDRs webhooks may target; empty allows any public address.
  allow: string[]
  // Allow loopback, private, unique-local and CGNAT addresses too.
  allowPrivate: boolean
  // Attempts in flight for one recipient at most, so that one slow endpoint cannot take every slot.
  perRecipient: number
  // Failures in a row that open a recipient's circuit, and its first cool-down (doubling while probes fail).
  breakerFailures: number
  breakerCooldownMs: number
  // How often due retries are looked for; 0 turns the dispatcher off.
  pollMs: number
}

// Exponential backoff with jitter: about base, 2×base, 4×base …, each between half and all of it, at most an hour.
export function retryDelayMs (baseMs: number, attempt: number, random = Math.random): number {
  const ceiling = Math.min(baseMs * 2 ** (attempt - 1), 3_600_000)
  return Math.round(ceiling / 2 + random() * ceiling / 2)
}

declare module 'fastify' {
  interface FastifyInstance {
    webhookPolicy: TargetPolicy
    // Tells the senders of these messages, by their webhooks, that a recipient missed its ack deadline.
    pushOverdue: (overdue: Overdue[]) => void
  }
}

// An overdue notice is tried this many times, this far apart, by the node that found it; it is not stored for retries
// as messages are (the sender's GET /messages/{id} shows it for good).
const OVERDUE_ATTEMPTS = 3

// At most this many webhook requests in flight; the rest wait in the database.
const CONCURRENCY = 32
// A circuit's cool-down doubles while its probes fail, up to this.
const MAX_COOLDOWN_MS = 3_600_000

const webhooks: FastifyPluginAsync<WebhookOptions> = async (app, options) => {
  const { retryBaseMs, maxAgeMs, timeoutMs, allow, allowPrivate, perRecipient, breakerFailures, breakerCooldownMs, pollMs } = options
  const { db, fanout } = app
  const log = app.log.child({ plugin: 'webhooks' })
  const policy = createTargetPolicy({ allow, allowPrivate })
  app.decorate('webhookPolicy', policy)
  if (pollMs <= 0) {
    app.decorate('pushOverdue', () => {})
    return
  }

  const poster = createWebhookPoster({ policy, timeoutMs })
  const counted = app.hasDecorator('telemetry') ? app.telemetry.webhook : () => {}
  // How long a claimed attempt is this node's alone: longer than an attempt can take, so that only a node that died
  // (or hangs) loses its attempts to another.
  const leaseMs = 2 * timeoutMs + 1000
  const breakers = new Breakers({ failures: breakerFailures, cooldownMs: breakerCooldownMs, maxCooldownMs: Math.max(breakerCooldownMs, MAX_COOLDOWN_MS) })
  const inFlight = new Map<string, Promise<void>>()
  // Per recipient with attempts in flight: how many, and how many it may have (one while its circuit is probing).
  const slots = new Map<number, { count: number, limit: number }>()
  const closing = new AbortController()
  // Every attempt in flight listens to it; more than Node's default of 10 is expected, not a leak.
  setMaxListeners(CONCURRENCY + 1, closing.signal)
  let running: Promise<void> | undefined
  let again = false

  async function attempt (due: DueWebhook): Promise<void> {
    const body = JSON.stringify(due.message)
    const at = Date.now()
    const id = String(due.message.id)
    const timestamp = Math.floor(at / 1000)
    let failure = policy.refuseUrl(due.url)
    if (failure === undefined) {
      try {
        const status = await poster.post(due.url, body, {
          'content-type': 'application/json',
          ...signWebhook(due.secret, id, timestamp, body),
          // Deprecated, for receivers written before the standard headers.
          'x-bus-signature': legacySignature(due.secret, timestamp, body),
          'x-bus-message-id': id,
          'x-bus-event': 'message'
        }, closing.signal)
        if (status >= 200 && status < 300) {
          await webhookDelivered(db, due.message.id, due.recipientId, new Date().toISOString())
          counted('message', 'delivered')
          if (breakers.success(due.recipientId, due.url) === 'closed') log.info({ agent: due.recipient }, 'webhook circuit closed: the endpoint answers again')
          return
        }
        failure = `status ${status}`
      } catch (err) {
        failure = (err as Error).message
      }
    }
    // Not the receiver's fault: given back, due at once for whichever node runs next.
    if (closing.signal.aborted) return releaseWebhooks(db, [{ seq: due.message.id, recipientId: due.recipientId }], due.leaseUntil, new Date().toISOString())
    const attempts = due.attempts + 1
    const nextAt = at + retryDelayMs(retryBaseMs, attempts)
    const expired = nextAt > Date.parse(due.message.created_at) + maxAgeMs
    await webhookFailed(db, due.message.id, due.recipientId, due.leaseUntil, expired ? null : new Date(nextAt).toISOString())
    counted('message', expired ? 'expired' : 'failed')
    // The host, never the URL: a URL stored before credentials were refused may still carry some.
    log.warn({ message: due.message.id, agent: due.recipient, host: hostOf(due.url), attempts, failure, gaveUp: expired }, 'webhook attempt failed')
    const now = Date.now()
    const transition = breakers.failure(due.recipientId, due.url, now)
    if (transition === undefined) return
    const until = breakers.openUntil(due.recipientId) as number
    await postponeWebhooks(db, due.recipientId, due.url, new Date(until).toISOString())
    // Logged when it opens; the re-openings after failed probes in between would only repeat it.
    if (transition === 'opened') {
      log.warn({ agent: due.recipient, host: hostOf(due.url), failures: breakerFailures, coolDownMs: until - now }, 'webhook circuit opened: no attempts until it cools down')
    }
  }

  // `overdue` notices: signed as messages are, with their own id, and X-Bus-Event: overdue.
  async function pushOverdue (overdue: Overdue): Promise<void> {
    const target = await webhookOf(db, overdue.senderId)
    if (target === undefined) return
    const body = JSON.stringify({ event: 'overdue', message_id: overdue.seq, agent: overdue.agent, ack_by: overdue.ackBy })
    const id = `overdue-${overdue.seq}-${overdue.agent}`
    let failure: string | undefined
    for (let attempt = 1; attempt <= OVERDUE_ATTEMPTS && !closing.signal.aborted; attempt++) {
      failure = policy.refuseUrl(target.url)
      if (failure !== undefined) break
      try {
        const timestamp = Math.floor(Date.now() / 1000)
        const status = await poster.post(target.url, body, {
          'content-type': 'application/json', 'x-bus-event': 'overdue', ...signWebhook(target.secret, id, timestamp, body)
        }, closing.signal)
        if (status >= 200 && status < 300) return counted('overdue', 'delivered')
        failure = `status ${status}`
      } catch (err) {
        failure = (err as Error).message
      }
      counted('overdue', attempt === OVERDUE_ATTEMPTS ? 'expired' : 'failed')
      await sleep(retryDelayMs(retryBaseMs, attempt), undefined, { signal: closing.signal }).catch(() => {})
    }
    log.warn({ message: overdue.seq, agent: target.name, host: hostOf(target.url), failure }, 'overdue webhook not delivered')
  }
  const notices = new Set<Promise<void>>()
  app.decorate('pushOverdue', (overdue: Overdue[]) => {
    for (const o of overdue) {
      const notice = pushOverdue(o).catch((err: unknown) => { log.error({ err }, 'overdue webhook failed') }).finally(() => notices.delete(notice))
      notices.add(notice)
    }
  })

  function start (due: DueWebhook, key: string, limit: number): void {
    const slot = slots.get(due.recipientId) ?? { count: 0, limit }
    slot.count++
    slot.limit = limit
    slots.set(due.recipientId, slot)
    inFlight.set(key, attempt(due)
      .catch((err: unknown) => { log.error({ err, message: due.message.id }, 'webhook bookkeeping failed') })
      .finally(() => {
        inFlight.delete(key)
        if (--slot.count === 0) slots.delete(due.recipientId)
        kick()
      }))
  }

  // Starts due attempts until every slot is taken or nothing is due. Recipients at their own limit, or with an open
  // circuit, are left out of the query, so their backlog cannot fill the page and hide everyone else's rows.
  async function fill (): Promise<void> {
    for (;;) {
      if (inFlight.size >= CONCURRENCY || closing.signal.aborted) return
      const now = Date.now()
      const busy = [...slots].filter(([, s]) => s.count >= s.limit).map(([recipientId]) => recipientId)
      let started = 0
      // Only as many as there are free slots: a claimed attempt waits for its lease to end before another node may
      // take it, so claiming more than can start would delay them.
      const leaseUntil = new Date(now + leaseMs).toISOString()
      const claimed = await claimWebhooks(app.storage, new Date(now).toISOString(), leaseUntil, CONCURRENCY - inFlight.size, { busy, open: breakers.open(now) })
      const overflow: Array<{ seq: number, recipientId: number }> = []
      for (const due of claimed) {
        const key = `${due.message.id}:${due.recipientId}`
        const state = breakers.state(due.recipientId, due.url, now)
        const limit = state === 'open' ? 0 : state === 'probe' ? 1 : perRecipient
        if (inFlight.has(key)) continue
        // Claimed beyond what the recipient may have in flight (several of its rows on one page): given back.
        if ((slots.get(due.recipientId)?.count ?? 0) >= limit) {
          overflow.push({ seq: due.message.id, recipientId: due.recipientId })
          continue
        }
        start(due, key, limit)
        started++
      }
      await releaseWebhooks(db, overflow, leaseUntil, new Date(now).toISOString())
      // Nothing new on this page: the rest is in flight or waits for a recipient's slot.
      if (started === 0) return
    }
  }

  async function dispatch (): Promise<void> {
    do {
      again = false
      await fill()
    } while (again)
  }

  // Runs the dispatcher now, or once more right after the run in progress.
  function kick (): void {
    if (running) { again = true; return }
    running = dispatch()
      // A database that is unavailable is logged once by the db plugin, not four times a second here.
      .catch((err: unknown) => { if (app.storage.describeError(err) === undefined) log.error({ err }, 'webhook dispatch failed') })
      .finally(() => { running = undefined })
  }

  let timer: NodeJS.Timeout | undefined
  let unsubscribe: (() => void) | undefined
  app.addHook('onReady', async () => {
    unsubscribe = fanout.subscribe(0, (event) => { if (event.kind === 'message' && event.webhooks) kick() })
    timer = setInterval(kick, pollMs).unref()
    kick()
  })
  app.addHook('onClose', async () => {
    clearInterval(timer)
    unsubscribe?.()
    closing.abort()
    await running
    await Promise.all([...inFlight.values(), ...notices])
    await poster.close()
  })
}

function hostOf (url: string): string | undefined {
  try { return new URL(url).host } catch { return undefined }
}

export default fp(webhooks, { name: 'webhooks', dependencies: ['db', 'fanout'], fastify: '5.x' })
