import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { openStorage } from '../db/dialects/index.js'
import type { Write } from '../db/group-commit.js'
import { MessageCache } from '../db/message-cache.js'
import type { Database } from '../db/schema.js'
import type { Storage } from '../db/storage.js'
import { startLoop } from './loop.js'

declare module 'fastify' {
  interface FastifyInstance {
    // The database engine behind the bus (db/storage.ts).
    storage: Storage
    db: Kysely<Database>
    // Runs a write in the next group commit: many writes, one transaction, one commit.
    write: Write
    // Recently read messages, which never change once stored (db/message-cache.ts).
    messageCache: MessageCache
  }
}

export interface DbOptions {
  // BUS_DB: a SQLite path, :memory:, or a PostgreSQL URL.
  url: string
  sync: 'full' | 'normal'
  // How often to look for a storage problem (a deleted file, an unreachable server), so that one is logged even
  // while nothing is written; 0 turns the loop off.
  checkMs?: number
}

const db: FastifyPluginAsync<DbOptions> = async (app, { url, sync, checkMs = 1000 }) => {
  const log = app.log.child({ plugin: 'db' })
  const storage = await openStorage({
    url,
    sync,
    log: (level, msg, err) => { log[level]({ err }, msg) },
    observer: app.hasDecorator('telemetry') ? app.telemetry.storage : undefined
  })
  app.addHook('onClose', async () => { await storage.close() })
  app.decorate('storage', storage)
  app.decorate('db', storage.db)
  app.decorate('write', storage.write)
  // 8 MiB holds about 10,000 messages of a few hundred bytes; messages over 16 KiB are read from the database.
  app.decorate('messageCache', new MessageCache(8 << 20, 16 << 10))

  // Writes refuse themselves while the store cannot keep them; this says so in the log when it starts and ends.
  let reported: string | undefined
  startLoop(app, checkMs, async () => {
    const problem = storage.problem()
    if (problem !== undefined && problem !== reported) log.error({ problem, engine: storage.engine }, 'the database cannot take writes: they are refused until it can')
    else if (problem === undefined && reported !== undefined) log.info({ engine: storage.engine }, 'the database takes writes again')
    reported = problem
  }, log)
}

export default fp(db, { name: 'db', fastify: '5.x' })
