import { Type } from '@sinclair/typebox'

const byPriority = Type.Object({ normal: Type.Integer(), high: Type.Integer(), urgent: Type.Integer() },
  { description: 'Messages ever stored, by priority; they add up to total.' })

export const Stats = Type.Object({
  agents: Type.Object({
    total: Type.Integer({ description: 'Registered agents (deregistered ones are not counted).' }),
    online: Type.Integer({ description: 'Registered agents seen within BUS_OFFLINE_AFTER_S.' })
  }),
  messages: Type.Object({
    total: Type.Integer({ description: 'Messages ever stored, live and archived: messages are archived, never deleted.' }),
    unread: Type.Integer({
      description: 'Copies of messages that registered agents have not acknowledged, including broadcast copies an agent has ' +
        'not read up to yet. The copies of an agent stop counting when it deregisters: it will never read them.'
    }),
    archived: Type.Integer({ description: 'Messages moved to the archive (read by every registered recipient, and old).' }),
    by_priority: byPriority
  }, { description: 'Counters kept in the same transaction as each write that changes them: exact, and read without counting.' }),
  database: Type.Object({
    engine: Type.Union([Type.Literal('sqlite'), Type.Literal('postgresql')], { description: 'The database engine: sqlite (one process, one file) or postgresql (any number of nodes on one database).' }),
    size_bytes: Type.Integer({ description: 'SQLite: the database file and its write-ahead log; PostgreSQL: pg_database_size of the database; in bytes.' }),
    schema_version: Type.String({ description: 'The latest applied migration.' })
  }),
  uptime_s: Type.Number({ description: 'Seconds since the bus started.' })
}, {
  $id: 'Stats',
  description: 'Figures for the whole bus. Each is read from a counter or a small index, so reading them costs the same at ten ' +
    'messages as at ten million.'
})

export const Health = Type.Object({
  status: Type.Literal('ok')
}, { $id: 'Health' })
