import type { Generated, GeneratedAlways, Insertable, Selectable, Updateable } from 'kysely'

// Column names are the API's field names (snake_case, as the contract spells them), so rows map onto the
// schemas without a mapping layer. Times are ISO-8601 UTC strings; flags are 0 | 1; JSON columns are strings.

export interface AgentTable {
  // Never reused, so a name registered again after a deregistration cannot read its predecessor's mail.
  id: GeneratedAlways<number>
  name: string
  description: string | null
  capabilities: string
  metadata: string
  token_hash: string | null
  registered_at: string
  last_seen_at: string | null
  online: Generated<0 | 1>
  deleted_at: string | null
  // Where new messages are POSTed, signed with the secret (HMAC-SHA256); null without a webhook.
  webhook_url: string | null
  webhook_secret: string | null
  // Every broadcast up to this seq has its delivery row for this agent, or was stored before it registered.
  broadcasts_upto: Generated<number>
}

export interface MessageTable {
  seq: GeneratedAlways<number>
  sender_id: number
  // JSON array of recipient names at send time; null for a broadcast.
  recipients: string | null
  subject: string | null
  body: string
  data: string | null
  priority: number
  reply_to: number | null
  thread_id: number
  created_at: string
  idempotency_key: string | null
  // SHA-256 of the request that stored it with an idempotency key (db/messages.ts requestHash); null without a key.
  request_hash: string | null
}

export interface DeliveryTable {
  message_seq: number
  recipient_id: number
  // Copied from the message so that the inbox order (priority, then seq) is served by one index.
  priority: number
  read_at: string | null
  // First handed to the agent by a stream, a webhook, or an inbox read.
  delivered_at: string | null
  webhook_attempts: Generated<number>
  // When the next webhook attempt is due; null when none is pending. Kept in the table so retries survive restarts.
  webhook_next_at: string | null
}

export interface Database {
  agents: AgentTable
  messages: MessageTable
  deliveries: DeliveryTable
  // The archiver moves fully read, old messages here; same shapes, so history reads both with one union.
  archived_messages: MessageTable
  archived_deliveries: DeliveryTable
  // Views over live + archived rows, with archived = 1 for the latter.
  all_messages: MessageTable & { archived: 0 | 1 }
  all_deliveries: DeliveryTable & { archived: 0 | 1 }
}

export type AgentRow = Selectable<AgentTable>
export type NewAgent = Insertable<AgentTable>
export type AgentUpdate = Updateable<AgentTable>
export type MessageRow = Selectable<MessageTable>
export type NewMessage = Insertable<MessageTable>
export type MessageUpdate = Updateable<MessageTable>
export type DeliveryRow = Selectable<DeliveryTable>
