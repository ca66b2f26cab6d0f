import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, SqliteDialect, type SqliteDatabase } from 'kysely'
import type { Database } from './schema.js'

export interface OpenOptions {
  path: string
  sync: 'full' | 'normal'
  busyTimeoutMs?: number
}

export interface OpenDatabase {
  db: Kysely<Database>
  sqlite: SQLite.Database
  // Bytes on disk (main file and WAL); 0 in memory.
  sizeBytes: () => number
}

// Kysely's SQLite driver prepares every query anew; compiling the SQL was an eighth of a send's CPU time.
// The hot queries have fixed SQL, so a bounded cache of prepared statements serves them; the connection is used by
// one query at a time (Kysely's mutex), so a statement is never reused while another iterates it.
const STATEMENT_CACHE = 500
function withStatementCache (sqlite: SQLite.Database): SqliteDatabase {
  const cache = new Map<string, SQLite.Statement>()
  return {
    close: () => { cache.clear(); sqlite.close() },
    prepare (sql) {
      let stmt = cache.get(sql)
      if (stmt) {
        cache.delete(sql) // re-inserted below: the Map's order is the recency order
      } else {
        stmt = sqlite.prepare(sql)
        if (cache.size >= STATEMENT_CACHE) cache.delete(cache.keys().next().value as string)
      }
      cache.set(sql, stmt)
      return stmt
    }
  }
}

// Everything SQLite-specific lives here: the file, the pragmas, the size on disk.
export function openDatabase ({ path, sync, busyTimeoutMs = 5000 }: OpenOptions): OpenDatabase {
  const memory = path === ':memory:'
  if (!memory) mkdirSync(dirname(path), { recursive: true })
  const sqlite = new SQLite(path)
  // WAL lets readers run beside the one writer; synchronous decides whether a commit waits for fsync
  // (full: a 201 survives power loss) or only for the OS (normal: survives a process crash).
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`)
  sqlite.pragma('foreign_keys = ON')
  sqlite.pragma(`busy_timeout = ${busyTimeoutMs}`)
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) })
  const sizeBytes = (): number => {
    if (memory) return 0
    let size = 0
    for (const file of [path, `${path}-wal`]) {
      try { size += statSync(file).size } catch { /* the WAL file may not exist yet */ }
    }
    return size
  }
  return { db, sqlite, sizeBytes }
}

// What a storage error means for a client, when it is one the bus recovers from by itself once the cause is gone.
export function describeStorageError (err: unknown): string | undefined {
  if (!(err instanceof SQLite.SqliteError)) return undefined
  const code = err.code
  if (code === 'SQLITE_FULL') return 'disk full'
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'database busy'
  if (code.startsWith('SQLITE_READONLY')) return 'database is read-only'
  if (code.startsWith('SQLITE_IOERR') || code.startsWith('SQLITE_CANTOPEN')) return 'storage I/O error'
  return undefined
}
