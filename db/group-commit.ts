import { CompiledQuery, type Kysely, type Transaction } from 'kysely'
import type { Database } from './schema.js'

export interface WriteOptions {
  // The write stores messages, and so takes message positions (seq): the storage must make positions visible in
  // the order they were taken (see beginOrdered below).
  ordered?: boolean
}

// Work that costs less done for many callers at once, as one multi-row statement instead of one per caller: a group
// commit hands every input of its batch that shares `run` to one call, which answers one output per input, in order.
export interface Bulk<I, O> {
  run: (trx: Transaction<Database>, inputs: I[]) => Promise<O[]>
  input: I
}
export type Work<T> = ((trx: Transaction<Database>) => Promise<T>) | Bulk<any, T>
export const bulk = <I, O>(run: Bulk<I, O>['run'], input: I): Bulk<I, O> => ({ run, input })

// A write on its own, outside any batch.
export async function runAlone<T> (trx: Transaction<Database>, work: Work<T>): Promise<T> {
  return typeof work === 'function' ? work(trx) : (await runBulk(trx, work.run, [work.input]))[0]
}

async function runBulk<I, O> (trx: Transaction<Database>, run: Bulk<I, O>['run'], inputs: I[]): Promise<O[]> {
  const outputs = await run(trx, inputs)
  if (outputs.length !== inputs.length) throw new Error(`a bulk write answered ${outputs.length} outputs for ${inputs.length} inputs`)
  return outputs
}

export type Write = <T>(work: Work<T>, options?: WriteOptions) => Promise<T>

export interface GroupCommitOptions {
  maxBatch?: number
  // Runs first in a batch that holds an ordered write. An engine whose writers commit concurrently (several nodes on
  // one database) serialises such batches here, so that no position becomes visible before a lower one.
  beginOrdered?: (trx: Transaction<Database>) => Promise<void>
  // A savepoint around each write of a batch keeps one failing write from undoing the others. Each costs two
  // statements; where a statement is a network round trip (PostgreSQL) that is most of a send's cost, so an engine may
  // go without: a batch in which a write fails is then rolled back whole and its writes run again one by one.
  savepoints?: boolean
  // Told of each batch that committed: how many writes it held, and how long its transaction took, commit (and
  // fsync) included, in seconds. For metrics.
  onCommit?: (writes: number, seconds: number) => void
}

interface Pending {
  ordered: boolean
  work: Work<unknown>
  resolve: (value: unknown) => void
  reject: (err: unknown) => void
}

type Outcome = { value: unknown } | { err: unknown }

// What a batch runs as one step: a write alone, or the bulk writes that share a run, together.
interface Step {
  run: Bulk<unknown, unknown>['run'] | undefined
  items: number[]
}

function stepsOf (batch: Pending[]): Step[] {
  const steps: Step[] = []
  const byRun = new Map<Bulk<unknown, unknown>['run'], Step>()
  batch.forEach(({ work }, i) => {
    if (typeof work === 'function') return steps.push({ run: undefined, items: [i] })
    const step = byRun.get(work.run)
    if (step !== undefined) return step.items.push(i)
    const added: Step = { run: work.run, items: [i] }
    byRun.set(work.run, added)
    steps.push(added)
  })
  return steps
}

// Group commit. Writes that arrive in the same event-loop turn, or while a commit is under way, share one
// transaction, so one commit (one fsync with BUS_SYNC=full) serves many requests; each caller hears back only after
// the commit that holds its write. Bulk writes of a batch that share a run go to it together. A savepoint per step
// keeps one failing write from undoing the others (a failing bulk step runs again write by write). A write must not
// start another write from inside: it would wait for a batch that waits for it.
// Compiled once: they run around every step of a batch.
const SAVEPOINT = CompiledQuery.raw('savepoint w')
const RELEASE = CompiledQuery.raw('release w')
const ROLLBACK = CompiledQuery.raw('rollback to w')

export function createGroupCommit (db: Kysely<Database>, { maxBatch = 256, beginOrdered, savepoints = true, onCommit }: GroupCommitOptions = {}): Write {
  let queue: Pending[] = []
  let flushing = false

  async function runStep (trx: Transaction<Database>, batch: Pending[], { run, items }: Step): Promise<unknown[]> {
    if (run === undefined) return [await runAlone(trx, batch[items[0]].work)]
    return runBulk(trx, run, items.map((i) => (batch[i].work as Bulk<unknown, unknown>).input))
  }

  // In a savepoint: one write's failure undoes only that write.
  async function guarded (trx: Transaction<Database>, work: () => Promise<unknown[]>): Promise<Outcome[] | { failed: unknown }> {
    await trx.executeQuery(SAVEPOINT)
    try {
      const values = await work()
      await trx.executeQuery(RELEASE)
      return values.map((value) => ({ value }))
    } catch (err) {
      // If SQLite rolled back the whole transaction the savepoint is gone too: the batch fails with this error.
      await trx.executeQuery(ROLLBACK).catch(() => { throw err })
      await trx.executeQuery(RELEASE)
      return { failed: err }
    }
  }

  async function flush (): Promise<void> {
    const batch = queue.slice(0, maxBatch)
    queue = queue.slice(batch.length)
    const outcomes: Outcome[] = new Array(batch.length)
    const steps = stepsOf(batch)
    const started = performance.now()
    let committed = false
    try {
      // A failed write's ROLLBACK is safe even when SQLite already rolled the whole transaction back by itself (a
      // full disk, an I/O error): db/open.ts makes that ROLLBACK a no-op, so execute() rethrows the first error.
      await db.transaction().execute(async (trx) => {
        if (beginOrdered !== undefined && batch.some((item) => item.ordered)) await beginOrdered(trx)
        for (const step of steps) {
          if (batch.length === 1 || !savepoints) {
            const values = await runStep(trx, batch, step)
            step.items.forEach((i, k) => { outcomes[i] = { value: values[k] } })
            continue
          }
          const result = await guarded(trx, () => runStep(trx, batch, step))
          if (!('failed' in result)) {
            step.items.forEach((i, k) => { outcomes[i] = result[k] })
          } else if (step.items.length === 1) {
            outcomes[step.items[0]] = { err: result.failed }
          } else {
            for (const i of step.items) {
              const alone = await guarded(trx, async () => [await runAlone(trx, batch[i].work)])
              outcomes[i] = 'failed' in alone ? { err: alone.failed } : alone[0]
            }
          }
        }
      })
      committed = true
    } catch (err) {
      if (savepoints || batch.length === 1) {
        for (const item of batch) item.reject(err)
        return
      }
      // Without savepoints one write's failure undid the batch: each runs again alone, and fails alone.
      for (const [i, item] of batch.entries()) {
        try {
          outcomes[i] = { value: await db.transaction().execute(async (trx) => {
            if (beginOrdered !== undefined && item.ordered) await beginOrdered(trx)
            return runAlone(trx, item.work)
          }) }
        } catch (err) {
          outcomes[i] = { err }
        }
      }
    }
    if (committed) onCommit?.(batch.length, (performance.now() - started) / 1000)
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

  return <T>(work: Work<T>, options: WriteOptions = {}) => new Promise<T>((resolve, reject) => {
    queue.push({ ordered: options.ordered === true, work, resolve: resolve as (value: unknown) => void, reject })
    schedule()
  })
}
