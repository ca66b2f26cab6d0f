import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { ConfigError } from '../config.js'

export interface ConnectionsOptions {
  // Open client connections at most; undefined = what the open-files limit allows (connectionBudget).
  maxConnections?: number
  // Open connections one client address (an IPv6 /64) may hold; 0 = off.
  maxPerAddress: number
  // A new connection that has not sent a whole request head within this time is closed.
  firstRequestTimeoutMs: number
  // The process's open-files soft limit; read from /proc/self/limits when not given (tests give it).
  openFilesLimit?: number
}

// Descriptors kept back from client connections. A running bus holds about 25 without any client (stdio, the
// event loop, SQLite's file, WAL and shared memory, the database lock); the rest is room for webhooks (32
// attempts in flight, plus undici's briefly idle keep-alive sockets), DNS lookups, /docs files, the /proc read
// behind process.memoryUsage(), and a backup. An accepted connection over the cap costs one descriptor for an
// instant too: Node accepts it before closing it.
export const RESERVED_DESCRIPTORS = 128
// Without an explicit BUS_MAX_CONNECTIONS, memory rather than descriptors runs out first on a host with a very
// high limit (a million in a default Docker container); an agent bus needs nowhere near this many.
export const DEFAULT_MAX_CONNECTIONS = 10_000

// The soft "Max open files" limit of this process, or undefined where /proc is missing or says unlimited. Read
// here rather than from the shell's ulimit: Node raises its soft limit to the hard one as it starts.
export function readOpenFilesLimit (limits?: string): number | undefined {
  try {
    limits ??= readFileSync('/proc/self/limits', 'utf8')
  } catch {
    return undefined
  }
  const soft = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits)?.[1]
  return soft === undefined || soft === 'unlimited' ? undefined : Number(soft)
}

// How many client connections the bus accepts at once: the configured number, which must leave the reserve free,
// or by default as many as the limit allows, up to DEFAULT_MAX_CONNECTIONS.
export function connectionBudget (configured: number | undefined, openFilesLimit: number | undefined): number {
  if (openFilesLimit === undefined) return configured ?? DEFAULT_MAX_CONNECTIONS
  const room = openFilesLimit - RESERVED_DESCRIPTORS
  if (room < 1) {
    throw new ConfigError(`the open-files limit (${openFilesLimit}) leaves no room for connections: raise it (ulimit -n, LimitNOFILE) above ${RESERVED_DESCRIPTORS}`)
  }
  if (configured !== undefined && configured > room) {
    throw new ConfigError(`BUS_MAX_CONNECTIONS=${configured} needs more descriptors than the open-files limit (${openFilesLimit}) allows: ` +
      `at most ${room} (${RESERVED_DESCRIPTORS} are kept for the database, logs and webhooks); raise the limit or lower it`)
  }
  return configured ?? Math.min(room, DEFAULT_MAX_CONNECTIONS)
}

// The key one client's connections are counted under: an IPv4 address (also when it arrives IPv4-mapped), or the
// /64 of an IPv6 address, since one host is routinely given a whole /64 and could otherwise take a slot per address.
// The address a local client connects from by default; other 127.x addresses are as capped as any other.
const isLoopback = (address: string): boolean => address === '127.0.0.1' || address === '::ffff:127.0.0.1' || address === '::1'

export function addressKey (address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped !== null) return mapped[1]
  if (!address.includes(':')) return address
  const [head, tail] = address.replace(/%.*$/, '').toLowerCase().split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`
}

// Refusals come in floods during an attack: one warning per reason every 10 s, with the count since the last one.
function refusalLog (log: FastifyBaseLogger, reason: string, msg: string): (address: string | undefined) => void {
  let refused = 0
  let loggedAt = 0
  return (address) => {
    refused++
    const now = Date.now()
    if (now - loggedAt < 10_000) return
    log.warn({ reason, refused, address }, msg)
    refused = 0
    loggedAt = now
  }
}

// Issue 14: unauthenticated clients that opened idle connections until the process ran out of file descriptors
// made the next /proc read throw and the process exit. So the server refuses connections beyond a budget kept
// below the open-files limit, one address cannot hold more than its share, and a connection that stays silent
// is closed soon rather than after the 30 s request timeout.
const connections: FastifyPluginAsync<ConnectionsOptions> = async (app, opts) => {
  const log = app.log.child({ plugin: 'connections' })
  const openFilesLimit = opts.openFilesLimit ?? readOpenFilesLimit()
  const maxConnections = connectionBudget(opts.maxConnections, openFilesLimit)
  const { maxPerAddress, firstRequestTimeoutMs } = opts
  const server = app.server
  log.info({ maxConnections, maxPerAddress, firstRequestTimeoutMs, openFilesLimit }, 'connection limits')

  // Node closes a connection over this at once, before any parser or timer is set up for it.
  server.maxConnections = maxConnections
  const overTotal = refusalLog(log, 'maxConnections', 'refusing connections: BUS_MAX_CONNECTIONS reached')
  const onDrop = (data?: { remoteAddress?: string }): void => { overTotal(data?.remoteAddress) }

  const open = new Map<string, number>()
  const overAddress = refusalLog(log, 'maxPerAddress', 'refusing connections: BUS_MAX_CONNECTIONS_PER_ADDRESS reached')
  // Not a socket timeout: server.setTimeout (Fastify's connectionTimeout) owns that one.
  const silent = new WeakMap<Socket, NodeJS.Timeout>()
  const onConnection = (socket: Socket): void => {
    // undefined once the peer has already gone; the socket is then closing anyway.
    if (socket.remoteAddress === undefined) return void socket.destroy()
    // Clients on this machine come from 127.0.0.1 (or ::1), and on the default HOST every agent is one: a
    // per-address cap there would be a cap on all of them together. maxConnections still bounds them.
    if (maxPerAddress > 0 && !isLoopback(socket.remoteAddress)) {
      const key = addressKey(socket.remoteAddress)
      const count = (open.get(key) ?? 0) + 1
      open.set(key, count)
      socket.once('close', () => {
        const left = (open.get(key) ?? 1) - 1
        if (left === 0) open.delete(key)
        else open.set(key, left)
      })
      if (count > maxPerAddress) {
        overAddress(key)
        return void socket.destroy()
      }
    }
    const timer = setTimeout(() => socket.destroy(), firstRequestTimeoutMs).unref()
    silent.set(socket, timer)
    socket.once('close', () => clearTimeout(timer))
  }
  // A request head arrived: from here on the request timeout and keep-alive timeout govern the connection.
  const onRequest = (request: IncomingMessage): void => {
    clearTimeout(silent.get(request.socket))
    silent.delete(request.socket)
  }
  // Node reports a failed accept (EMFILE or ENFILE when descriptors ran out elsewhere) as a server 'error', which
  // without a listener would end the process. libuv has already shed the connection; there is nothing to undo.
  const onError = (err: Error): void => {
    if (server.listening) log.error({ err }, 'accepting a connection failed')
  }

  server.on('drop', onDrop)
  server.on('connection', onConnection)
  server.on('request', onRequest)
  server.on('error', onError)
  app.addHook('onClose', async () => {
    server.off('drop', onDrop)
    server.off('connection', onConnection)
    server.off('request', onRequest)
    server.off('error', onError)
  })
}

export default fp(connections, { name: 'connections', fastify: '5.x' })
