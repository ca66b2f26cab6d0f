import { Type, type Static } from '@sinclair/typebox'
import { AgentName, NullableTimestamp, ref, StringEnum, Timestamp } from './common.js'

const webhookUrl = Type.String({ format: 'uri', maxLength: 2048, description: 'New messages are POSTed here, signed (X-Bus-Signature). http(s) only.' })

const profileFields = {
  description: Type.Optional(Type.String({ maxLength: 1024, description: 'What the agent does.' })),
  capabilities: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 64, description: 'Free-form capability tags.' })),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Any JSON object the agent wants others to see.' }))
}

export const AgentCreate = Type.Object({
  name: ref(AgentName),
  ...profileFields,
  webhook_url: Type.Optional(webhookUrl)
}, { $id: 'AgentCreate', additionalProperties: false })

export const AgentUpdate = Type.Object({
  ...profileFields,
  webhook_url: Type.Optional(Type.Union([webhookUrl, Type.Null()], { description: 'A new webhook URL (with a new secret), or null to stop webhooks.' }))
}, { $id: 'AgentUpdate', additionalProperties: false })
export type AgentCreate = Static<typeof AgentCreate>

const agentFields = {
  name: ref(AgentName),
  description: Type.Union([Type.String(), Type.Null()]),
  capabilities: Type.Array(Type.String()),
  metadata: Type.Record(Type.String(), Type.Unknown()),
  status: StringEnum(['online', 'offline']),
  last_seen_at: NullableTimestamp('The last request or heartbeat from the agent.'),
  registered_at: ref(Timestamp)
}

export const Agent = Type.Object(agentFields, { $id: 'Agent' })
export type Agent = Static<typeof Agent>

// What an agent may see of itself: its webhook, and the secret when one was just made.
const selfFields = {
  ...agentFields,
  webhook_url: Type.Union([Type.String(), Type.Null()]),
  webhook_secret: Type.Optional(Type.String({ description: 'Verifies X-Bus-Signature. Shown only when the webhook is set.' }))
}

export const AgentSelf = Type.Object(selfFields, { $id: 'AgentSelf' })

export const AgentWithToken = Type.Object({
  ...selfFields,
  token: Type.String({ description: 'The bearer token. Shown only this once: the bus keeps only its hash.' })
}, { $id: 'AgentWithToken' })

export const AgentToken = Type.Object({
  name: ref(AgentName),
  token: Type.String({ description: 'The new bearer token; the old one stops working now.' })
}, { $id: 'AgentToken' })

export const AgentList = Type.Object({
  agents: Type.Array(ref(Agent))
}, { $id: 'AgentList' })

export const Heartbeat = Type.Object({
  name: ref(AgentName),
  status: Type.Literal('online'),
  unread: Type.Integer({ description: 'Unread messages in the inbox.' })
}, { $id: 'Heartbeat' })

export const AgentParams = Type.Object({ name: ref(AgentName) })
