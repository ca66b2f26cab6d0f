import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync } from 'node:fs'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import connections, { addressKey, connectionBudget, readOpenFilesLimit } from '../../plugins/connections.js'
import { guardedMemoryUsage } from '../../plugins/limits.js'
import { until } from '../helper.js'

// Issue 14: idle connections that nobody authenticated, opened until the process had no file descriptor left,
// made @fastify/under-pressure's memory sample (a /proc read, from a timer) throw EMFILE, and the process exited.
// The process-level tests run the built server (npx tsc -p tsconfig.build.json first) under a low open-files
// limit. 512, not less: Node's ESM loader reads the module graph in parallel at start and needs 300 to 400
// descriptors for a moment, so a bus under `ulimit -n 300` cannot even start.

const NOFILE = 512
const exitWithParent = new URL('../fixtures/exit-with-parent.mjs', import.meta.url).href

// The real server under `ulimit -n`, as test/process.ts starts it otherwise (with the same guard against orphans).
function startUnderLimit (t: Test, env: Record<string, string>) {
  const child = spawn('bash', ['-c', `ulimit -n ${NOFILE} && exec "$0" --import "$1" dist/server.js`, process.execPath, exitWithParent], {
    env: { ...process.env, PORT: '0', BUS_DB: join(t.testdir(), 'bus.db'), ...env }, stdio: ['pipe', 'pipe', 'pipe']
  })
  t.teardown(() => { child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  // 'close', not 'exit': it comes once the process's output has been read to the end.
  const exited = once(child, 'close').then(([code]) => code as number | null)
  const port = new Promise<number>((resolve, reject) => {
    child.stdout.on('data', () => {
      const match = /"msg":"Server listening at http:\/\/127\.0\.0\.1:(\d+)"/.exec(out)
      if (match) resolve(Number(match[1]))
    })
    void exited.then((code) => reject(new Error(`server exited with ${code}: ${err}${out}`)))
  })
  port.catch(() => {}) // a test that expects the start to fail awaits the exit instead
  // bash exec'd node, so the pid is the server's own.
  const descriptors = (): number => readdirSync(`/proc/${child.pid}/fd`).length
  return { child, port, exited, descriptors, output: () => out, errors: () => err }
}

// Connections that never send a byte, from one loopback source address. Resolves once each has connected or failed.
async function idle (port: number, localAddress: string, count: number): Promise<Socket[]> {
  const sockets = Array.from({ length: count }, () => connect({ port, host: '127.0.0.1', localAddress }).on('error', () => {}))
  await Promise.all(sockets.map((s) => Promise.race([once(s, 'connect'), once(s, 'close')])))
  return sockets
}
const stillOpen = (sockets: Socket[]): number => sockets.filter((s) => !s.closed).length

// GET /health over a fresh connection from the given loopback address. A refused connect is tried again for a while:
// once, on Node 24 with the machine loaded, the first connect after the flood was refused (the kernel's accept queue,
// drained by a server short of descriptors); what the test asks is that a fresh client is served, not at which try.
async function health (port: number, localAddress: string): Promise<{ status: number | undefined, body: string }> {
  const end = Date.now() + 30_000
  for (;;) {
    try {
      return await healthOnce(port, localAddress)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || Date.now() > end) throw err
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
}

function healthOnce (port: number, localAddress: string): Promise<{ status: number | undefined, body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/health', localAddress, agent: false }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

// under-pressure samples every second and the crash came with the first sample that found no descriptor: waiting
// for a few samples is what shows the process survives them (a wait, not a measurement).
const samples = () => new Promise((resolve) => setTimeout(resolve, 2500))

// Load shedding stays on (its sampling timer is what crashed), with a threshold a busy test machine never reaches.
const sampling = { BUS_MAX_EVENT_LOOP_DELAY_MS: '60000' }

t.test('one address cannot take every slot, and more idle sockets than descriptors leave the bus alive', async (t) => {
  const server = startUnderLimit(t, { ...sampling, BUS_MAX_CONNECTIONS_PER_ADDRESS: '32', BUS_FIRST_REQUEST_TIMEOUT_MS: '120000' })
  const port = await server.port
  const addresses = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.8', '127.0.0.9']
  const groups: Socket[][] = []
  t.teardown(() => { for (const s of groups.flat()) s.destroy() })
  for (const address of addresses) groups.push(await idle(port, address, 80))
  t.ok(groups.flat().length > NOFILE, `${groups.flat().length} sockets opened against a limit of ${NOFILE} descriptors`)
  for (const [i, group] of groups.entries()) {
    await until(`${addresses[i]} holds at most 32`, () => stillOpen(group) <= 32)
    t.equal(stillOpen(group), 32, `${addresses[i]} keeps exactly its 32; the server closed the other 48`)
  }
  await samples()
  t.equal(server.child.exitCode, null, 'the server is still running')
  t.ok(server.descriptors() < NOFILE, `the server holds ${server.descriptors()} of its ${NOFILE} descriptors`)
  const fresh = await health(port, '127.0.0.10')
  t.equal(fresh.status, 200, 'a client from another address is served while the idle sockets stay open')
  t.match(JSON.parse(fresh.body), { status: 'ok' })
  t.equal(stillOpen(groups.flat()), 8 * 32, 'the idle sockets were there all along')
  t.match(server.output(), /"reason":"maxPerAddress".*"msg":"refusing connections: BUS_MAX_CONNECTIONS_PER_ADDRESS reached"/)
})

t.test('past BUS_MAX_CONNECTIONS connections are refused, silent ones are closed, and the bus serves again', async (t) => {
  const server = startUnderLimit(t, { ...sampling, BUS_MAX_CONNECTIONS_PER_ADDRESS: '0', BUS_FIRST_REQUEST_TIMEOUT_MS: '5000' })
  const port = await server.port
  t.match(server.output(), new RegExp(`"maxConnections":${NOFILE - 128},.*"openFilesLimit":${NOFILE}`), 'the cap is read from the limit at start')
  const sockets = await idle(port, '127.0.0.2', 700)
  t.teardown(() => { for (const s of sockets) s.destroy() })
  await until('the refusals are logged', () => /"msg":"refusing connections: BUS_MAX_CONNECTIONS reached"/.test(server.output()))
  // The client hears of each refusal a moment after the server logged it.
  await until(`at most ${NOFILE - 128} are held`, () => stillOpen(sockets) <= NOFILE - 128)
  t.ok(server.descriptors() < NOFILE, `the server holds ${server.descriptors()} of its ${NOFILE} descriptors`)
  await samples()
  t.equal(server.child.exitCode, null, 'the server is still running')
  // Nobody on this side closes them: the server does, BUS_FIRST_REQUEST_TIMEOUT_MS after each arrived.
  await until('the server closed every silent connection', () => stillOpen(sockets) === 0)
  t.equal((await health(port, '127.0.0.10')).status, 200, 'a fresh client gets in once the silent ones are gone')
  t.equal(server.child.exitCode, null)
  t.notMatch(server.output() + server.errors(), /EMFILE/, 'no descriptor ran out')
})

t.test('a BUS_MAX_CONNECTIONS the open-files limit cannot hold stops the start in one line', async (t) => {
  const server = startUnderLimit(t, { BUS_MAX_CONNECTIONS: '1000' })
  t.equal(await Promise.race([server.exited, server.port.then(() => 'listening', () => server.exited)]), 1)
  t.match(server.errors(), /^agent-bus: BUS_MAX_CONNECTIONS=1000 needs more descriptors than the open-files limit \(512\) allows: at most 384 .*\n$/)
  t.equal(server.errors().split('\n').length, 2, `one line: ${server.errors()}`)
})

t.test('under-pressure\'s sample no longer ends a process whose descriptors ran out for another reason', async (t) => {
  // Only the limits plugin on a bare Fastify, in a process that then opens files until none are left.
  const script = `
    import { openSync, closeSync } from 'node:fs'
    import Fastify from 'fastify'
    import limits from './dist/plugins/limits.js'
    const app = Fastify()
    await app.register(limits, { perAgentPerMin: 0, registrationsPerMin: 0, maxEventLoopDelayMs: 60000 })
    await app.ready()
    const fds = []
    try { for (;;) fds.push(openSync('/dev/null', 'r')) } catch (err) { process.stdout.write(err.code + '\\n') }
    setTimeout(() => {
      for (const fd of fds) closeSync(fd)
      process.stdout.write('alive ' + process.memoryUsage().rss + '\\n')
      return app.close()
    }, 2500)
  `
  const child = spawn('bash', ['-c', `ulimit -n ${NOFILE} && exec "$0" --input-type=module -e "$1"`, process.execPath, script], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  const [code] = await once(child, 'close')
  t.equal(code, 0, err)
  t.match(out, /^EMFILE\nalive [1-9]\d*\n$/, 'the descriptors ran out, samples were taken meanwhile, and the process lived on')
})

t.test('the memory reading falls back to the last good one when the read fails', async (t) => {
  let fail = false
  const errors: unknown[] = []
  const reading = { rss: 100, heapTotal: 50, heapUsed: 40, external: 1, arrayBuffers: 0 }
  const read = Object.assign(() => { if (fail) throw Object.assign(new Error('EMFILE'), { code: 'EMFILE' }); return { ...reading } },
    { rss: () => { if (fail) throw new Error('EMFILE'); return reading.rss } })
  const guarded = guardedMemoryUsage(read, (e) => errors.push(e))
  t.strictSame(guarded(), reading)
  fail = true
  t.strictSame(guarded(), reading, 'the last good reading')
  t.equal(guarded.rss(), 100)
  t.equal(errors.length, 2, 'each failure is reported')
  t.match(errors[0], { code: 'EMFILE' })
})

t.test('the open-files limit is read from /proc and turned into a connection budget', async (t) => {
  const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax processes             63432                63432                processes\nMax open files            ${soft}                 524288               files\n`
  t.equal(readOpenFilesLimit(limits('1024')), 1024)
  t.equal(readOpenFilesLimit(limits('unlimited')), undefined)
  t.equal(readOpenFilesLimit('nothing here'), undefined)
  t.type(readOpenFilesLimit(), 'number', 'this Linux has /proc/self/limits')

  t.equal(connectionBudget(undefined, 1024), 896, 'the limit less 128')
  t.equal(connectionBudget(undefined, 1_048_576), 10_000, 'at most 10000 by default')
  t.equal(connectionBudget(50_000, 1_048_576), 50_000, 'more when asked for and the limit allows it')
  t.equal(connectionBudget(896, 1024), 896)
  t.throws(() => connectionBudget(897, 1024), { name: 'ConfigError', message: /^BUS_MAX_CONNECTIONS=897 .* at most 896/ })
  t.throws(() => connectionBudget(undefined, 100), { name: 'ConfigError', message: /open-files limit \(100\) leaves no room/ })
  t.equal(connectionBudget(undefined, undefined), 10_000, 'no /proc: the default')
  t.equal(connectionBudget(20, undefined), 20)
})

t.test('connections are counted per IPv4 address and per IPv6 /64', async (t) => {
  t.equal(addressKey('203.0.113.7'), '203.0.113.7')
  t.equal(addressKey('::ffff:203.0.113.7'), '203.0.113.7', 'IPv4-mapped counts as the IPv4 address')
  t.equal(addressKey('2001:db8:aa:bb:1:2:3:4'), '2001:db8:aa:bb::/64')
  t.equal(addressKey('2001:0db8:00aa:bb::9'), '2001:db8:aa:bb::/64', 'the same /64 however it is written')
  t.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.equal(addressKey('::1'), '0:0:0:0::/64')
  t.not(addressKey('2001:db8:aa:bb::1'), addressKey('2001:db8:aa:bc::1'))
})

t.test('the plugin on a bare Fastify: silent sockets close, served ones stay, and a freed slot is reusable', async (t) => {
  const app = Fastify()
  await app.register(connections, { maxPerAddress: 2, firstRequestTimeoutMs: 1000, openFilesLimit: 1000 })
  app.get('/ping', async () => ({ pong: true }))
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const { port } = app.server.address() as { port: number }
  t.equal(app.server.maxConnections, 872, 'server.maxConnections is set from the limit')
  const opened: Socket[] = []
  t.teardown(() => { for (const s of opened) s.destroy() })
  const open = async (localAddress: string): Promise<Socket> => {
    const [s] = await idle(port, localAddress, 1)
    opened.push(s)
    return s
  }

  // A request and its answer over a socket of our own; the socket stays open for keep-alive.
  const exchange = (socket: Socket): Promise<string> => new Promise((resolve, reject) => {
    let text = ''
    const onData = (chunk: Buffer): void => {
      text += chunk.toString()
      if (!text.includes('{"pong":true}')) return
      socket.off('data', onData)
      resolve(text)
    }
    socket.on('data', onData).once('close', () => reject(new Error(`closed before an answer: ${text}`)))
    socket.write('GET /ping HTTP/1.1\r\nhost: localhost\r\n\r\n')
  })

  // One socket is served a request and then idles on keep-alive; the other never says a word.
  const served = await open('127.0.0.2')
  const silent = await open('127.0.0.2')
  t.match(await exchange(served), /^HTTP\/1\.1 200 /)
  const third = await open('127.0.0.2')
  await until('the third socket from one address is closed', () => third.closed)
  t.match(await exchange(await open('127.0.0.3')), /^HTTP\/1\.1 200 /, 'another address is let in')

  await until('the silent socket is closed', () => silent.closed)
  // Well past the deadline, the served socket is still open and answers again on the same connection.
  await new Promise((resolve) => setTimeout(resolve, 2500))
  t.notOk(served.closed, 'a connection that sent a request is not cut off by the first-request deadline')
  t.match(await exchange(served), /^HTTP\/1\.1 200 /)

  // The silent socket's slot is free again: a new connection from that address is served.
  t.match(await exchange(await open('127.0.0.2')), /^HTTP\/1\.1 200 /, 'a closed connection no longer counts against its address')
})
