import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { createGroupCommit, type Write } from '../db/group-commit.js'
import { lockDatabase } from '../db/lock.js'
import { MessageCache } from '../db/message-cache.js'
import { migrateToLatest } from '../db/migrate.js'
import { openDatabase, type OpenDatabase } from '../db/open.js'
import type { Database } from '../db/schema.js'
import { startLoop } from './loop.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
    // Bytes the database takes on disk, for /stats.
    dbSize: () => number
    // Why the store cannot take writes (disk full, file deleted…), or undefined; for /health.
    storageProblem: () => string | undefined
    // Runs a write in the next group commit: many writes, one transaction, one fsync.
    write: Write
    // Recently read messages, which never change once stored (db/message-cache.ts).
    messageCache: MessageCache
  }
}

export interface DbOptions {
  path: string
  sync: 'full' | 'normal'
  // How often to check that the path still names the open file, so a deletion is logged even while nothing is
  // written (writes check it themselves); 0 turns the loop off.
  fileCheckMs?: number
}

const db: FastifyPluginAsync<DbOptions> = async (app, { path, sync, fileCheckMs = 1000 }) => {
  // Locked before SQLite opens the file, so that a refused bus never touches it (db/lock.ts).
  const lock = path === ':memory:' ? undefined : await lockDatabase(path)
  const checkFile = lock?.fileProblem ?? (() => undefined)
  let opening: OpenDatabase | undefined
  try {
    opening = openDatabase({ path, sync, checkFile })
    // Without WAL, readers block the writer and the durability promise changes: refuse to run rather than degrade.
    const mode = opening.sqlite.pragma('journal_mode', { simple: true })
    if (path !== ':memory:' && mode !== 'wal') throw new Error(`${path}: journal_mode is ${String(mode)}, expected wal`)
    await migrateToLatest(opening.db)
  } catch (err) {
    await opening?.db.destroy()
    lock?.release()
    throw err
  }
  const opened = opening
  app.addHook('onClose', async () => {
    // In this order: closing the lock's descriptor first would drop SQLite's fcntl locks on the file (close(2)
    // releases all of a process's fcntl locks on it), letting another process take the WAL from under it.
    await opened.db.destroy()
    lock?.release()
  })
  app.decorate('db', opened.db)
  app.decorate('dbSize', opened.sizeBytes)
  app.decorate('storageProblem', opened.writeProblem)
  app.decorate('write', createGroupCommit(opened.db))
  // 8 MiB holds about 10,000 messages of a few hundred bytes; messages over 16 KiB are read from the database.
  app.decorate('messageCache', new MessageCache(8 << 20, 16 << 10))

  // Writes refuse themselves once the file is gone (db/open.ts); this says so in the log when it happens, once.
  const log = app.log.child({ plugin: 'db' })
  let reported: string | undefined
  startLoop(app, lock === undefined ? 0 : fileCheckMs, async () => {
    const problem = checkFile()
    if (problem !== undefined && problem !== reported) log.error({ problem, path }, 'the database file is gone: writes are refused until it is back in place (a restart would open an empty database)')
    else if (problem === undefined && reported !== undefined) log.info({ path }, 'the database file is back where it was: writes resume')
    reported = problem
  }, log)
}

export default fp(db, { name: 'db', fastify: '5.x' })
