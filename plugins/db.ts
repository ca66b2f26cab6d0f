import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { migrateToLatest } from '../db/migrate.js'
import { openDatabase } from '../db/open.js'
import type { Database } from '../db/schema.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
    // Bytes the database takes on disk, for /stats.
    dbSize: () => number
  }
}

export interface DbOptions {
  path: string
  sync: 'full' | 'normal'
}

const db: FastifyPluginAsync<DbOptions> = async (app, { path, sync }) => {
  const opened = openDatabase({ path, sync })
  app.addHook('onClose', async () => { await opened.db.destroy() })
  // Without WAL, readers block the writer and the durability promise changes: refuse to run rather than degrade.
  const mode = opened.sqlite.pragma('journal_mode', { simple: true })
  if (path !== ':memory:' && mode !== 'wal') throw new Error(`${path}: journal_mode is ${String(mode)}, expected wal`)
  await migrateToLatest(opened.db)
  app.decorate('db', opened.db)
  app.decorate('dbSize', opened.sizeBytes)
}

export default fp(db, { name: 'db', fastify: '5.x' })
