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
  // The topic a topic message was published to (stored once, recipients null, as a broadcast); null otherwise.
  topic: string | null
  // The work queue a queue message was put on (recipients '[]': it goes to no inbox); null otherwise.
  queue: string | null
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
  // The ack deadline of a direct message sent with ack_within_s, and when the sweep found it missed.
  ack_by: string | null
  overdue_at: string | null
}

export interface TopicTable {
  name: string
  description: string | null
  created_by: number
  created_at: string
}

export interface SubscriptionTable {
  topic: string
  agent_id: number
  // The subscriber gets the topic's messages stored after this seq.
  since_seq: number
  subscribed_at: string
}

export interface QueueTable {
  name: string
  description: string | null
  lease_s: number
  max_deliveries: number
  created_by: number
  created_at: string
}

// The state of one queue message: available (no holder, available_at passed), leased (a holder whose lease has not
// expired), acked, or dead.
export interface QueueEntryTable {
  message_seq: number
  queue: string
  priority: number
  available_at: string
  holder_id: number | null
  lease_expires_at: string | null
  delivery_count: Generated<number>
  // Who claimed it last.
  claimed_by: number | null
  acked_by: number | null
  acked_at: string | null
  dead_at: string | null
}

export interface Database {
  agents: AgentTable
  messages: MessageTable
  deliveries: DeliveryTable
  // The archiver moves fully read, old messages here; same shapes, so history reads both with one union.
  archived_messages: MessageTable
  archived_deliveries: DeliveryTable
  topics: TopicTable
  subscriptions: SubscriptionTable
  queues: QueueTable
  queue_entries: QueueEntryTable
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
