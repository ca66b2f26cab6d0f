import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { createGroupCommit, type Write } from '../db/group-commit.js'
import { lockDatabase } from '../db/lock.js'
import { MessageCache } from '../db/message-cache.js'
import { migrateToLatest } from '../db/migrate.js'
import { openDatabase } from '../db/open.js'
import type { Database } from '../db/schema.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
    // Bytes the database takes on disk, for /stats.
    dbSize: () => number
    // Runs a write in the next group commit: many writes, one transaction, one fsync.
    write: Write
    // Recently read messages, which never change once stored (db/message-cache.ts).
    messageCache: MessageCache
  }
}

export interface DbOptions {
  path: string
  sync: 'full' | 'normal'
}

const db: FastifyPluginAsync<DbOptions> = async (app, { path, sync }) => {
  const opened = openDatabase({ path, sync })
  let unlock: (() => Promise<void>) | undefined
  try {
    if (path !== ':memory:') unlock = await lockDatabase(path)
    // Without WAL, readers block the writer and the durability promise changes: refuse to run rather than degrade.
    const mode = opened.sqlite.pragma('journal_mode', { simple: true })
    if (path !== ':memory:' && mode !== 'wal') throw new Error(`${path}: journal_mode is ${String(mode)}, expected wal`)
    await migrateToLatest(opened.db)
  } catch (err) {
    await opened.db.destroy()
    await unlock?.()
    throw err
  }
  app.addHook('onClose', async () => {
    await opened.db.destroy()
    await unlock?.()
  })
  app.decorate('db', opened.db)
  app.decorate('dbSize', opened.sizeBytes)
  app.decorate('write', createGroupCommit(opened.db))
  // 8 MiB holds about 10,000 messages of a few hundred bytes; messages over 16 KiB are read from the database.
  app.decorate('messageCache', new MessageCache(8 << 20, 16 << 10))
}

export default fp(db, { name: 'db', fastify: '5.x' })
