import type { Kysely, RawBuilder, Transaction } from 'kysely'
import type { Write } from './group-commit.js'
import type { Database } from './schema.js'

// The one seam between the bus and a database engine. Everything engine-specific (opening and settings, migrations,
// group commit and its ordering, wake-ups between nodes, work that one node of a cluster does at a time, error
// classification, size on disk) sits behind it, one file per engine: db/dialects/sqlite.ts and
// db/dialects/postgres.ts. The queries in db/ are plain Kysely and run on either.
export interface Storage {
  // The engine's name, as /stats shows it.
  readonly engine: 'sqlite' | 'postgresql'
  readonly db: Kysely<Database>
  // Runs a write in the next group commit: many writes, one transaction, one commit.
  readonly write: Write
  // The latest migration applied (the same names on every engine).
  readonly schemaVersion: string
  // Bytes the database takes.
  size: () => Promise<number>
  // Why the database cannot serve writes now (disk full, file deleted, server unreachable), or undefined. Cheap:
  // /health asks it on every call, and a loop logs its changes.
  problem: () => string | undefined
  // For /health: asks the database, and throws when it cannot be reached; answers why it cannot take writes, or
  // undefined when it can.
  check: () => Promise<string | undefined>
  // What a failed query means for a client, or undefined when it is no storage failure: the database is
  // unavailable for now (retry: true, a 503 with Retry-After), or needs an operator (retry: false).
  describeError: (err: unknown) => StorageFailure | undefined
  // Wake-ups between the processes that share the database; undefined for an engine that one process owns.
  readonly cluster: ClusterLink | undefined
  // Runs work in a transaction if no other node of the cluster is running work of that name now; undefined when one
  // is. For the jobs that must happen once per cluster, not once per node (the offline sweep, the archiver).
  exclusively: <T>(job: string, work: (trx: Transaction<Database>) => Promise<T>) => Promise<T | undefined>
  // The end of a select that claims rows of one of its tables for this node's transaction: locks them, skipping
  // those another node has locked. Undefined where one process owns the database.
  readonly claimRows: ((table: string) => RawBuilder<unknown>) | undefined
  // A table of one text column, `value`, holding the strings of a JSON array: a list of any length as one parameter.
  textList: (json: string) => RawBuilder<{ value: string }>
  // The connection pool's use, where there is one (PostgreSQL): open connections, idle ones, queries waiting for one.
  readonly pool: (() => { total: number, idle: number, waiting: number }) | undefined
  close: () => Promise<void>
}

// What a storage reports of its work as it goes, for metrics.
export interface StorageObserver {
  // A group commit's batch committed: how many writes it held, and how long its transaction took, in seconds.
  commit?: (writes: number, seconds: number) => void
  // A notification from another node of the cluster arrived.
  notification?: () => void
}

export interface StorageFailure { message: string, retry: boolean }

// Messages between the nodes of a cluster. They only wake readers: a lost one costs latency, never a message.
export interface ClusterLink {
  // Sends a payload to every other node (not this one), soon after the call.
  publish: (payload: string) => void
  // Calls onPayload for every payload another node publishes, and onGap whenever some may have been missed (the
  // listening connection dropped and came back): readers then re-read.
  listen: (onPayload: (payload: string) => void, onGap: () => void) => void
}

// A start that cannot go on (an unreachable server, a bad URL, a database locked by another process): the operator
// gets its message as one line.
export class StorageStartError extends Error {
  override name = 'StorageStartError'
}
