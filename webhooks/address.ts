import { isIP } from 'node:net'

// IP addresses as bytes (4 or 16), so ranges are compared bit by bit whatever way the address was written
// (::ffff:127.0.0.1 and ::ffff:7f00:1 are the same address).
export type Address = Uint8Array

export function parseAddress (text: string): Address | undefined {
  const ip = text.replace(/^\[|\]$/g, '').replace(/%.*$/, '')
  const family = isIP(ip)
  if (family === 4) return Uint8Array.from(ip.split('.').map(Number))
  if (family !== 6) return undefined
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(ip)
  const hex = tail ? ip.slice(0, -tail[1].length) + '0:0' : ip
  const [head, rest] = hex.split('::') as [string, string | undefined]
  const groups = (s: string | undefined) => s ? s.split(':').filter(Boolean).map((g) => parseInt(g, 16)) : []
  const left = groups(head)
  const right = groups(rest)
  const words = rest === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
  const bytes = new Uint8Array(16)
  words.forEach((w, i) => { bytes[2 * i] = w >> 8; bytes[2 * i + 1] = w & 0xff })
  if (tail) bytes.set(tail[1].split('.').map(Number), 12)
  return bytes
}

export interface Range { bytes: Address, bits: number }

export function parseRange (text: string): Range | undefined {
  const [ip, prefix] = text.split('/')
  const bytes = parseAddress(ip)
  if (!bytes) return undefined
  const bits = prefix === undefined ? bytes.length * 8 : Number(prefix)
  if (!Number.isInteger(bits) || bits < 0 || bits > bytes.length * 8) return undefined
  return { bytes, bits }
}

export function inRange (address: Address, range: Range): boolean {
  if (address.length !== range.bytes.length) return false
  for (let bit = 0; bit < range.bits; bit += 8) {
    const mask = 0xff << (8 - Math.min(8, range.bits - bit)) & 0xff
    if ((address[bit / 8] & mask) !== (range.bytes[bit / 8] & mask)) return false
  }
  return true
}

// The IPv4 address inside an IPv6 one that carries it, or undefined: IPv4-mapped (::ffff:a.b.c.d), the deprecated
// IPv4-compatible form (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::). Each reaches the IPv4
// address, so each is judged as that address.
export function embeddedIPv4 (address: Address): Address | undefined {
  if (address.length !== 16) return undefined
  for (const prefix of EMBEDDING) if (inRange(address, prefix)) return address.slice(12)
  if (inRange(address, SIX_TO_FOUR)) return address.slice(2, 6)
  return undefined
}
// IPv4-mapped, IPv4-compatible, SIIT (::ffff:0:a.b.c.d) and well-known NAT64: the IPv4 address is the last 32 bits.
const EMBEDDING = ['::ffff:0:0/96', '::/96', '::ffff:0:0:0/96', '64:ff9b::/96'].map((r) => parseRange(r) as Range)
const SIX_TO_FOUR = parseRange('2002::/16') as Range

// Address kinds a webhook must not reach by default. `private` ones (the operator's own networks) are allowed by
// BUS_WEBHOOK_ALLOW_PRIVATE; the others only by naming them in BUS_WEBHOOK_ALLOW, because no receiver lives there
// by accident: link-local holds the cloud metadata service (169.254.169.254), and an unspecified address (0.0.0.0,
// ::) connects to the host itself.
export type Kind = 'loopback' | 'private' | 'unique-local' | 'shared (CGNAT)' | 'link-local' | 'unspecified' | 'multicast' | 'reserved'
export const PRIVATE_KINDS: ReadonlySet<Kind> = new Set(['loopback', 'private', 'unique-local', 'shared (CGNAT)'])

const KINDS: Array<[Kind, string[]]> = [
  ['unspecified', ['0.0.0.0/8', '::/128']],
  ['loopback', ['127.0.0.0/8', '::1/128']],
  ['private', ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fec0::/10']],
  ['unique-local', ['fc00::/7']],
  ['shared (CGNAT)', ['100.64.0.0/10']],
  ['link-local', ['169.254.0.0/16', 'fe80::/10']],
  ['multicast', ['224.0.0.0/4', 'ff00::/8']],
  // 64:ff9b:1::/48 is local-use NAT64 (RFC 8215): where its IPv4 address sits depends on the operator's prefix
  // length, so the whole range is refused unless listed.
  ['reserved', ['240.0.0.0/4', '192.0.0.0/24', '192.0.2.0/24', '198.18.0.0/15', '198.51.100.0/24', '203.0.113.0/24', '100::/64', '2001:db8::/32', '64:ff9b:1::/48']]
]
const RANGES = KINDS.flatMap(([kind, ranges]) => ranges.map((r) => ({ kind, range: parseRange(r) as Range })))

// What kind of special address this is, or undefined for an ordinary (public unicast) one.
export function classify (address: Address): Kind | undefined {
  const kind = RANGES.find(({ range }) => inRange(address, range))?.kind
  if (kind !== undefined) return kind // before the embedded form, which would read :: and ::1 as 0.0.0.0 and 0.0.0.1
  const inner = embeddedIPv4(address)
  return inner ? classify(inner) : undefined
}
