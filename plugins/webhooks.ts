import { createHmac, randomBytes } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import { BlockList, isIP } from 'node:net'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { dueWebhooks, webhookDelivered, webhookFailed, type DueWebhook } from '../db/webhooks.js'

export interface WebhookOptions {
  retryBaseMs: number
  maxAgeMs: number
  timeoutMs: number
  // Hosts and CIDRs webhooks may target; empty allows any.
  allow: string[]
  // How often due retries are looked for; 0 turns the dispatcher off.
  pollMs: number
}

export const newWebhookSecret = (): string => `whsec_${randomBytes(32).toString('base64url')}`

// The receiver checks: HMAC-SHA256(secret, `${t}.${raw body}`) equals v1, and t is recent (replay protection).
export function signWebhook (secret: string, body: string, timestamp: number): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')
  return `t=${timestamp},v1=${mac}`
}

// Exponential backoff with jitter: about base, 2×base, 4×base …, each between half and all of it, at most an hour.
export function retryDelayMs (baseMs: number, attempt: number, random = Math.random): number {
  const ceiling = Math.min(baseMs * 2 ** (attempt - 1), 3_600_000)
  return Math.round(ceiling / 2 + random() * ceiling / 2)
}

// Webhook targets: http(s) only, and within BUS_WEBHOOK_ALLOW when it is set.
export function createTargetPolicy (allow: string[]) {
  const hosts = new Set<string>()
  const subnets = new BlockList()
  for (const entry of allow) {
    const [address, prefix] = entry.split('/')
    const family = isIP(address)
    if (family !== 0 && prefix !== undefined) subnets.addSubnet(address, Number(prefix), family === 6 ? 'ipv6' : 'ipv4')
    else if (family !== 0) subnets.addAddress(address, family === 6 ? 'ipv6' : 'ipv4')
    else hosts.add(entry.toLowerCase())
  }
  const ipAllowed = (ip: string): boolean => subnets.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4')
  return {
    // Why a URL may not be used, or undefined when it may.
    async refuse (raw: string): Promise<string | undefined> {
      let url: URL
      try { url = new URL(raw) } catch { return 'is not a URL' }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be http or https'
      if (allow.length === 0) return undefined
      const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase()
      if (hosts.has(host)) return undefined
      const ips = isIP(host) !== 0 ? [host] : (await lookup(host, { all: true }).catch(() => [])).map((a) => a.address)
      if (ips.length > 0 && ips.every(ipAllowed)) return undefined
      return `host ${host} is not in BUS_WEBHOOK_ALLOW`
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    webhookPolicy: ReturnType<typeof createTargetPolicy>
  }
}

// At most this many webhook requests in flight; the rest wait in the database.
const CONCURRENCY = 32

const webhooks: FastifyPluginAsync<WebhookOptions> = async (app, { retryBaseMs, maxAgeMs, timeoutMs, allow, pollMs }) => {
  const { db, fanout } = app
  const log = app.log.child({ plugin: 'webhooks' })
  const policy = createTargetPolicy(allow)
  app.decorate('webhookPolicy', policy)
  if (pollMs <= 0) return

  const inFlight = new Map<string, Promise<void>>()
  const closing = new AbortController()
  let running: Promise<void> | undefined
  let again = false

  async function attempt (due: DueWebhook): Promise<void> {
    const body = JSON.stringify(due.message)
    const at = Date.now()
    let failure: string | undefined = await policy.refuse(due.url)
    if (failure === undefined) {
      try {
        const res = await fetch(due.url, {
          method: 'POST',
          body,
          redirect: 'manual',
          headers: {
            'content-type': 'application/json',
            'x-bus-signature': signWebhook(due.secret, body, Math.floor(at / 1000)),
            'x-bus-message-id': String(due.message.id)
          },
          signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), closing.signal])
        })
        await res.body?.cancel()
        if (res.status >= 200 && res.status < 300) {
          await webhookDelivered(db, due.message.id, due.recipientId, new Date().toISOString())
          return
        }
        failure = `status ${res.status}`
      } catch (err) {
        failure = (err as Error).name === 'TimeoutError' ? `no answer in ${timeoutMs} ms` : (err as Error).message
      }
    }
    if (closing.signal.aborted) return // not the receiver's fault: due again at the next start
    const attempts = due.attempts + 1
    const nextAt = at + retryDelayMs(retryBaseMs, attempts)
    const expired = nextAt > Date.parse(due.message.created_at) + maxAgeMs
    await webhookFailed(db, due.message.id, due.recipientId, expired ? null : new Date(nextAt).toISOString())
    log.warn({ message: due.message.id, attempts, failure, gaveUp: expired }, 'webhook attempt failed')
  }

  async function dispatch (): Promise<void> {
    do {
      again = false
      if (inFlight.size >= CONCURRENCY || closing.signal.aborted) return
      for (const due of await dueWebhooks(db, new Date().toISOString(), CONCURRENCY * 2)) {
        const key = `${due.message.id}:${due.recipientId}`
        if (inFlight.has(key)) continue
        if (inFlight.size >= CONCURRENCY) break
        inFlight.set(key, attempt(due)
          .catch((err: unknown) => { log.error({ err, message: due.message.id }, 'webhook bookkeeping failed') })
          .finally(() => { inFlight.delete(key); kick() }))
      }
    } while (again)
  }

  // Runs the dispatcher now, or once more right after the run in progress.
  function kick (): void {
    if (running) { again = true; return }
    running = dispatch()
      .catch((err: unknown) => { log.error({ err }, 'webhook dispatch failed') })
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
    await Promise.all(inFlight.values())
  })
}

export default fp(webhooks, { name: 'webhooks', dependencies: ['db', 'fanout'], fastify: '5.x' })
