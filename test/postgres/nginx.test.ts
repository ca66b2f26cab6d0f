import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { postgresUrl, testDb, until } from '../helper.js'
import { freePort, startServer } from '../process.js'
import { openStream } from '../sse.js'

// Bus nodes behind Debian's nginx, configured by deploy/nginx-agent-bus.conf: the snippet that deploy/nginx.conf
// includes. This test writes a config of its own around the snippet (its upstream lists the test's nodes; its
// paths are in the test's folder), runs nginx in the foreground, and talks to the bus through nginx only.
const NGINX = '/usr/sbin/nginx'
const deploy = fileURLToPath(new URL('../../deploy/', import.meta.url))
const isRoot = process.getuid?.() === 0

// A missing nginx skips the test, except on CI, which installs it (.ci/run): there the test runs and fails.
const skip = postgresUrl === undefined
  ? 'PostgreSQL only: npm test runs it against a throwaway server'
  : !existsSync(NGINX) && process.env.CI !== 'true' ? `no ${NGINX}: apt-get install nginx` : false

const json = { 'content-type': 'application/json' }
const post = (base: string, path: string, body: unknown, token?: string, headers: Record<string, string> = {}) => fetch(`${base}${path}`, {
  method: 'POST', headers: { ...json, ...(token !== undefined && { authorization: `Bearer ${token}` }), ...headers }, body: JSON.stringify(body)
})
const get = (base: string, path: string, token: string) => fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
async function register (base: string, name: string): Promise<{ token: string }> {
  const res = await post(base, '/agents', { name })
  if (res.status !== 201) throw new Error(`register ${name}: ${res.status} ${await res.text()}`)
  return res.json() as Promise<{ token: string }>
}

type Node = ReturnType<typeof startServer> & { base: string }

// n nodes on one fresh database, killed when the test ends (and with this process, by test/fixtures/exit-with-parent).
async function startNodes (t: Test, n: number): Promise<Node[]> {
  const env = { BUS_DB: await testDb(t), BUS_MAX_CONNECTIONS_PER_ADDRESS: '0' }
  const nodes = Array.from({ length: n }, () => startServer(env))
  for (const node of nodes) t.teardown(() => { node.child.kill('SIGKILL') })
  return Promise.all(nodes.map(async (node) => Object.assign(node, { base: await node.url })))
}

// The processes whose parent is pid (nginx's workers), from /proc.
function childrenOf (pid: number): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) found.push(Number(entry))
    } catch { /* gone meanwhile */ }
  }
  return found
}

// n nodes on one database, and nginx in front of them on a free port of 127.0.0.1, once it proxies /health.
async function behindNginx (t: Test, n: number) {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: .ci/run installs it on CI`)
  const nodes = await startNodes(t, n)
  const dir = t.testdir()
  const port = await freePort()
  const q = (path: string) => JSON.stringify(path) // a quoted nginx string
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `# Written by test/postgres/nginx.test.ts around ${join(deploy, 'nginx-agent-bus.conf')}.
${isRoot ? 'user root;  # as root, nginx would run its workers as nobody, who may not reach this folder' : ''}
worker_processes 2;
pid ${q(join(dir, 'nginx.pid'))};
error_log ${q(join(dir, 'error.log'))} info;
events { worker_connections 256; }
http {
    client_body_temp_path ${q(join(dir, 'client_body'))};
    proxy_temp_path ${q(join(dir, 'proxy'))};
    fastcgi_temp_path ${q(join(dir, 'fastcgi'))};
    uwsgi_temp_path ${q(join(dir, 'uwsgi'))};
    scgi_temp_path ${q(join(dir, 'scgi'))};
    log_format nodes '$request_method $uri $status $upstream_addr';
    access_log ${q(join(dir, 'access.log'))} nodes;
    # As in deploy/nginx.conf, with the test's nodes.
    upstream agent_bus {
        zone agent_bus 64k;
        least_conn;
${nodes.map((node) => `        server ${new URL(node.base).host} max_fails=1 fail_timeout=10s;`).join('\n')}
        keepalive 32;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:${port};
        include ${q(join(deploy, 'nginx-agent-bus.conf'))};
    }
}
`)
  const args = ['-p', dir, '-c', conf, '-g', 'daemon off;']
  // setpriv --pdeathsig: nginx gets SIGTERM (and stops its workers) should this process die without its teardown.
  const setpriv = spawnSync('setpriv', ['--help'], { encoding: 'utf8' }).stdout?.includes('--pdeathsig') === true
  const child = setpriv ? spawn('setpriv', ['--pdeathsig', 'TERM', NGINX, ...args]) : spawn(NGINX, args)
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  child.stdout.resume()
  const errorLog = () => { try { return readFileSync(join(dir, 'error.log'), 'utf8') } catch { return '' } }
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    const master = child.pid as number
    child.kill('SIGTERM') // fast shutdown: the master stops its workers, then exits
    if (await Promise.race([exited.then(() => true), sleep(5000).then(() => false)])) return
    for (const worker of childrenOf(master)) process.kill(worker, 'SIGKILL')
    child.kill('SIGKILL')
    await exited
  })
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}${errorLog()}`)
    try {
      if ((await fetch(`${base}/health`)).status === 200) break
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`nginx did not proxy /health: ${stderr}${errorLog()}`)
    await sleep(50)
  }
  // Each logged request as [method, path, status, the node(s) that nginx tried].
  const accessLog = () => readFileSync(join(dir, 'access.log'), 'utf8').trim().split('\n').map((line) => {
    const [method, uri, status, ...upstreams] = line.split(' ')
    return { method, uri, status: Number(status), upstreams: upstreams.join(' ').split(', ') }
  })
  return { nodes, proxy: { base, child, accessLog } }
}

// The complete example, as an operator runs it (it reads /var/log/nginx and /var/lib/nginx, hence root only).
// Nodes, nginx and several streams per test: under a fully loaded machine (CI on Node 24 beside other work) the file
// ran past the 120 s default.
t.setTimeout(600_000)

t.test('deploy/nginx.conf passes nginx -t', { skip: skip || (!isRoot && 'nginx -t on deploy/nginx.conf opens /var/log/nginx: root only') }, async (t) => {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: .ci/run installs it on CI`)
  const dir = t.testdir()
  const check = spawnSync(NGINX, ['-t', '-c', join(deploy, 'nginx.conf'), '-g', `pid ${join(dir, 'nginx.pid')}; error_log ${join(dir, 'error.log')};`], { encoding: 'utf8' })
  t.equal(check.status, 0, check.status === 0 ? 'syntax ok' : check.stderr)
})

t.test('a stream through nginx gets each message as it is sent, through either node', { skip }, async (t) => {
  const { nodes, proxy } = await behindNginx(t, 2)
  const alice = await register(proxy.base, 'alice')
  const bob = await register(proxy.base, 'bob')
  const stream = openStream(`${proxy.base}/stream`, bob.token)
  t.teardown(stream.close)
  await stream.opened
  // One at a time: each event must arrive while the stream stays open, not when a buffer fills or the stream ends.
  for (let i = 0; i < 6; i++) {
    const started = Date.now()
    const sent = await post(proxy.base, '/send', { to: 'bob', body: `m${i}` }, alice.token)
    t.equal(sent.status, 201)
    const { id } = await sent.json() as { id: number }
    // Woken by the send (through LISTEN/NOTIFY when on another node), not by the 5 s re-read.
    await stream.until(i + 1, 4500)
    t.match(stream.events[i], { type: 'message', id: String(id), data: { id, body: `m${i}`, from: 'alice' } }, `m${i} arrived after ${Date.now() - started} ms`)
  }
  stream.close()
  // nginx logs the stream when it ends: it was on one node, and sends reached it through the other.
  await until('nginx logs the stream', () => proxy.accessLog().some((r) => r.uri === '/stream'))
  const log = proxy.accessLog()
  const streamed = log.find((r) => r.uri === '/stream')
  const sends = log.filter((r) => r.uri === '/send')
  t.equal(sends.length, 6)
  t.ok(streamed !== undefined && sends.some((r) => !r.upstreams.includes(streamed.upstreams[0])), 'messages crossed from one node to the other')
  const used = new Set(log.flatMap((r) => r.upstreams))
  t.strictSame([...used].sort(), nodes.map((n) => new URL(n.base).host).sort(), 'nginx used both nodes')
})

t.test('a long-poll through nginx answers as soon as a message is sent', { skip }, async (t) => {
  const { proxy } = await behindNginx(t, 2)
  const alice = await register(proxy.base, 'alice')
  const bob = await register(proxy.base, 'bob')
  const poll = get(proxy.base, '/inbox?wait=20', bob.token)
  await sleep(300)
  t.equal((await post(proxy.base, '/send', { to: 'bob', body: 'wake up' }, alice.token)).status, 201)
  // Timed from the send's answer, so a slow start of the poll or the send does not count against the bound.
  const sent = Date.now()
  const res = await poll
  t.equal(res.status, 200)
  t.match((await res.json()).messages, [{ body: 'wake up' }])
  // Woken by the send (through LISTEN/NOTIFY when on another node), not by the 20 s deadline nor the 5 s re-read.
  t.ok(Date.now() - sent < 4000, `answered ${Date.now() - sent} ms after the send`)
  // The largest message (BUS_MAX_MESSAGE_BYTES, 64 KiB), six times as long once JSON-escaped, fits client_max_body_size.
  const big = await post(proxy.base, '/send', { to: 'bob', body: '\u0001'.repeat(65536) }, alice.token)
  t.equal(big.status, 201, `a 64 KiB message of control characters (${6 * 64} KiB of JSON): ${big.status}`)
})

t.test('a node down: nginx passes each request on to the other, a POST too when it could not connect', { skip }, async (t) => {
  const { nodes, proxy } = await behindNginx(t, 2)
  const alice = await register(proxy.base, 'alice')
  const bob = await register(proxy.base, 'bob')
  const logged = proxy.accessLog().length
  nodes[1].child.kill('SIGKILL')
  await once(nodes[1].child, 'exit')
  for (let i = 0; i < 4; i++) {
    t.equal((await post(proxy.base, '/send', { to: 'bob', body: `m${i}` }, alice.token, { 'idempotency-key': `k${i}` })).status, 201, `POST ${i}`)
    t.equal((await get(proxy.base, '/inbox', bob.token)).status, 200, `GET ${i}`)
  }
  const history = await (await get(proxy.base, '/history', bob.token)).json()
  t.equal(history.messages.length, 4, 'each message stored once')
  // Balancing alternates between the nodes, so one of the first requests went to the dead node and on to the
  // live one; the dead node then gets nothing for fail_timeout.
  const after = proxy.accessLog().slice(logged)
  t.ok(after.some((r) => r.upstreams.length === 2), `passed on: ${after.filter((r) => r.upstreams.length === 2).map((r) => r.method).join(', ')}`)
})
