import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, sql, SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely'
import { createGroupCommit } from '../group-commit.js'
import { migrateToLatest } from '../migrate.js'
import { migrations } from '../migrations/sqlite/index.js'
import type { Database } from '../schema.js'
import type { Storage, StorageObserver } from '../storage.js'
import { lockDatabase } from './sqlite-lock.js'

// The embedded engine: one process owns one SQLite file (db/dialects/sqlite-lock.ts), so it needs no wake-ups
// between nodes, no claims and no cluster-wide locks, and one writer commits messages in seq order by itself.

export interface OpenOptions {
  path: string
  sync: 'full' | 'normal'
  busyTimeoutMs?: number
  // Why the file must take no more writes (it was deleted or replaced while open), or undefined. Asked as each
  // transaction begins and before each write outside one, so it must be cheap (db/lock.ts: two stat calls).
  checkFile?: () => string | undefined
}

export interface OpenDatabase {
  db: Kysely<Database>
  sqlite: SQLite.Database
  // Bytes on disk (main file and WAL); 0 in memory.
  sizeBytes: () => number
  // Why the store cannot take writes now, or undefined: the file check fails, or the last write failed for a
  // storage reason (disk full, read-only, I/O error) and no write has committed since.
  writeProblem: () => string | undefined
}

// A write refused before it reached SQLite, because the store cannot keep it.
export class StorageFault extends Error {
  override name = 'StorageFault'
}

type Kind = 'read' | 'begin' | 'commit' | 'rollback' | 'write'

// sqlite3_stmt_readonly is true for BEGIN, COMMIT and ROLLBACK too, so those are told apart by their SQL.
function kindOf (sql: string, stmt: SQLite.Statement): Kind {
  if (/^\s*begin\b/i.test(sql)) return 'begin'
  if (/^\s*(commit|end|release)\b/i.test(sql)) return 'commit'
  if (/^\s*rollback\s*(transaction\s*)?;?\s*$/i.test(sql)) return 'rollback' // not ROLLBACK TO a savepoint
  return stmt.readonly ? 'read' : 'write'
}

// Kysely's SQLite driver prepares every query anew; compiling the SQL was an eighth of a send's CPU time.
// The hot queries have fixed SQL, so a bounded cache of prepared statements serves them; the connection is used by
// one query at a time (Kysely's mutex), so a statement is never reused while another iterates it.
// The cache is also where every statement passes, so it watches the writes (watchWrites below). A statement's kind
// is found once, when it is prepared; reads are handed to Kysely untouched.
const STATEMENT_CACHE = 500
function withStatementCache (sqlite: SQLite.Database, watch: (stmt: SQLite.Statement, kind: Kind) => SqliteStatement): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>()
  return {
    close: () => { cache.clear(); sqlite.close() },
    prepare (sql) {
      let stmt = cache.get(sql)
      if (stmt) {
        cache.delete(sql) // re-inserted below: the Map's order is the recency order
      } else {
        const prepared = sqlite.prepare(sql)
        const kind = kindOf(sql, prepared)
        stmt = kind === 'read' ? prepared : watch(prepared, kind)
        if (cache.size >= STATEMENT_CACHE) cache.delete(cache.keys().next().value as string)
      }
      cache.set(sql, stmt)
      return stmt
    }
  }
}

// Remembers the last storage failure of a write until a write commits, which is what /health reports: a disk that
// filled up shows there until there is room again. Refuses writes while checkFile() says the file is gone, since
// they would be answered 201 and lost at the next start. The check runs once per transaction (batches of sends
// share one), not per statement.
function watchWrites (sqlite: SQLite.Database, checkFile: () => string | undefined) {
  let lastFailure: string | undefined
  let refusal: string | undefined
  const watch = (stmt: SQLite.Statement, kind: Kind): SqliteStatement => {
    if (kind === 'rollback') {
      // On SQLITE_FULL or an I/O error SQLite may roll the whole transaction back by itself. A ROLLBACK after that
      // fails ("no transaction is active"), and Kysely's transaction().execute() throws that instead of the first
      // error, which turned a full disk into a 500. With nothing left to undo, the ROLLBACK is a no-op here.
      return {
        reader: false,
        all: (parameters) => sqlite.inTransaction ? stmt.all(parameters) : [],
        run: (parameters) => sqlite.inTransaction ? stmt.run(parameters) : { changes: 0, lastInsertRowid: 0 },
        iterate: (parameters) => stmt.iterate(parameters)
      }
    }
    const watched = <T>(run: () => T): T => {
      if (kind === 'begin') refusal = checkFile()
      if (kind === 'write') {
        const why = sqlite.inTransaction ? refusal : checkFile()
        if (why !== undefined) throw new StorageFault(why)
      }
      try {
        const result = run()
        if (kind !== 'begin' && !sqlite.inTransaction) lastFailure = undefined // committed
        return result
      } catch (err) {
        lastFailure = describeStorageError(err) ?? lastFailure
        throw err
      }
    }
    return {
      reader: stmt.reader,
      all: (parameters) => watched(() => stmt.all(parameters)),
      run: (parameters) => watched(() => stmt.run(parameters)),
      iterate: (parameters) => stmt.iterate(parameters) // Kysely streams selects only, which are never watched
    }
  }
  return { watch, writeProblem: () => checkFile() ?? lastFailure }
}

// Everything SQLite-specific lives here: the file, the pragmas, the size on disk.
export function openDatabase ({ path, sync, busyTimeoutMs = 5000, checkFile = () => undefined }: OpenOptions): OpenDatabase {
  const memory = path === ':memory:'
  if (!memory) mkdirSync(dirname(path), { recursive: true })
  const sqlite = new SQLite(path)
  // WAL lets readers run beside the one writer; synchronous decides whether a commit waits for fsync
  // (full: a 201 survives power loss) or only for the OS (normal: survives a process crash).
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`)
  sqlite.pragma('foreign_keys = ON')
  sqlite.pragma(`busy_timeout = ${busyTimeoutMs}`)
  const { watch, writeProblem } = watchWrites(sqlite, checkFile)
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite, watch) }) })
  const sizeBytes = (): number => {
    if (memory) return 0
    let size = 0
    for (const file of [path, `${path}-wal`]) {
      try { size += statSync(file).size } catch { /* the WAL file may not exist yet */ }
    }
    return size
  }
  return { db, sqlite, sizeBytes, writeProblem }
}

// What a storage error means for a client: the bus recovers from SQLite's by itself once the cause is gone (a
// full disk, a lock); a StorageFault (the file was deleted) needs an operator, and its message says so.
export function describeStorageError (err: unknown): string | undefined {
  if (err instanceof StorageFault) return err.message
  if (!(err instanceof SQLite.SqliteError)) return undefined
  const code = err.code
  if (code === 'SQLITE_FULL') return 'disk full'
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'database busy'
  if (code.startsWith('SQLITE_READONLY')) return 'database is read-only'
  if (code.startsWith('SQLITE_IOERR') || code.startsWith('SQLITE_CANTOPEN')) return 'storage I/O error'
  return undefined
}

export interface SqliteOptions {
  path: string
  sync: 'full' | 'normal'
  observer?: StorageObserver
}

export async function openSqlite ({ path, sync, observer }: SqliteOptions): Promise<Storage> {
  // Locked before SQLite opens the file, so that a refused bus never touches it.
  const lock = path === ':memory:' ? undefined : await lockDatabase(path)
  const checkFile = lock?.fileProblem ?? (() => undefined)
  let opening: OpenDatabase | undefined
  try {
    opening = openDatabase({ path, sync, checkFile })
    // Without WAL, readers block the writer and the durability promise changes: refuse to run rather than degrade.
    const mode = opening.sqlite.pragma('journal_mode', { simple: true })
    if (path !== ':memory:' && mode !== 'wal') throw new Error(`${path}: journal_mode is ${String(mode)}, expected wal`)
    await migrateToLatest(opening.db, migrations)
  } catch (err) {
    await opening?.db.destroy()
    lock?.release()
    throw err
  }
  const { db, sizeBytes, writeProblem } = opening
  return {
    engine: 'sqlite',
    db,
    write: createGroupCommit(db, { onCommit: observer?.commit }),
    schemaVersion: Object.keys(migrations).at(-1) as string,
    size: async () => sizeBytes(),
    problem: writeProblem,
    async check () {
      await sql`select 1`.execute(db)
      return writeProblem()
    },
    describeError (err) {
      const message = describeStorageError(err)
      // A deleted or moved database file needs an operator: retrying cannot help.
      return message === undefined ? undefined : { message, retry: !(err instanceof StorageFault) }
    },
    cluster: undefined,
    // One process owns the file: whatever runs here runs nowhere else.
    exclusively: async (_job, work) => db.transaction().execute(work),
    // One writer at a time: a row this process selects cannot be claimed by anyone else.
    claimRows: undefined,
    textList: (json) => sql<{ value: string }>`select value from json_each(${json})`,
    pool: undefined,
    async close () {
      // In this order: closing the lock's descriptor first would drop SQLite's fcntl locks on the file (close(2)
      // releases all of a process's fcntl locks on it), letting another process take the WAL from under it.
      await db.destroy()
      lock?.release()
    }
  }
}
