import { randomUUID } from 'node:crypto'
import { CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { createGroupCommit, runAlone } from '../group-commit.js'
import { migrateToLatest } from '../migrate.js'
import { migrations } from '../migrations/postgres/index.js'
import type { Database } from '../schema.js'
import { StorageStartError, type ClusterLink, type Storage, type StorageFailure, type StorageObserver } from '../storage.js'

// Several bus processes (nodes) on one PostgreSQL database. What this engine adds to the single-file one:
// - Order. A sequence hands out seq before commit, so with two writers message 11 could become visible before
//   message 10, and a reader whose position passed 11 would skip 10 for ever. Every group-commit batch that stores
//   messages first takes one cluster-wide transaction lock (pg_advisory_xact_lock), held until its commit is
//   visible: seqs are taken, and become visible, one batch at a time, in order. One lock per batch, not per
//   message, so group commit keeps its advantage. Readers need nothing: whatever seq they see, every lower one is
//   visible too.
// - Wake-ups between nodes: NOTIFY on one channel, LISTEN on a connection of its own (createClusterLink).
// - Work once per cluster: a try-lock per job (exclusively), and row claims with FOR UPDATE SKIP LOCKED.
// Durability is the server's: a commit is as durable as its synchronous_commit makes it (BUS_SYNC is SQLite's).

export const isPostgresUrl = (url: string): boolean => /^postgres(ql)?:\/\//i.test(url)

export interface PostgresOptions {
  url: string
  // Connections for queries on this node (the LISTEN connection is one more).
  poolSize?: number
  // Reports what the listening connection goes through (dropped, back).
  log?: (level: 'info' | 'warn', message: string, err?: unknown) => void
  // Only for the test and the benchmark that show what the order lock prevents, and what it costs.
  unordered?: boolean
  observer?: StorageObserver
}

// Without a parser, pg hands 64-bit integers (ids, seqs, count(*)) and numerics (sum) over as strings. Positions
// stay far below 2^53, so they are numbers here, as on SQLite.
const types = {
  getTypeParser (oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return (value: string) => Number(value)
    return pg.types.getTypeParser(oid, format)
  }
}

// Keys of the advisory locks, named so that another application's keys on the same database are unlikely to clash.
const lockKey = (name: string) => sql`hashtext(${`agent-bus:${name}`})`
// A batch waits at most 10 s for the order lock (a node that holds it is committing a batch, which takes
// milliseconds); past that its writes fail with 55P03, a 503 the client retries, rather than hanging.
const ORDER = CompiledQuery.raw("with t as (select set_config('lock_timeout', '10s', true)) select pg_advisory_xact_lock(hashtext('agent-bus:order')) from t")

// Where the URL points, without its password, for messages.
function describeTarget (url: string): string {
  try {
    const u = new URL(url)
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname || '/'}`
  } catch {
    return 'the PostgreSQL URL'
  }
}

export async function openPostgres ({ url, poolSize = 10, log = () => {}, unordered = false, observer }: PostgresOptions): Promise<Storage> {
  try {
    // pg reads libpq-style URLs (?sslmode=, ?host=/socket/dir …) itself; this only refuses what is not a URL at all.
    new URL(url) // eslint-disable-line no-new
  } catch {
    throw new StorageStartError('BUS_DB is not a valid PostgreSQL URL (postgres://user:password@host:5432/dbname)')
  }
  const target = describeTarget(url)
  const config: pg.PoolConfig = {
    connectionString: url,
    types,
    connectionTimeoutMillis: 5000,
    // A server or network that went silent is noticed by TCP keep-alive after 10 s, not the system's 2 hours.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    application_name: 'agent-bus',
    // A node that stops in the middle of a transaction (a paused VM, a partition) would hold its locks, the order
    // lock among them, and stall every other node's sends: the server ends such a transaction after 30 s, and no
    // statement of the bus runs for minutes.
    options: '-c idle_in_transaction_session_timeout=30000 -c statement_timeout=120000'
  }
  const pool = new pg.Pool({ ...config, max: poolSize })
  // The last failure of the server or the network, for /health: until a query succeeds again, or, for a failure
  // that only writes meet (a full disk, a read-only server), until a write succeeds.
  let lastFailure: (StorageFailure & { writes: boolean }) | undefined
  const failed = (err: unknown): void => {
    const failure = describePostgresError(err)
    if (failure !== undefined) lastFailure = { ...failure, writes: WRITE_FAILURES.has((err as { code?: string }).code ?? '') }
  }
  // An idle connection that the server closed (a restart) reports here; without a listener it would end the process.
  pool.on('error', failed)
  // The same for a connection that is checked out (in a transaction) when the server goes: pg emits 'error' on it
  // as well as failing its query, and the pool listens only to idle ones.
  pool.on('connect', (client) => { client.on('error', failed) })
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool }),
    log (event) {
      if (event.level === 'error') failed(event.error)
      else if (lastFailure !== undefined && (!lastFailure.writes || !/^\s*select\b/i.test(event.query.sql))) lastFailure = undefined
    }
  })

  try {
    await sql`select 1`.execute(db)
  } catch (err) {
    await db.destroy()
    throw new StorageStartError(`cannot reach PostgreSQL at ${target}: ${oneLine(err)}`)
  }
  try {
    // Nodes that start together take turns: the first migrates, the others find nothing left to do.
    await db.connection().execute(async (conn) => {
      // A migration may rebuild an index over many rows: no statement timeout for it.
      await sql`set statement_timeout = 0`.execute(conn)
      await sql`select pg_advisory_lock(${lockKey('migrate')})`.execute(conn)
      try {
        await migrateToLatest(conn, migrations)
      } finally {
        await sql`select pg_advisory_unlock(${lockKey('migrate')})`.execute(conn)
        await sql`reset statement_timeout`.execute(conn)
      }
    })
  } catch (err) {
    await db.destroy()
    throw new StorageStartError(`cannot migrate the database at ${target}: ${oneLine(err)}`)
  }

  const link = createClusterLink(pool, config, log, observer?.notification)
  const ordered = createGroupCommit(db, {
    beginOrdered: unordered ? undefined : async (trx) => { await trx.executeQuery(ORDER) },
    savepoints: false,
    onCommit: observer?.commit
  })
  return {
    engine: 'postgresql',
    db,
    // Only the writes that take positions (sends, and the agent changes they must not race) share group commits,
    // behind the order lock. Every other write (a read marking deliveries, an ack, a broadcast's copies) runs in a
    // transaction of its own on the pool: PostgreSQL flushes the WAL of concurrent commits together by itself, and a
    // batch of unrelated writes would hold each one's row locks until the last is done, making nodes wait on each
    // other and deadlock.
    write: (work, options) => options?.ordered === true ? ordered(work, options) : db.transaction().execute((trx) => runAlone(trx, work)),
    schemaVersion: Object.keys(migrations).at(-1) as string,
    size: async () => (await sql<{ size: number }>`select pg_database_size(current_database()) as size`.execute(db)).rows[0].size,
    problem: () => lastFailure?.message,
    async check () {
      // A server that answers but takes no writes (a standby, or one set read-only) is not serving.
      const { rows: [{ ro }] } = await sql<{ ro: string }>`select current_setting('transaction_read_only') as ro`.execute(db)
      return ro === 'on' ? 'database is read-only' : lastFailure?.message
    },
    describeError: describePostgresError,
    cluster: link,
    exclusively: async (job, work) => db.transaction().execute(async (trx) => {
      const { rows: [{ mine }] } = await sql<{ mine: boolean }>`select pg_try_advisory_xact_lock(${lockKey(job)}) as mine`.execute(trx)
      return mine ? work(trx) : undefined
    }),
    claimRows: (table) => sql`for update of ${sql.id(table)} skip locked`,
    textList: (json) => sql<{ value: string }>`select value from jsonb_array_elements_text(cast(${json} as jsonb))`,
    pool: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    async close () {
      await link.close()
      await db.destroy()
    }
  }
}

const oneLine = (err: unknown): string => String((err as Error)?.message ?? err).split('\n')[0]

// SQLSTATE classes and codes that mean "the database cannot serve now, try again": connection exceptions (08),
// insufficient resources such as a full disk (53), operator intervention such as a shutdown (57), system errors (58),
// serialization failures and deadlocks (40001, 40P01), a lock not available (55P03); a read-only server (25006) and a full
// disk (53100) get words of their own below.
const RETRY_CLASSES = new Set(['08', '53', '57', '58'])
const RETRY_CODES = new Set(['40001', '40P01', '55P03'])
// The client's own words for a connection that is gone or never came.
const CONNECTION_ERRORS = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|Connection terminated|connection error|timeout exceeded when trying to connect|Client was closed|not queryable|Cannot use a pool after calling end/i

// Failures that only writes meet: reads succeeding says nothing about them.
const WRITE_FAILURES = new Set(['53100', '25006'])

export function describePostgresError (err: unknown): StorageFailure | undefined {
  if (!(err instanceof Error)) return undefined
  // A SQLSTATE only on errors the server sent; Node's own codes (EPIPE, ECONNRESET) are five capitals too.
  if (err instanceof pg.DatabaseError && typeof err.code === 'string') {
    const code = err.code
    if (code === '53100') return { message: 'database disk full', retry: true }
    if (code === '25006') return { message: 'database is read-only', retry: true }
    if (code.startsWith('57')) return { message: 'database is shutting down or restarting', retry: true }
    if (RETRY_CODES.has(code)) return { message: 'database busy', retry: true }
    if (RETRY_CLASSES.has(code.slice(0, 2))) return { message: 'database unavailable', retry: true }
    // The credentials or the database changed under a running bus: an operator's business, but a 503 all the same.
    if (code === '28P01' || code === '28000' || code === '3D000') return { message: 'database refuses the connection', retry: true }
    return undefined
  }
  const code = (err as { code?: unknown }).code
  if (CONNECTION_ERRORS.test(err.message) || (typeof code === 'string' && CONNECTION_ERRORS.test(code))) {
    return { message: 'database unreachable', retry: true }
  }
  return undefined
}

// NOTIFY carries at most 8000 bytes; payloads are packed into notifications of at most this many.
const MAX_NOTIFY_BYTES = 7500
const CHANNEL = 'agent_bus'
const NOTIFY = "select set_config('synchronous_commit', 'off', true), pg_notify($1, $2)"
// The listening connection proves it is alive this often (a half-open TCP connection would otherwise wait for ever).
const PING_MS = 5000
const RECONNECT_MAX_MS = 5000

// NOTIFY from the pool, LISTEN on a client of its own. Each node tags what it sends, and drops its own echo. Payloads
// published in one turn of the event loop go out in as few notifications as fit.
function createClusterLink (pool: pg.Pool, config: pg.ClientConfig, log: NonNullable<PostgresOptions['log']>,
  received = (): void => {}): ClusterLink & { close: () => Promise<void> } {
  const node = randomUUID()
  let queue: string[] = []
  let flushing = false
  let closed = false
  let client: pg.Client | undefined
  let pinger: NodeJS.Timeout | undefined
  let retry: NodeJS.Timeout | undefined

  function flush (): void {
    flushing = false
    const payloads = queue
    queue = []
    let chunk: string[] = []
    let bytes = node.length
    const send = (): void => {
      if (chunk.length === 0) return
      // A lost notification costs its readers latency (they re-read on their own schedule), never a message.
      // NOTIFY gives its transaction an id, so its commit would wait for a WAL flush (an fsync) while holding the
      // server-wide notify lock; nothing it says needs to survive a crash, so it commits without waiting.
      pool.query(NOTIFY, [CHANNEL, [node, ...chunk].join('\n')]).catch(() => {})
      chunk = []
      bytes = node.length
    }
    for (const payload of payloads) {
      const size = Buffer.byteLength(payload) + 1
      if (size + node.length > MAX_NOTIFY_BYTES) continue // the caller keeps payloads small; a larger one cannot go
      if (bytes + size > MAX_NOTIFY_BYTES) send()
      chunk.push(payload)
      bytes += size
    }
    send()
  }

  return {
    publish (payload) {
      if (closed) return
      queue.push(payload)
      if (!flushing) {
        flushing = true
        setImmediate(flush)
      }
    },
    listen (onPayload, onGap) {
      let delay = 100
      const connect = async (): Promise<void> => {
        // Named apart from the pool's connections, so an operator sees it in pg_stat_activity.
        const c = new pg.Client({ ...config, application_name: 'agent-bus listen', query_timeout: PING_MS })
        const drop = (err?: unknown): void => {
          if (client !== c) return
          client = undefined
          clearInterval(pinger)
          c.end().catch(() => {})
          if (closed) return
          log('warn', 'lost the connection that listens for other nodes: reconnecting', err)
          retry = setTimeout(() => { void connect() }, delay)
          delay = Math.min(delay * 2, RECONNECT_MAX_MS)
        }
        client = c
        c.on('error', drop)
        c.on('end', () => drop())
        c.on('notification', (message) => {
          const [from, ...payloads] = (message.payload ?? '').split('\n')
          if (from === node) return
          received()
          for (const payload of payloads) onPayload(payload)
        })
        try {
          await c.connect()
          await c.query(`listen ${CHANNEL}`)
        } catch (err) {
          drop(err)
          return
        }
        if (client !== c) return
        delay = 100
        pinger = setInterval(() => { c.query('select 1').catch(drop) }, PING_MS)
        pinger.unref()
        // Whatever was published while this node was not listening is unknown: every reader re-reads.
        onGap()
        log('info', 'listening for other nodes')
      }
      void connect()
    },
    async close () {
      closed = true
      clearTimeout(retry)
      clearInterval(pinger)
      const c = client
      client = undefined
      await c?.end().catch(() => {})
    }
  }
}
