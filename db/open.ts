import { mkdirSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, SqliteDialect } from 'kysely'
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
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) })
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
