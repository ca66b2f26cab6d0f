import type { Compilable, CompiledQuery, Kysely, Transaction } from 'kysely'
import type { Database } from './schema.js'

type Db = Kysely<Database> | Transaction<Database>

// Where an argument goes among a compiled query's parameters: argument `arg`, or its item or field `item`.
class Slot {
  constructor (readonly arg: number, readonly item?: number | string) {}
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype

interface Compiled<O> { query: CompiledQuery<O>, slots: Array<Slot | undefined> }

// A query built and compiled once, then run with fresh arguments. Building and compiling a Kysely query costs
// 6 to 30 µs, as much as SQLite takes to run it; the queries on every request (authentication, a send, an inbox
// read) have a fixed shape, so only their parameters change. `build` is called once per shape with placeholders in
// place of its arguments, so it must use them only as values (in where, values, limit…), never branch on them.
// An array argument (an `in` list) gets one compiled query per length; an object argument (a row to insert) one per
// set of keys, so give it every column, null included. The SQL depends only on the dialect, so the compiled queries
// are kept for the process, per dialect (a process may open both engines: a test, the benchmark).
export function prepared<A extends unknown[], O> (build: (db: Db, ...args: A) => Compilable<O>) {
  const byShape = new Map<string, Compiled<O>>()
  // The compiled query with these arguments bound (for EXPLAIN in tests, and for running it).
  const compile = (db: Db, ...args: A): CompiledQuery<O> => {
    const shape = db.getExecutor().adapter.constructor.name + args.map((arg) => Array.isArray(arg) ? arg.length : isRecord(arg) ? Object.keys(arg).join(' ') : '').join()
    let compiled = byShape.get(shape)
    if (compiled === undefined) {
      const placeholders = args.map((arg, i) => Array.isArray(arg)
        ? arg.map((_, j) => new Slot(i, j))
        : isRecord(arg) ? Object.fromEntries(Object.keys(arg).map((key) => [key, new Slot(i, key)])) : new Slot(i)) as A
      const query = build(db, ...placeholders).compile()
      compiled = { query, slots: query.parameters.map((p) => p instanceof Slot ? p : undefined) }
      byShape.set(shape, compiled)
    }
    const { query, slots } = compiled
    const parameters = slots.map((slot, i) => slot === undefined
      ? query.parameters[i]
      : slot.item === undefined ? args[slot.arg] : (args[slot.arg] as Record<string | number, unknown>)[slot.item])
    return { ...query, parameters }
  }
  const run = async (db: Db, ...args: A): Promise<O[]> => (await db.executeQuery(compile(db, ...args))).rows
  return Object.assign(run, { compile })
}
