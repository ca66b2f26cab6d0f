import type { Storage, StorageObserver } from '../storage.js'
import { isPostgresUrl, openPostgres, type PostgresOptions } from './postgres.js'
import { openSqlite } from './sqlite.js'

export interface StorageOptions {
  // BUS_DB: a postgres:// or postgresql:// URL, or else a SQLite file path or :memory:.
  url: string
  // SQLite's synchronous mode (BUS_SYNC); PostgreSQL's durability is the server's synchronous_commit.
  sync: 'full' | 'normal'
  log?: PostgresOptions['log']
  observer?: StorageObserver
}

// Opens, and migrates, the engine BUS_DB names.
export async function openStorage ({ url, sync, log, observer }: StorageOptions): Promise<Storage> {
  return isPostgresUrl(url) ? openPostgres({ url, log, observer }) : openSqlite({ path: url, sync, observer })
}
