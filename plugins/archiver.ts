import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { archiveBatch } from '../db/messages.js'
import type { Storage } from '../db/storage.js'
import { startLoop } from './loop.js'

export interface ArchiverOptions {
  maxAgeMs: number
  // 0 disables the loop (tests call archiveRead directly); otherwise it also runs once at start-up.
  intervalMs: number
  batch?: number
}

// Archives every fully read message older than maxAgeMs, batch by batch, letting queued requests run in between.
export async function archiveRead (storage: Storage, now: Date, maxAgeMs: number, batch = 500): Promise<number> {
  const cutoff = new Date(now.getTime() - maxAgeMs).toISOString()
  let total = 0
  for (;;) {
    const moved = await archiveBatch(storage, cutoff, batch)
    total += moved
    if (moved < batch) return total
    await yieldToEventLoop()
  }
}

const archiver: FastifyPluginAsync<ArchiverOptions> = async (app, { maxAgeMs, intervalMs, batch }) => {
  const log = app.log.child({ plugin: 'archiver' })
  startLoop(app, intervalMs, async () => {
    const n = await archiveRead(app.storage, new Date(), maxAgeMs, batch)
    if (n > 0) log.info({ archived: n }, 'archived read messages')
  }, log, { runAtStart: true })
}

export default fp(archiver, { name: 'archiver', dependencies: ['db'], fastify: '5.x', encapsulate: true })
