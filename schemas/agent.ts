import { Type, type Static } from '@sinclair/typebox'
import { AgentName, NullableTimestamp, ref, StringEnum, Timestamp } from './common.js'

const webhookUrl = Type.String({ format: 'uri', maxLength: 2048, description: 'New messages are POSTed here, signed as Standard Webhooks (webhook-signature). http(s) only.' })

const profileFields = {
  description: Type.Optional(Type.String({ maxLength: 1024, description: 'What the agent does.' })),
  capabilities: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 64, description: 'Free-form capability tags.' })),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Any JSON object the agent wants others to see.' }))
}

export const AgentCreate = Type.Object({
  name: ref(AgentName),
  ...profileFields,
  webhook_url: Type.Optional(webhookUrl),
  reuse_name: Type.Optional(Type.Boolean({ description: 'Admin only: give the name of a deregistered agent to this new one.' }))
}, {
  $id: 'AgentCreate',
  additionalProperties: false,
  examples: [{ name: 'alice', description: 'Plans the work and hands it out.', capabilities: ['plan'] }]
})

export const AgentUpdate = Type.Object({
  ...profileFields,
  webhook_url: Type.Optional(Type.Union([webhookUrl, Type.Null()], { description: 'A new webhook URL (with a new secret), or null to stop webhooks.' }))
}, { $id: 'AgentUpdate', additionalProperties: false, examples: [{ description: 'Reviews pull requests.', capabilities: ['review'] }] })
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

export const Agent = Type.Object({
  ...agentFields,
  webhook_url: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'Shown to the agent itself and the admin only.' }))
}, { $id: 'Agent' })
export type Agent = Static<typeof Agent>

// What an agent may see of itself: its webhook, and the secret when one was just made.
const selfFields = {
  ...agentFields,
  webhook_url: Type.Union([Type.String(), Type.Null()]),
  webhook_secret: Type.Optional(Type.String({ description: 'The Standard Webhooks secret (whsec_…) that verifies each push. Shown only when the webhook is set.' }))
}

export const AgentSelf = Type.Object(selfFields, { $id: 'AgentSelf' })

export const AgentWithToken = Type.Object({
  ...selfFields,
  token: Type.String({ description: 'The bearer token. Shown only this once: the bus keeps only its hash.' })
}, { $id: 'AgentWithToken' })

export const AgentToken = Type.Object({
  name: ref(AgentName),
  token: Type.String({ description: 'The new bearer token; the old one stops working now.' }),
  webhook_removed: Type.Boolean({ description: 'The agent had a webhook, and rotation removed it: set it again with PATCH /agents/{name}.' })
}, { $id: 'AgentToken' })

export const AgentList = Type.Object({
  agents: Type.Array(ref(Agent))
}, { $id: 'AgentList' })

export const Heartbeat = Type.Object({
  name: ref(AgentName),
  status: Type.Literal('online'),
  unread: Type.Integer({ description: 'Unread messages in the inbox.' })
}, { $id: 'Heartbeat' })

export const AgentParams = Type.Object({ name: { ...ref(AgentName), examples: ['alice'] } })
