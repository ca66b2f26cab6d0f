// A throwaway PostgreSQL cluster for the tests: initdb into a fresh temporary folder, start it on a free port of
// 127.0.0.1 with trust authentication (no password; nothing but this machine can reach it), and remove it all again.
// Plain JS because it runs before anything is compiled (scripts/test.mjs uses it before tap).
//
//   import { startCluster } from './pg-cluster.mjs'
//   const { url, stop } = await startCluster()     // url = postgres://bus@127.0.0.1:PORT/postgres
//   ...; await stop()                              // pg_ctl stop -m immediate, then the folder is removed
//
//   node scripts/pg-cluster.mjs start [--fsync]    // prints the URL, keeps it until Ctrl-C / SIGTERM, then removes it
//
// A cluster is never left behind: stop() removes it; so do the process's normal exit, SIGINT, SIGTERM and SIGHUP; and
// as a parent killed with SIGKILL runs no handler at all, each cluster also has a small detached watchdog process that
// checks every second that the parent is alive and stops and removes the cluster once it is gone. (Last resort: a
// postmaster whose data folder is deleted shuts itself down within a minute, when it rechecks its lock file.)
//
// initdb refuses to run as root, so as root the PostgreSQL commands run as the `postgres` user (runuser, else
// setpriv, else su) in a folder chowned to it; otherwise they run as the current user.
import { spawn, spawnSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const PG_USER = 'postgres' // the OS account used when we are root
const DB_USER = 'bus' // the cluster's superuser

// The folder holding initdb and pg_ctl: the newest /usr/lib/postgresql/<version>/bin (Debian, Ubuntu), else
// `pg_config --bindir`, else the folder of an initdb on PATH. Undefined when there is none.
export function findPostgresBinDir () {
  const hasTools = (dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'))
  const base = '/usr/lib/postgresql'
  let versions = []
  try { versions = readdirSync(base) } catch {}
  versions.sort((a, b) => parseFloat(b) - parseFloat(a) || b.localeCompare(a))
  for (const version of versions) {
    if (hasTools(join(base, version, 'bin'))) return join(base, version, 'bin')
  }
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' })
  if (pgConfig.status === 0 && hasTools(pgConfig.stdout.trim())) return pgConfig.stdout.trim()
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, 'initdb'))) {
      const real = dirname(realpathSync(join(dir, 'initdb')))
      if (hasTools(real)) return real
    }
  }
  return undefined
}

// The prefix that runs a command as the postgres user when we are root, and the uid/gid to chown its folder to.
function identity () {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { prefix: [], owner: undefined }
  const id = (flag) => spawnSync('id', [flag, PG_USER], { encoding: 'utf8' })
  const uid = id('-u')
  const gid = id('-g')
  if (uid.status !== 0 || gid.status !== 0) {
    throw new Error(`PostgreSQL: running as root, but there is no '${PG_USER}' user to run initdb as (initdb refuses root)`)
  }
  const owner = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
  const which = (name) => ['/usr/sbin', '/sbin', '/usr/bin', '/bin', ...(process.env.PATH ?? '').split(delimiter)]
    .map((dir) => join(dir, name)).find((path) => existsSync(path))
  const runuser = which('runuser')
  if (runuser) return { prefix: [runuser, '-u', PG_USER, '--'], owner }
  const setpriv = which('setpriv')
  if (setpriv) return { prefix: [setpriv, `--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--init-groups', '--'], owner }
  const su = which('su')
  if (su) return { prefix: [su, PG_USER, '-s', '/bin/sh', '-c', '"$0" "$@"'], owner }
  throw new Error(`PostgreSQL: running as root, but none of runuser, setpriv or su is there to run initdb as '${PG_USER}'`)
}

const shellQuote = (s) => /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`

// The last few meaningful lines of some output, joined into one line for an error message.
function gist (text) {
  const lines = String(text ?? '').split('\n').map((l) => l.trim()).filter(Boolean)
  const errors = lines.filter((l) => /error|fatal|panic|could not|failed|refus|denied|invalid/i.test(l))
  return (errors.length ? errors.slice(-2) : lines.slice(-2)).join(' / ') || 'no output'
}

function run (prefix, cwd, file, args) {
  return new Promise((resolve) => {
    const [cmd, ...rest] = [...prefix, file, ...args]
    const child = spawn(cmd, rest, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d) => { output += d })
    child.stderr.on('data', (d) => { output += d })
    child.on('error', (err) => resolve({ status: -1, output: `${output}\n${err.message}` }))
    child.on('close', (status) => resolve({ status, output }))
  })
}

function freePort () {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

// ---- never leave a cluster behind -------------------------------------------------------------------------------

const live = new Set()
let handlersInstalled = false

// Synchronous, so that it also works in an 'exit' handler.
function stopSync (cluster) {
  if (!live.delete(cluster)) return
  const [cmd, ...rest] = [...cluster.prefix, cluster.pgCtl, 'stop', '-D', cluster.dataDir, '-m', 'immediate', '-w', '-t', '30']
  if (existsSync(join(cluster.dataDir, 'postmaster.pid'))) spawnSync(cmd, rest, { cwd: cluster.dir, stdio: 'ignore' })
  rmSync(cluster.dir, { recursive: true, force: true })
  killWatchdog(cluster)
}

function killWatchdog (cluster) {
  if (cluster.watchdog?.pid) {
    try { process.kill(cluster.watchdog.pid, 'SIGTERM') } catch {}
    cluster.watchdog = undefined
  }
}

function onSignal (signal) {
  for (const cluster of [...live]) stopSync(cluster)
  // Without another listener for this signal, end the way the signal would have ended the process.
  if (process.listenerCount(signal) === 1) {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.removeListener(s, onSignal)
    process.kill(process.pid, signal)
  }
}

function installHandlers () {
  if (handlersInstalled) return
  handlersInstalled = true
  process.on('exit', () => { for (const cluster of [...live]) stopSync(cluster) })
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, onSignal)
}

// A detached process (own process group, so Ctrl-C does not reach it) that outlives a SIGKILLed parent: once the
// parent is gone it stops and removes the cluster; once the cluster's folder is gone (a normal stop) it just exits.
const WATCHDOG = `
const { spawnSync } = require('node:child_process')
const { existsSync, rmSync } = require('node:fs')
const { parent, dir, dataDir, stop } = JSON.parse(process.argv[1])
const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return e.code === 'EPERM' } }
setInterval(() => {
  if (!existsSync(dir)) process.exit(0)
  if (alive(parent)) return
  if (existsSync(dataDir + '/postmaster.pid')) spawnSync(stop[0], stop.slice(1), { cwd: dir, stdio: 'ignore' })
  rmSync(dir, { recursive: true, force: true })
  process.exit(0)
}, 1000)
`

function startWatchdog (cluster) {
  const stop = [...cluster.prefix, cluster.pgCtl, 'stop', '-D', cluster.dataDir, '-m', 'immediate', '-w', '-t', '30']
  const config = JSON.stringify({ parent: process.pid, dir: cluster.dir, dataDir: cluster.dataDir, stop })
  const child = spawn(process.execPath, ['-e', WATCHDOG, config], { detached: true, stdio: 'ignore', cwd: '/' })
  child.on('error', () => {})
  child.unref()
  cluster.watchdog = child
}

// ---- the cluster ------------------------------------------------------------------------------------------------

// Starts a cluster and resolves to { url, stop } once it accepts connections. fsync: false (the default) turns off
// fsync, synchronous_commit and full_page_writes: fast, and fine for a cluster thrown away after the run.
// Throws an Error with a one-line message, having removed whatever it made, when it cannot.
export async function startCluster ({ fsync = false } = {}) {
  const binDir = findPostgresBinDir()
  if (!binDir) {
    throw new Error('PostgreSQL: no server binaries found (no /usr/lib/postgresql/*/bin/initdb, pg_config or initdb on PATH; install the Debian package postgresql)')
  }
  const { prefix, owner } = identity()
  const dir = mkdtempSync(join(tmpdir(), 'bus-pg-'))
  const cluster = { dir, dataDir: join(dir, 'data'), pgCtl: join(binDir, 'pg_ctl'), prefix, watchdog: undefined }
  live.add(cluster)
  installHandlers()
  try {
    if (owner) chownSync(dir, owner.uid, owner.gid)
    startWatchdog(cluster)

    const initdb = await run(prefix, dir, join(binDir, 'initdb'), [
      '-D', cluster.dataDir, '-U', DB_USER, '--auth=trust', '--encoding=UTF8', '--locale=C', ...(fsync ? [] : ['--no-sync'])
    ])
    if (initdb.status !== 0) throw new Error(`PostgreSQL: initdb failed: ${gist(initdb.output)}`)

    const settings = fsync
      ? ['-c fsync=on', '-c synchronous_commit=on']
      : ['-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off']
    const log = join(dir, 'postgres.log')
    // The port is free when we look, but another process may take it before postgres binds it: then try another.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort()
      const options = [
        '-c listen_addresses=127.0.0.1', `-p ${port}`, `-k ${shellQuote(dir)}`, '-c max_connections=300', ...settings
      ].join(' ')
      const start = await run(prefix, dir, cluster.pgCtl, ['start', '-D', cluster.dataDir, '-w', '-t', '60', '-l', log, '-o', options])
      if (start.status === 0) {
        const url = `postgres://${DB_USER}@127.0.0.1:${port}/postgres`
        await waitForConnection(url)
        let stopping
        const stop = () => {
          stopping ??= stopAsync(cluster)
          return stopping
        }
        // For tests of a database that goes away: the server stops (as a restart would stop it) and starts again
        // on the same port with the same data.
        const down = async () => {
          const r = await run(prefix, dir, cluster.pgCtl, ['stop', '-D', cluster.dataDir, '-m', 'fast', '-w', '-t', '60'])
          if (r.status !== 0) throw new Error(`PostgreSQL: pg_ctl stop failed: ${gist(r.output)}`)
        }
        const up = async () => {
          const r = await run(prefix, dir, cluster.pgCtl, ['start', '-D', cluster.dataDir, '-w', '-t', '60', '-l', log, '-o', options])
          if (r.status !== 0) throw new Error(`PostgreSQL: pg_ctl start failed: ${gist(r.output)}`)
          await waitForConnection(url)
        }
        return { url, stop, down, up }
      }
      let logText = ''
      try { logText = readFileSync(log, 'utf8') } catch {}
      if (attempt < 5 && /could not bind|address already in use/i.test(logText)) continue
      throw new Error(`PostgreSQL: pg_ctl start failed: ${gist(logText || start.output)}`)
    }
  } catch (err) {
    stopSync(cluster)
    throw new Error(String(err?.message ?? err).replace(/\s*\n\s*/g, ' / '))
  }
}

async function waitForConnection (url) {
  const { default: pg } = await import('pg')
  const deadline = Date.now() + 15_000
  for (;;) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 })
    try {
      await client.connect()
      await client.query('select 1')
      return
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`PostgreSQL: started, but ${url} does not answer: ${err.message}`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    } finally {
      await client.end().catch(() => {})
    }
  }
}

async function stopAsync (cluster) {
  if (!live.has(cluster)) return
  if (existsSync(join(cluster.dataDir, 'postmaster.pid'))) {
    await run(cluster.prefix, cluster.dir, cluster.pgCtl, ['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w', '-t', '30'])
  }
  stopSync(cluster) // removes the folder and the watchdog (pg_ctl is not run again: the server is gone)
}

// ---- databases in a cluster -------------------------------------------------------------------------------------

async function admin (adminUrl, sql) {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

// CREATE DATABASE "name" TEMPLATE template0 on the cluster of adminUrl; resolves to the new database's URL.
export async function createDatabase (adminUrl, name) {
  const { default: pg } = await import('pg')
  await admin(adminUrl, `CREATE DATABASE ${pg.escapeIdentifier(name)} TEMPLATE template0`)
  const url = new URL(adminUrl)
  url.pathname = `/${encodeURIComponent(name)}`
  return url.toString()
}

// DROP DATABASE IF EXISTS "name" WITH (FORCE): connections still open to it are ended.
export async function dropDatabase (adminUrl, name) {
  const { default: pg } = await import('pg')
  await admin(adminUrl, `DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`)
}

// ---- command line -----------------------------------------------------------------------------------------------

const isMain = (() => {
  try { return realpathSync(process.argv[1]) === fileURLToPath(import.meta.url) } catch { return false }
})()

if (isMain) {
  const [command, ...flags] = process.argv.slice(2)
  if (command !== 'start' || flags.some((f) => f !== '--fsync')) {
    process.stderr.write('usage: node scripts/pg-cluster.mjs start [--fsync]\n')
    process.exit(2)
  }
  let cluster
  try {
    cluster = await startCluster({ fsync: flags.includes('--fsync') })
  } catch (err) {
    process.stderr.write(`${err.message}\n`)
    process.exit(1)
  }
  process.stdout.write(`${cluster.url}\n`)
  process.stderr.write(`PostgreSQL cluster running (e.g. BUS_TEST_POSTGRES_URL=${cluster.url}); Ctrl-C stops and removes it\n`)
  const keepAlive = setInterval(() => {}, 1 << 30)
  const shutdown = async () => {
    clearInterval(keepAlive)
    await cluster.stop()
    process.exit(0)
  }
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, shutdown)
}
