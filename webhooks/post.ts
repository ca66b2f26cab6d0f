import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { isIP, type LookupFunction } from 'node:net'
import { Agent, buildConnector, request } from 'undici'
import { WebhookAddressRefused, WebhookTimeout } from '../errors.js'
import type { TargetPolicy } from './target.js'

export interface PostOptions {
  policy: TargetPolicy
  // The whole attempt, from connecting to the last byte of the answer.
  timeoutMs: number
}

// The HTTP side of webhooks: an undici Agent that checks every address it is about to connect to, so a name that
// resolved to a public address at registration and to 127.0.0.1 now (DNS rebinding) is refused where it counts.
export function createWebhookPoster ({ policy, timeoutMs }: PostOptions) {
  // Node asks this for every name it connects to (with all: true when it tries several addresses in turn).
  const lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, options, (err, address: string | LookupAddress[], family?: number) => {
      if (err) return callback(err, '', 0)
      const addresses = typeof address === 'string' ? [{ address, family: family ?? 0 }] : address
      for (const a of addresses) {
        const refused = policy.refuseAddress(a.address, hostname)
        if (refused !== undefined) return callback(new WebhookAddressRefused(refused), '', 0)
      }
      callback(null, address as string, family as number)
    })
  }
  const connect = buildConnector({ lookup, timeout: timeoutMs })
  const agent = new Agent({
    connect (options, callback) {
      // Node skips the lookup for a literal address, so those are checked here.
      const host = options.hostname.replace(/^\[|\]$/g, '')
      const refused = isIP(host) !== 0 ? policy.refuseAddress(host, host) : undefined
      if (refused !== undefined) return callback(new WebhookAddressRefused(refused), null)
      return connect(options, callback)
    }
  })

  return {
    // POSTs the body and resolves with the status once the whole answer has arrived; rejects on a refused address,
    // a network error, or when timeoutMs pass first. `signal` ends it early (the bus is closing).
    async post (url: string, body: string, headers: Record<string, string>, signal: AbortSignal): Promise<number> {
      signal.throwIfAborted()
      // A timer held here, not AbortSignal.timeout(): inside AbortSignal.any() Node 20 may garbage-collect that
      // signal before it fires (nodejs/node#57736), and a hanging receiver would then hold its slot for ever.
      const controller = new AbortController()
      const timer = setTimeout(() => controller.abort(new WebhookTimeout(timeoutMs)), timeoutMs)
      const stop = (): void => controller.abort(signal.reason)
      signal.addEventListener('abort', stop, { once: true })
      try {
        const res = await request(url, { method: 'POST', body, headers, dispatcher: agent, signal: controller.signal })
        // The answer's body is read (and dropped, past 128 KiB) under the same timer: a receiver that sends its
        // headers and then stalls is cut off like one that never answers.
        await res.body.dump({ limit: 128 * 1024, signal: controller.signal })
        return res.statusCode
      } finally {
        clearTimeout(timer)
        signal.removeEventListener('abort', stop)
      }
    },
    close: () => agent.close()
  }
}
