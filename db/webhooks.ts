import { sql, type ExpressionBuilder, type Kysely, type NotNull, type Transaction } from 'kysely'
import { deliveredMessages, toMessage, type MessageView } from './messages.js'
import type { Database } from './schema.js'
import type { Storage } from './storage.js'

type Db = Kysely<Database> | Transaction<Database>

export interface DueWebhook {
  recipientId: number
  recipient: string
  url: string
  secret: string
  attempts: number
  message: MessageView
  // The claim: the attempt is this node's while the row's webhook_next_at still holds this value.
  leaseUntil: string
}

// What the dispatcher skips: recipients with every slot in flight, and endpoints with an open circuit (by URL too,
// so an agent that points its webhook elsewhere is tried at once).
export interface DueExceptions { busy: number[], open: Array<{ recipientId: number, url: string }> }

// Claims the deliveries whose next webhook attempt is due, oldest due first, less the exceptions, for this node: each
// claimed attempt is postponed to leaseUntil, so no other node (and no later poll here) takes it meanwhile, and one
// held by a node that died is due again once its lease ends. Rows of agents without a webhook are left out here, in
// the query: filtered after the LIMIT they would fill every page and starve every other agent.
export async function claimWebhooks (storage: Storage, now: string, leaseUntil: string, limit: number,
  except: DueExceptions = { busy: [], open: [] }): Promise<DueWebhook[]> {
  return storage.db.transaction().execute(async (trx) => {
    let due = trx.selectFrom('deliveries as d')
      .innerJoin('agents as r', 'r.id', 'd.recipient_id')
      .select(['d.message_seq', 'd.recipient_id'])
      .where('d.webhook_next_at', '<=', now)
      .where('r.webhook_url', 'is not', null).where('r.webhook_secret', 'is not', null)
    if (except.busy.length > 0) due = due.where('d.recipient_id', 'not in', except.busy)
    // One parameter however many circuits are open: a condition per circuit nested past SQLite's expression depth
    // limit (1,000) once about 1,000 were open, and then no agent's webhook was delivered.
    if (except.open.length > 0) {
      const open = storage.textList(JSON.stringify(except.open.map(({ recipientId, url }) => `${recipientId} ${url}`)))
      due = due.where(({ not, exists }) => not(exists(sql<number>`select 1 from (${open}) as o
        where o.value = cast(${sql.ref('d.recipient_id')} as text) || ' ' || ${sql.ref('r.webhook_url')}`)))
    }
    due = due.orderBy('d.webhook_next_at').limit(limit)
    const claim = storage.claimRows
    const keys = await (claim === undefined ? due : due.modifyEnd(claim('d'))).execute()
    if (keys.length === 0) return []
    const claimed = (eb: ExpressionBuilder<Database & { d: Database['deliveries'] }, 'd'>) =>
      eb(eb.refTuple('d.message_seq', 'd.recipient_id'), 'in', keys.map((k) => eb.tuple(k.message_seq, k.recipient_id)))
    await trx.updateTable('deliveries as d').set({ webhook_next_at: leaseUntil }).where(claimed).execute()
    const rows = await deliveredMessages(trx)
      .innerJoin('agents as r', 'r.id', 'd.recipient_id')
      .select(['d.recipient_id', 'r.name as recipient', 'd.webhook_attempts', 'r.webhook_url', 'r.webhook_secret'])
      .where(claimed)
      .$narrowType<{ webhook_url: NotNull, webhook_secret: NotNull }>()
      .orderBy('d.message_seq').execute()
    return rows.map((row) => ({
      recipientId: row.recipient_id, recipient: row.recipient, url: row.webhook_url, secret: row.webhook_secret, attempts: row.webhook_attempts, message: toMessage(row), leaseUntil
    }))
  })
}

// Claimed attempts that this node gives back unmade (it is shutting down, or claimed more of one recipient's than
// it may have in flight): due at once, for any node. One statement however many. Only rows that still hold the
// claim (leaseUntil): one postponed meanwhile, because the recipient's circuit opened, keeps waiting for the cool-down,
// and one whose webhook was removed stays cleared.
export async function releaseWebhooks (db: Db, keys: Array<{ seq: number, recipientId: number }>, leaseUntil: string, now: string): Promise<void> {
  if (keys.length === 0) return
  await db.updateTable('deliveries as d').set({ webhook_next_at: now })
    .where((eb) => eb(eb.refTuple('d.message_seq', 'd.recipient_id'), 'in', keys.map((k) => eb.tuple(k.seq, k.recipientId))))
    .where('d.webhook_next_at', '=', leaseUntil).execute()
}

// A 2xx: delivered, nothing more to send.
export async function webhookDelivered (db: Db, seq: number, recipientId: number, now: string): Promise<void> {
  await db.updateTable('deliveries')
    .set((eb) => ({ webhook_next_at: null, webhook_attempts: eb('webhook_attempts', '+', 1), delivered_at: eb.fn.coalesce('delivered_at', eb.val(now)) }))
    .where('message_seq', '=', seq).where('recipient_id', '=', recipientId).execute()
}

// A failure: try again at nextAt, or never (null) once the message is too old. Only while the attempt is still
// pending: a webhook removed (or the agent deregistered) while the POST was in flight cleared it, and a failure that
// ends afterwards must not queue it again. The time moves only while the row still holds the claim (leaseUntil): a
// circuit that opened while the POST was in flight postponed it to the end of the cool-down, and that stands.
export async function webhookFailed (db: Db, seq: number, recipientId: number, leaseUntil: string, nextAt: string | null): Promise<void> {
  await db.updateTable('deliveries')
    .set((eb) => ({
      webhook_next_at: eb.case().when('webhook_next_at', '=', leaseUntil).then(nextAt).else(eb.ref('webhook_next_at')).end(),
      webhook_attempts: eb('webhook_attempts', '+', 1)
    }))
    .where('message_seq', '=', seq).where('recipient_id', '=', recipientId).where('webhook_next_at', 'is not', null).execute()
}

// Queues a webhook for every message not yet delivered to the agent (a webhook set after messages arrived).
export async function queueUndelivered (db: Db, agentId: number, now: string): Promise<void> {
  await db.updateTable('deliveries').set({ webhook_next_at: now, webhook_attempts: 0 })
    .where('recipient_id', '=', agentId).where('delivered_at', 'is', null).where('read_at', 'is', null).execute()
}

export async function setWebhook (db: Db, agentId: number, url: string | null, secret: string | null): Promise<void> {
  await db.updateTable('agents').set({ webhook_url: url, webhook_secret: secret }).where('id', '=', agentId).execute()
}

// The agent's webhook is gone (removed, or the agent deregistered): nothing is pending for it any more.
export async function clearWebhooks (db: Db, agentId: number): Promise<void> {
  await db.updateTable('deliveries').set({ webhook_next_at: null })
    .where('recipient_id', '=', agentId).where('webhook_next_at', 'is not', null).execute()
}

// A recipient's circuit opened: its pending attempts wait until `until`, so the due-rows query stops walking past
// them on every poll (and a restart does not hammer the endpoint again at once). Only while the agent still has that
// URL: a webhook set meanwhile queued its rows for the new endpoint.
export async function postponeWebhooks (db: Db, recipientId: number, url: string, until: string): Promise<void> {
  await db.updateTable('deliveries').set({ webhook_next_at: until })
    .where('recipient_id', '=', recipientId).where('webhook_next_at', '<', until)
    .where((eb) => eb.exists(eb.selectFrom('agents').select('id').where('id', '=', recipientId).where('webhook_url', '=', url)))
    .execute()
}

// An agent's webhook, if it has one.
export async function webhookOf (db: Db, agentId: number): Promise<{ name: string, url: string, secret: string } | undefined> {
  const row = await db.selectFrom('agents').select(['name', 'webhook_url', 'webhook_secret'])
    .where('id', '=', agentId).where('deleted_at', 'is', null).executeTakeFirst()
  if (row?.webhook_url == null || row.webhook_secret === null) return undefined
  return { name: row.name, url: row.webhook_url, secret: row.webhook_secret }
}

// Deliveries waiting for a webhook attempt or a retry (an index range: deliveries_webhook_due).
export async function webhookBacklog (db: Db): Promise<number> {
  const { count } = await db.selectFrom('deliveries').select((eb) => eb.fn.countAll<number>().as('count'))
    .where('webhook_next_at', 'is not', null).executeTakeFirstOrThrow()
  return Number(count)
}
