import { CompiledQuery, type Kysely, type Transaction } from 'kysely'
import type { Database } from './schema.js'

export interface WriteOptions {
  // The write stores messages, and so takes message positions (seq): the storage must make positions visible in
  // the order they were taken (see beginOrdered below).
  ordered?: boolean
}

export type Write = <T>(work: (trx: Transaction<Database>) => Promise<T>, options?: WriteOptions) => Promise<T>

export interface GroupCommitOptions {
  maxBatch?: number
  // Runs first in a batch that holds an ordered write. An engine whose writers commit concurrently (several nodes on
  // one database) serialises such batches here, so that no position becomes visible before a lower one.
  beginOrdered?: (trx: Transaction<Database>) => Promise<void>
  // A savepoint around each write of a batch keeps one failing write from undoing the others. Each costs two
  // statements; where a statement is a network round trip (PostgreSQL) that is most of a send's cost, so an engine may
  // go without: a batch in which a write fails is then rolled back whole and its writes run again one by one.
  savepoints?: boolean
}

interface Pending {
  ordered: boolean
  work: (trx: Transaction<Database>) => Promise<unknown>
  resolve: (value: unknown) => void
  reject: (err: unknown) => void
}

// Group commit. Writes that arrive in the same event-loop turn, or while a commit is under way, share one
// transaction, so one commit (one fsync with BUS_SYNC=full) serves many requests; each caller hears back only after
// the commit that holds its write. A savepoint per write keeps one failing write from undoing the others. A write
// must not start another write from inside: it would wait for a batch that waits for it.
// Compiled once: they run around every write of a batch.
const SAVEPOINT = CompiledQuery.raw('savepoint w')
const RELEASE = CompiledQuery.raw('release w')
const ROLLBACK = CompiledQuery.raw('rollback to w')

export function createGroupCommit (db: Kysely<Database>, { maxBatch = 256, beginOrdered, savepoints = true }: GroupCommitOptions = {}): Write {
  let queue: Pending[] = []
  let flushing = false

  async function flush (): Promise<void> {
    const batch = queue.slice(0, maxBatch)
    queue = queue.slice(batch.length)
    const outcomes: Array<{ value: unknown } | { err: unknown }> = []
    try {
      // A failed write's ROLLBACK is safe even when SQLite already rolled the whole transaction back by itself (a
      // full disk, an I/O error): db/open.ts makes that ROLLBACK a no-op, so execute() rethrows the first error.
      await db.transaction().execute(async (trx) => {
        if (beginOrdered !== undefined && batch.some((item) => item.ordered)) await beginOrdered(trx)
        if (batch.length === 1 || !savepoints) {
          for (const { work } of batch) outcomes.push({ value: await work(trx) })
          return
        }
        for (const { work } of batch) {
          await trx.executeQuery(SAVEPOINT)
          try {
            outcomes.push({ value: await work(trx) })
            await trx.executeQuery(RELEASE)
          } catch (err) {
            // If SQLite rolled back the whole transaction the savepoint is gone too: the batch fails with this error.
            await trx.executeQuery(ROLLBACK).catch(() => { throw err })
            await trx.executeQuery(RELEASE)
            outcomes.push({ err })
          }
        }
      })
    } catch (err) {
      if (savepoints || batch.length === 1) {
        for (const item of batch) item.reject(err)
        return
      }
      // Without savepoints one write's failure undid the batch: each runs again alone, and fails alone.
      outcomes.length = 0
      for (const item of batch) {
        try {
          outcomes.push({ value: await db.transaction().execute(async (trx) => {
            if (beginOrdered !== undefined && item.ordered) await beginOrdered(trx)
            return item.work(trx)
          }) })
        } catch (err) {
          outcomes.push({ err })
        }
      }
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i]
      if ('value' in outcome) item.resolve(outcome.value)
      else item.reject(outcome.err)
    })
  }

  function schedule (): void {
    if (flushing || queue.length === 0) return
    flushing = true
    // setImmediate, not a microtask: requests parsed in this turn of the event loop join the batch.
    setImmediate(() => {
      flush().finally(() => {
        flushing = false
        schedule()
      })
    })
  }

  return <T>(work: (trx: Transaction<Database>) => Promise<T>, options: WriteOptions = {}) => new Promise<T>((resolve, reject) => {
    queue.push({ ordered: options.ordered === true, work, resolve: resolve as (value: unknown) => void, reject })
    schedule()
  })
}
