import { Type } from '@sinclair/typebox'

const byPriority = Type.Object({ normal: Type.Integer(), high: Type.Integer(), urgent: Type.Integer() })

export const Stats = Type.Object({
  agents: Type.Object({ total: Type.Integer(), online: Type.Integer() }),
  messages: Type.Object({
    total: Type.Integer({ description: 'Stored messages, live and archived.' }),
    unread: Type.Integer({ description: 'Deliveries not yet acknowledged.' }),
    archived: Type.Integer(),
    by_priority: byPriority
  }),
  database: Type.Object({
    size_bytes: Type.Integer(),
    schema_version: Type.String({ description: 'The latest applied migration.' })
  }),
  uptime_s: Type.Number()
}, { $id: 'Stats' })

export const Health = Type.Object({
  status: Type.Literal('ok')
}, { $id: 'Health' })
