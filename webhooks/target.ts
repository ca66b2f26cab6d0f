import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { classify, parseAddress, parseRange, inRange, embeddedIPv4, PRIVATE_KINDS, type Range } from './address.js'

export interface TargetOptions {
  // Hosts, addresses and CIDRs from BUS_WEBHOOK_ALLOW. When any is given, webhooks may target only these; a host
  // named here may resolve to any address (the operator vouches for the name), other names only to listed ranges.
  allow: string[]
  // BUS_WEBHOOK_ALLOW_PRIVATE: loopback, private, unique-local and CGNAT addresses are allowed.
  allowPrivate: boolean
}

export type TargetPolicy = ReturnType<typeof createTargetPolicy>

// Where webhooks may go. A webhook is a request the bus makes on a stranger's behalf, so by default it may not reach
// what only the bus can reach: its own host, the networks behind it, the cloud metadata service.
export function createTargetPolicy ({ allow, allowPrivate }: TargetOptions) {
  const hosts = new Set<string>()
  const ranges: Range[] = []
  for (const entry of allow) {
    const range = parseRange(entry)
    if (range) ranges.push(range)
    else hosts.add(entry.toLowerCase())
  }
  const listed = (ip: Uint8Array): boolean => ranges.some((r) => inRange(ip, r)) ||
    (embeddedIPv4(ip) !== undefined && ranges.some((r) => inRange(embeddedIPv4(ip) as Uint8Array, r)))

  // Why the bus may not connect to this address for this host, or undefined when it may.
  function refuseAddress (address: string, host: string): string | undefined {
    if (hosts.has(host.toLowerCase())) return undefined
    const ip = parseAddress(address)
    if (!ip) return `address ${address} is not an IP address`
    if (listed(ip)) return undefined
    const named = host === address ? `host ${host}` : `host ${host} resolves to ${address}, which`
    if (allow.length > 0) return `${named} is not in BUS_WEBHOOK_ALLOW`
    const kind = classify(ip)
    if (kind === undefined || (allowPrivate && PRIVATE_KINDS.has(kind))) return undefined
    const remedy = PRIVATE_KINDS.has(kind) ? 'set BUS_WEBHOOK_ALLOW_PRIVATE=true or list it in BUS_WEBHOOK_ALLOW' : 'list it in BUS_WEBHOOK_ALLOW'
    return `${named} is a ${kind} address (${remedy})`
  }

  // Why a URL may not be used without looking up its name, or undefined when it may: the check made before every
  // attempt, the name itself being checked where the connection is made.
  function refuseUrl (raw: string): string | undefined {
    let url: URL
    try { url = new URL(raw) } catch { return 'is not a URL' }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be http or https'
    // Credentials in a URL end up in logs and proxies; the webhook secret is how a receiver knows the bus.
    if (url.username !== '' || url.password !== '') return 'must not contain credentials (user:password@); verify the webhook signature instead'
    const host = hostOf(url)
    return isIP(host) !== 0 ? refuseAddress(host, host) : undefined
  }

  return {
    refuseAddress,
    refuseUrl,
    // Why a URL may not be registered, or undefined when it may. The name is looked up to answer early; the answer
    // that counts is the one checked when each attempt connects (the name may resolve elsewhere by then).
    async refuse (raw: string): Promise<string | undefined> {
      const refused = refuseUrl(raw)
      const host = refused === undefined ? hostOf(new URL(raw)) : ''
      if (refused !== undefined || isIP(host) !== 0 || hosts.has(host)) return refused
      const addresses = await lookup(host, { all: true }).catch(() => [])
      // A name that does not resolve yet may later, unless only listed targets are allowed.
      if (addresses.length === 0) return allow.length > 0 ? `host ${host} is not in BUS_WEBHOOK_ALLOW` : undefined
      for (const { address } of addresses) {
        const why = refuseAddress(address, host)
        if (why !== undefined) return why
      }
      return undefined
    }
  }
}

const hostOf = (url: URL): string => url.hostname.replace(/^\[|\]$/g, '').toLowerCase()
