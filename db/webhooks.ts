import type { Kysely, Transaction } from 'kysely'
import { deliveredMessages, toMessage, type MessageView } from './messages.js'
import type { Database } from './schema.js'

type Db = Kysely<Database> | Transaction<Database>

export interface DueWebhook {
  recipientId: number
  url: string
  secret: string
  attempts: number
  message: MessageView
}

// Deliveries whose next webhook attempt is due, oldest due first.
export async function dueWebhooks (db: Db, now: string, limit: number): Promise<DueWebhook[]> {
  const rows = await deliveredMessages(db)
    .innerJoin('agents as r', 'r.id', 'd.recipient_id')
    .select(['d.recipient_id', 'd.webhook_attempts', 'r.webhook_url', 'r.webhook_secret'])
    .where('d.webhook_next_at', '<=', now)
    .orderBy('d.webhook_next_at').limit(limit).execute()
  return rows.flatMap((row) => row.webhook_url === null || row.webhook_secret === null
    ? []
    : [{ recipientId: row.recipient_id, url: row.webhook_url, secret: row.webhook_secret, attempts: row.webhook_attempts, message: toMessage(row) }])
}

// A 2xx: delivered, nothing more to send.
export async function webhookDelivered (db: Db, seq: number, recipientId: number, now: string): Promise<void> {
  await db.updateTable('deliveries')
    .set((eb) => ({ webhook_next_at: null, webhook_attempts: eb('webhook_attempts', '+', 1), delivered_at: eb.fn.coalesce('delivered_at', eb.val(now)) }))
    .where('message_seq', '=', seq).where('recipient_id', '=', recipientId).execute()
}

// A failure: try again at nextAt, or never (null) once the message is too old.
export async function webhookFailed (db: Db, seq: number, recipientId: number, nextAt: string | null): Promise<void> {
  await db.updateTable('deliveries')
    .set((eb) => ({ webhook_next_at: nextAt, webhook_attempts: eb('webhook_attempts', '+', 1) }))
    .where('message_seq', '=', seq).where('recipient_id', '=', recipientId).execute()
}

// Queues a webhook for every message not yet delivered to the agent (a webhook set after messages arrived).
export async function queueUndelivered (db: Db, agentId: number, now: string): Promise<void> {
  await db.updateTable('deliveries').set({ webhook_next_at: now, webhook_attempts: 0 })
    .where('recipient_id', '=', agentId).where('delivered_at', 'is', null).where('read_at', 'is', null).execute()
}

export async function setWebhook (db: Db, agentId: number, url: string | null, secret: string | null): Promise<void> {
  await db.updateTable('agents').set({ webhook_url: url, webhook_secret: secret }).where('id', '=', agentId).execute()
}
