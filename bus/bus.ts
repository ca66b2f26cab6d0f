import type { Kysely } from 'kysely'
import type { Write } from '../db/group-commit.js'
import type { MessageCache } from '../db/message-cache.js'
import type { Database } from '../db/schema.js'
import type { Storage } from '../db/storage.js'
import { agentOperations } from './agents.js'
import { createBackstop } from './backstop.js'
import type { Notifier, Readers } from './events.js'
import { messageOperations } from './messages.js'
import type { BusObserver } from './observer.js'
import { queueOperations } from './queues.js'
import { streamOperations } from './stream.js'
import { createSweep } from './sweep.js'
import { topicOperations } from './topics.js'

export interface BusOptions {
  db: Kysely<Database>
  // Every write of messages and deliveries goes through the group commit.
  write: Write
  // Where events are published after each commit, and where readers listen: one process, or a cluster.
  notifier: Notifier
  // The open streams and long-polls of this process, capped per agent.
  readers: Readers
  cache: MessageCache
  // Body, subject and data of one message together, in bytes.
  maxMessageBytes: number
  // Runs work that must happen once per cluster, not once per node (db/storage.ts).
  exclusively: Storage['exclusively']
  // Why a webhook URL may not be registered, or undefined when it may (webhooks/target.ts).
  refuseWebhook: (url: string) => Promise<string | undefined>
  // Locks the rows a claim chooses, skipping those another node's claim holds (db/storage.ts); undefined on SQLite.
  claimRows?: Storage['claimRows']
  // Milliseconds since the epoch: every time the bus stores (sends, leases, deadlines) comes from here, so that
  // tests can move time instead of sleeping. Date.now by default.
  clock?: () => number
  // Told what the bus did, for metrics (bus/observer.ts); nothing by default.
  observer?: BusObserver
}

// The rules of the bus, whatever the surface (HTTP routes, MCP, CLI): each operation takes input its caller has
// validated and the caller's identity, and returns JSON-ready results or throws the coded errors of errors.ts.
export function createBus (options: BusOptions) {
  return {
    ...agentOperations(options),
    ...messageOperations(options),
    ...streamOperations(options),
    ...topicOperations(options),
    ...queueOperations(options),
    // One round of the work that must happen once per cluster, to the second: leases that ended, ack deadlines that
    // passed (bus/sweep.ts). Run it every second.
    sweep: createSweep(options),
    // One round of the backstop behind notifications, for every reader of this process (bus/backstop.ts): run it on a
    // timer.
    recheckReaders: createBackstop(options.db, options.readers)
  }
}

export type Bus = ReturnType<typeof createBus>
