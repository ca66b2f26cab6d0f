import type { Migration } from 'kysely'
import * as init from './0001-init.js'
import * as broadcastOnRead from './0002-broadcast-on-read.js'
import * as addRequestHash from './0003-add-request-hash.js'
import * as addStatsCounters from './0004-add-stats-counters.js'
import * as topicsQueuesDeadlines from './0005-topics-queues-deadlines.js'

// The in-code record of migrations, in order. Never edit a merged migration: add the next one here.
export const migrations: Record<string, Migration> = {
  '0001-init': init,
  '0002-broadcast-on-read': broadcastOnRead,
  '0003-add-request-hash': addRequestHash,
  '0004-add-stats-counters': addStatsCounters,
  '0005-topics-queues-deadlines': topicsQueuesDeadlines
}
