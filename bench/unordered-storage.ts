// Bench only: what bench/unordered-server.ts puts in place of db/dialects/index.js for plugins/db.js. The same
// storage, on PostgreSQL, with the cluster-wide order lock off (openPostgres's `unordered`, which has no setting of
// its own): the benchmark's measure of what the order guarantee costs. Never for real use: readers may skip messages.
import type { StorageOptions } from '../db/dialects/index.js'
import { isPostgresUrl, openPostgres } from '../db/dialects/postgres.js'
import type { Storage } from '../db/storage.js'

export * from '../db/dialects/index.js'

export async function openStorage ({ url, log }: StorageOptions): Promise<Storage> {
  if (!isPostgresUrl(url)) throw new Error('bench/unordered-server: BUS_DB must be a PostgreSQL URL')
  ;(globalThis as { busUnordered?: boolean }).busUnordered = true
  return openPostgres({ url, log, unordered: true })
}
