import { createHash } from 'node:crypto'
import { sql, type Expression, type Kysely, type Transaction } from 'kysely'
import type { Write } from './group-commit.js'
import type { MessageCache, StoredMessage } from './message-cache.js'
import { prepared } from './prepared.js'
import { findQueue } from './queues.js'
import type { Database, MessageRow, NewMessage } from './schema.js'
import type { Storage } from './storage.js'
import { countArchived, countRead, countSent } from './stats.js'

type Db = Kysely<Database> | Transaction<Database>

export const PRIORITIES = ['normal', 'high', 'urgent'] as const
export type PriorityName = typeof PRIORITIES[number]
// Stored as a rank so that the inbox index orders by it: urgent (2) first.
export const rankOf = (p: PriorityName): number => PRIORITIES.indexOf(p)

export interface SendInput {
  senderId: number
  senderName: string
  to?: string[]
  body: string
  subject?: string
  priority: PriorityName
  replyTo?: number
  data?: Record<string, unknown>
  idempotencyKey?: string
  // Publish to a topic's subscribers, or put on a work queue, instead of `to`.
  topic?: string
  queue?: string
  // Each recipient of a direct message must acknowledge it within this many seconds, or it becomes overdue.
  ackWithinS?: number
  now: string
}

export interface Sent {
  id: number
  thread_id: number
  from: string
  to: string[]
  broadcast: boolean
  topic: string | null
  queue: string | null
  recipients: number
  priority: PriorityName
  created_at: string
}

export type SendOutcome =
  // recipientIds is null for a broadcast.
  // webhooks: whether a recipient may have a webhook to push to.
  | { ok: true, sent: Sent, replayed: boolean, recipientIds: number[] | null, webhooks: boolean }
  | { ok: false, unknownRecipients: string[] }
  | { ok: false, replyToNotFound: number }
  | { ok: false, topicNotFound: string }
  | { ok: false, queueNotFound: string }
  // The idempotency key already stored this other message, from a different request.
  | { ok: false, idempotencyConflict: number }

// JSON with object keys sorted, so that the same request hashes alike whatever order its client wrote the keys in.
function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  const entries = Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`)
  return `{${entries.join(',')}}`
}

// What makes two sends with one Idempotency-Key the same request: everything the sender chose, after defaults.
// Fields added since keys were first hashed count only when present, so a retry stored before them still matches.
export function requestHash (input: SendInput): string {
  const { to, body, subject, priority, replyTo, data, topic, queue, ackWithinS } = input
  return createHash('sha256').update(canonicalJson({
    to: to === undefined ? null : [...to].sort(), body, subject: subject ?? null, priority, replyTo: replyTo ?? null, data: data ?? null,
    ...(topic !== undefined && { topic }), ...(queue !== undefined && { queue }), ...(ackWithinS !== undefined && { ackWithinS })
  })).digest('hex')
}

// When a recipient must have acknowledged a message sent with ack_within_s.
const ackBy = (input: SendInput): string | null =>
  input.ackWithinS === undefined ? null : new Date(Date.parse(input.now) + input.ackWithinS * 1000).toISOString()

// Stores a message and one delivery per recipient, and counts them for /stats (db/stats.ts), inside the caller's
// transaction (a group commit). A send with an Idempotency-Key that was used before answers the first message when
// the request is the same (a retry), and is refused when it differs (IETF Idempotency-Key draft, Stripe): silently
// dropping a new message would lose it.
export async function sendMessage (trx: Transaction<Database>, input: SendInput): Promise<SendOutcome> {
  const hash = input.idempotencyKey === undefined ? null : requestHash(input)
  if (input.idempotencyKey !== undefined) {
    const previous = await trx.selectFrom('messages').select(['seq', 'request_hash'])
      .where('sender_id', '=', input.senderId).where('idempotency_key', '=', input.idempotencyKey).executeTakeFirst()
    if (previous && previous.request_hash !== null && previous.request_hash !== hash) return { ok: false, idempotencyConflict: previous.seq }
    if (previous) return { ok: true, sent: await sentSummary(trx, previous.seq, input.senderName), replayed: true, recipientIds: [], webhooks: false }
  }

  let threadId: number | undefined
  if (input.replyTo !== undefined) {
    const parent = await findVisible(trx, input.senderId, input.replyTo)
    if (!parent) return { ok: false, replyToNotFound: input.replyTo }
    threadId = parent.row.thread_id
  }

  const direct = input.to === undefined ? [] : await registeredByName(trx, input.to)
  if (input.to !== undefined && direct.length !== input.to.length) {
    const known = new Set(direct.map((a) => a.name))
    return { ok: false, unknownRecipients: input.to.filter((n) => !known.has(n)) }
  }
  const { topic, queue } = input
  // Whether the topic exists, and how many subscribers it has but the sender, in one statement.
  const audience = topic === undefined ? undefined : (await topicAudience(trx, topic, input.senderId))[0]
  if (topic !== undefined && (audience === undefined || !audience.found)) return { ok: false, topicNotFound: topic }
  if (queue !== undefined && await findQueue(trx, queue) === undefined) return { ok: false, queueNotFound: queue }

  const priority = rankOf(input.priority)
  const [{ seq }] = await insertMessage(trx, {
    sender_id: input.senderId,
    // A queue message goes to no inbox: no recipients, and not null, which would make it a broadcast.
    recipients: queue !== undefined ? '[]' : input.to === undefined ? null : JSON.stringify(input.to),
    subject: input.subject ?? null,
    body: input.body,
    data: input.data === undefined ? null : JSON.stringify(input.data),
    priority,
    reply_to: input.replyTo ?? null,
    thread_id: threadId ?? 0,
    created_at: input.now,
    idempotency_key: input.idempotencyKey ?? null,
    request_hash: hash,
    topic: topic ?? null,
    queue: queue ?? null
  })
  // A message that replies to nothing starts its own thread, named by its own id.
  if (threadId === undefined) {
    threadId = seq
    await startThread(trx, seq)
  }

  let recipients = 0
  let recipientIds: number[] | null = []
  let webhooks = false
  if (queue !== undefined) {
    // Waits for a claim (db/queues.ts).
    await trx.insertInto('queue_entries').values({ message_seq: seq, queue, priority, available_at: input.now }).execute()
  } else if (input.to === undefined) {
    // A broadcast, or a topic message, is stored once; each agent's copy is made when it next reads (syncBroadcasts).
    // Recipients with a webhook get theirs now, with the push queued, so a crash cannot lose it.
    const delivery = [integer(seq).as('message_seq'), integer(priority).as('priority'), sql<string>`cast(${input.now} as text)`.as('webhook_next_at')] as const
    const columns = ['message_seq', 'priority', 'webhook_next_at', 'recipient_id'] as const
    if (topic === undefined) {
      const others = registeredOthers(trx, input.senderId)
      recipients = Number((await others.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
      recipientIds = null
      await trx.insertInto('deliveries').columns(columns).expression(others.where('a.webhook_url', 'is not', null).select([...delivery, 'a.id'])).execute()
    } else {
      // A small topic's subscribers by id, so that only their readers are woken; a large one wakes every reader, as a
      // broadcast does: fetching a thousand ids for each publish cost more than the readers it spared.
      recipients = Number(audience?.n ?? 0)
      recipientIds = recipients > WAKE_BY_ID ? null : (await subscriberIds(trx, topic, input.senderId)).map((s) => Number(s.agent_id))
      if (recipients > 0) await topicWebhooks(trx, seq, priority, input.now, topic, input.senderId)
    }
    webhooks = recipients > 0
  } else {
    await insertDeliveries(trx, seq, priority, input.now, ackBy(input), direct.map((a) => a.id))
    recipients = direct.length
    recipientIds = direct.map((a) => a.id)
    webhooks = direct.some((a) => a.webhook_url !== null)
  }
  await countSent(trx, [{ priority: input.priority, recipients }])

  return {
    ok: true,
    replayed: false,
    recipientIds,
    webhooks,
    sent: {
      id: seq,
      thread_id: threadId,
      from: input.senderName,
      to: input.to ?? [],
      broadcast: input.to === undefined && topic === undefined && queue === undefined,
      topic: topic ?? null,
      queue: queue ?? null,
      recipients,
      priority: input.priority,
      created_at: input.now
    }
  }
}

// The sends of one group commit (db/group-commit.ts's bulk writes), each with the outcome sendMessage would give it
// alone. The direct ones are stored together: one lookup of their recipients, one INSERT of the messages, one of
// their deliveries, one UPDATE of the counters, whatever their number. On PostgreSQL, where each statement is a round
// trip made while the batch holds the order lock, that is most of what a send costs. A broadcast, and a send with an
// idempotency key (which must see the sends before it, in this batch too), go through sendMessage one by one.
export async function sendMessages (trx: Transaction<Database>, inputs: SendInput[]): Promise<SendOutcome[]> {
  const outcomes: SendOutcome[] = new Array(inputs.length)
  const direct: number[] = []
  for (const [i, input] of inputs.entries()) {
    if (input.to === undefined || input.idempotencyKey !== undefined || input.topic !== undefined || input.queue !== undefined) {
      outcomes[i] = await sendMessage(trx, input)
    }
    else direct.push(i)
  }
  if (direct.length === 0) return outcomes

  const names = [...new Set(direct.flatMap((i) => inputs[i].to as string[]))]
  const agents = new Map((await trx.selectFrom('agents').select(['id', 'name', 'webhook_url'])
    .where('name', 'in', names).where('deleted_at', 'is', null).execute()).map((a) => [a.name, a]))
  const stored: Array<{ i: number, threadId: number | undefined }> = []
  for (const i of direct) {
    const { to, senderId, replyTo } = inputs[i] as SendInput & { to: string[] }
    const unknown = to.filter((name) => !agents.has(name))
    if (unknown.length > 0) {
      outcomes[i] = { ok: false, unknownRecipients: unknown }
      continue
    }
    let threadId: number | undefined
    if (replyTo !== undefined) {
      const parent = await findVisible(trx, senderId, replyTo)
      if (!parent) {
        outcomes[i] = { ok: false, replyToNotFound: replyTo }
        continue
      }
      threadId = parent.row.thread_id
    }
    stored.push({ i, threadId })
  }
  if (stored.length === 0) return outcomes

  // One statement takes the seqs in the order of its rows, so the ascending seqs answer the rows in order.
  const seqs = (await trx.insertInto('messages').values(stored.map(({ i, threadId }) => {
    const input = inputs[i]
    return {
      sender_id: input.senderId,
      recipients: JSON.stringify(input.to),
      subject: input.subject ?? null,
      body: input.body,
      data: input.data === undefined ? null : JSON.stringify(input.data),
      priority: rankOf(input.priority),
      reply_to: input.replyTo ?? null,
      thread_id: threadId ?? 0,
      created_at: input.now,
      idempotency_key: null,
      request_hash: null,
      topic: null,
      queue: null
    }
  })).returning('seq').execute()).map((row) => Number(row.seq)).sort((a, b) => a - b)
  // A message that replies to nothing starts its own thread, named by its own id.
  const starts = seqs.filter((_, k) => stored[k].threadId === undefined)
  if (starts.length > 0) await trx.updateTable('messages').set((eb) => ({ thread_id: eb.ref('seq') })).where('seq', 'in', starts).execute()

  // One row per recipient, with a webhook push queued for those that have a webhook.
  const deliveries = stored.flatMap(({ i }, k) => {
    const input = inputs[i]
    return (input.to as string[]).map((name) => {
      const agent = agents.get(name) as { id: number, webhook_url: string | null }
      return {
        message_seq: seqs[k], recipient_id: agent.id, priority: rankOf(input.priority), webhook_next_at: agent.webhook_url === null ? null : input.now, ack_by: ackBy(input)
      }
    })
  })
  for (let from = 0; from < deliveries.length; from += ROWS_PER_INSERT) {
    await trx.insertInto('deliveries').values(deliveries.slice(from, from + ROWS_PER_INSERT)).execute()
  }
  await countSent(trx, stored.map(({ i }) => ({ priority: inputs[i].priority, recipients: (inputs[i].to as string[]).length })))

  stored.forEach(({ i, threadId }, k) => {
    const input = inputs[i]
    const recipients = (input.to as string[]).map((name) => agents.get(name) as { id: number, webhook_url: string | null })
    outcomes[i] = {
      ok: true,
      replayed: false,
      recipientIds: recipients.map((a) => a.id),
      webhooks: recipients.some((a) => a.webhook_url !== null),
      sent: {
        id: seqs[k],
        thread_id: threadId ?? seqs[k],
        from: input.senderName,
        to: input.to as string[],
        broadcast: false,
        topic: null,
        queue: null,
        recipients: recipients.length,
        priority: input.priority,
        created_at: input.now
      }
    }
  })
  return outcomes
}

// A topic message wakes its subscribers by id up to this many of them; beyond, every reader, as a broadcast does.
const WAKE_BY_ID = 100

// The statements of a topic publish, compiled once (db/prepared.ts). `found` is 0 or 1 on SQLite, a boolean on
// PostgreSQL: only its truth is used.
const topicAudience = prepared((db, topic: string, senderId: number) => db.selectNoFrom((eb) => [
  eb.exists(eb.selectFrom('topics').select('name').where('name', '=', topic)).as('found'),
  subscribersOf(db, topic, senderId).select((s) => s.fn.countAll<number>().as('n')).as('n')
]))
const subscriberIds = prepared((db, topic: string, senderId: number) => subscribersOf(db, topic, senderId).select('s.agent_id'))
// A subscriber with a webhook gets its delivery row now, with the push queued, as a broadcast's recipients do.
const topicWebhooks = prepared((db, seq: number, priority: number, now: string, topic: string, senderId: number) => db.insertInto('deliveries')
  .columns(['message_seq', 'priority', 'webhook_next_at', 'recipient_id'])
  .expression(subscribersOf(db, topic, senderId)
    .where(({ exists, selectFrom }) => exists(selectFrom('agents as a').select('a.id').whereRef('a.id', '=', 's.agent_id').where('a.webhook_url', 'is not', null)))
    .select([integer(seq).as('message_seq'), integer(priority).as('priority'), sql<string>`cast(${now} as text)`.as('webhook_next_at'), 's.agent_id'])))

// Rows of five columns: far below the bound parameters either engine takes in one statement (SQLite 32,766,
// PostgreSQL 65,535).
const ROWS_PER_INSERT = 4000

// The statements of every direct send, compiled once (db/prepared.ts).
const registeredByName = prepared((db, names: string[]) => db.selectFrom('agents').select(['id', 'name', 'webhook_url'])
  .where('name', 'in', names).where('deleted_at', 'is', null))
const insertMessage = prepared((db, row: NewMessage) => db.insertInto('messages').values(row).returning('seq'))
const startThread = prepared((db, seq: number) => db.updateTable('messages').set({ thread_id: seq }).where('seq', '=', seq))
// One row per recipient, with a webhook push queued for those that have a webhook.
const insertDeliveries = prepared((db, seq: number, priority: number, now: string, ackBy: string | null, ids: number[]) => db.insertInto('deliveries')
  .columns(['message_seq', 'recipient_id', 'priority', 'webhook_next_at', 'ack_by'])
  .expression(db.selectFrom('agents').where('id', 'in', ids).select((eb) => [
    integer(seq).as('message_seq'), 'id', integer(priority).as('priority'),
    eb.case().when('webhook_url', 'is not', null).then(eb.cast(eb.val(now), 'text')).end().as('webhook_next_at'),
    eb.cast(eb.val(ackBy), 'text').as('ack_by')
  ])))


// A number bound in a select list. PostgreSQL types an untyped parameter there as text, which an INSERT … SELECT
// then refuses to put in an integer column; SQLite takes the cast as a no-op.
const integer = (value: number) => sql<number>`cast(${value} as bigint)`

const registeredOthers = (db: Db, agentId: number) =>
  db.selectFrom('agents as a').where('a.deleted_at', 'is', null).where('a.id', '!=', agentId)
// A topic's subscribers but the sender: who gets a message published now. From the topic's subscriptions alone (a
// range of their primary key; deregistration deletes an agent's), so a publish costs what its subscribers cost, and no
// join's plan hangs on statistics: PostgreSQL joined a fresh topic's 1,000 subscriptions to the agents in a nested
// loop of a million rows until ANALYZE had seen them.
const subscribersOf = (db: Db, topic: string, senderId: number) => db.selectFrom('subscriptions as s')
  .where('s.topic', '=', topic).where('s.agent_id', '!=', senderId)

async function sentSummary (db: Db, seq: number, from: string): Promise<Sent> {
  const m = await db.selectFrom('messages').selectAll().where('seq', '=', seq).executeTakeFirstOrThrow()
  const { count } = await db.selectFrom('deliveries').select((eb) => eb.fn.countAll<number>().as('count'))
    .where('message_seq', '=', seq).executeTakeFirstOrThrow()
  const pending = m.recipients === null ? (await broadcastPending(db, seq, m.sender_id, m.topic)).length : 0
  return {
    id: m.seq,
    thread_id: m.thread_id,
    from,
    to: m.recipients === null ? [] : JSON.parse(m.recipients),
    broadcast: m.recipients === null && m.topic === null,
    topic: m.topic,
    queue: m.queue,
    recipients: Number(count) + pending,
    priority: PRIORITIES[m.priority],
    created_at: m.created_at
  }
}

// Broadcasts are fanned out on read. Writing a row per agent into indexes keyed by agent touched a page per agent
// for every broadcast; instead each agent's copies of the broadcasts stored since its broadcasts_upto are made in
// INSERT … SELECTs into its own index range before it reads, SYNC_BATCH at a time so that an agent back from a long
// absence does not hold the event loop. Every read of deliveries calls this first and reads only up to the seq it
// returns: every message stored up to it that is meant for the agent has its row by then, so a broadcast committed
// meanwhile is never skipped by a position or a cursor.
const SYNC_BATCH = 1000

// The newest message and the newest broadcast, in one statement so that both come from the same snapshot. It runs
// before every read and every stream wake-up.
// When every message is archived the newest is in the archive: a reader's horizon must not fall back to 0 then.
const horizon = prepared((db) => db.selectNoFrom((eb) => [
  eb.fn.coalesce(
    eb.selectFrom('messages').select((s) => s.fn.max('seq').as('seq')),
    eb.selectFrom('archived_messages').select((s) => s.fn.max('seq').as('seq'))
  ).as('latest'),
  eb.selectFrom('messages').select((s) => s.fn.max('seq').as('seq')).where('recipients', 'is', null).as('broadcast')
]))
// The newest message (the backstop behind notifications, bus/backstop.ts).
export async function latestPosition (db: Kysely<Database>): Promise<number> {
  const [{ latest }] = await horizon(db)
  return Number(latest ?? 0)
}

// Who has messages stored after `after`, up to `upTo` (the backstop): the newest broadcast among them (0 for none),
// and each agent with its newest direct copy or message of a topic it subscribed to before it was stored.
export async function recipientsBetween (db: Kysely<Database>, after: number, upTo: number): Promise<{ broadcast: number, agents: Map<number, number> }> {
  const agents = new Map<number, number>()
  for (const rows of [await recipientsIn(db, after, upTo), await subscribersIn(db, after, upTo)]) {
    for (const r of rows) agents.set(Number(r.recipient_id), Math.max(agents.get(Number(r.recipient_id)) ?? 0, Number(r.seq)))
  }
  const [{ seq }] = await broadcastIn(db, after, upTo)
  return { broadcast: Number(seq ?? 0), agents }
}
const recipientsIn = prepared((db, after: number, upTo: number) => db.selectFrom('deliveries')
  .select((eb) => ['recipient_id', eb.fn.max('message_seq').as('seq')])
  .where('message_seq', '>', after).where('message_seq', '<=', upTo).groupBy('recipient_id'))
const subscribersIn = prepared((db, after: number, upTo: number) => db.selectFrom('messages as m')
  .innerJoin('subscriptions as s', (j) => j.onRef('s.topic', '=', 'm.topic').onRef('s.since_seq', '<', 'm.seq'))
  .select((eb) => ['s.agent_id as recipient_id', eb.fn.max('m.seq').as('seq')])
  .where('m.recipients', 'is', null).where('m.topic', 'is not', null).where('m.seq', '>', after).where('m.seq', '<=', upTo)
  .groupBy('s.agent_id'))
const broadcastIn = prepared((db, after: number, upTo: number) => db.selectFrom('messages')
  .select((eb) => eb.fn.max('seq').as('seq'))
  .where('recipients', 'is', null).where('topic', 'is', null).where('seq', '>', after).where('seq', '<=', upTo))

export async function syncBroadcasts (db: Kysely<Database>, write: Write, agent: { id: number, broadcasts_upto: number }): Promise<number> {
  const [{ latest, broadcast }] = await horizon(db)
  while (broadcast !== null && agent.broadcasts_upto < broadcast) {
    const from = agent.broadcasts_upto
    const upTo = await write(async (trx) => {
      const pending = trx.selectFrom('messages').where('recipients', 'is', null).where('seq', '>', from).where('seq', '<=', broadcast)
      const last = await pending.select('seq').orderBy('seq').offset(SYNC_BATCH - 1).limit(1).executeTakeFirst()
      const to = last?.seq ?? broadcast
      await trx.insertInto('deliveries').columns(['message_seq', 'recipient_id', 'priority'])
        .expression(pending.select(['seq', integer(agent.id).as('recipient_id'), 'priority'])
          .where('seq', '<=', to).where('sender_id', '!=', agent.id)
          // A topic message only for a subscriber that subscribed before it was stored.
          .where((eb) => eb.or([eb('topic', 'is', null), subscribedBefore(agent.id)]))
          // A reader racing its agent's deregistration makes no more copies for it.
          .where(({ exists, selectFrom }) => exists(selectFrom('agents').select('id').where('id', '=', agent.id).where('deleted_at', 'is', null))))
        // A recipient with a webhook got its row when the broadcast was sent.
        .onConflict((oc) => oc.doNothing())
        .execute()
      await trx.updateTable('agents').set({ broadcasts_upto: to }).where('id', '=', agent.id).where('broadcasts_upto', '<', to).execute()
      return to
    })
    agent.broadcasts_upto = Math.max(agent.broadcasts_upto, upTo)
  }
  return latest ?? 0
}

// Whether the agent subscribed to the topic of the message being read (in a query over `messages`) before it was stored.
const subscribedBefore = (agentId: number) => sql<boolean>`exists (select 1 from subscriptions s
  where s.topic = ${sql.ref('messages.topic')} and s.agent_id = ${agentId} and s.since_seq < ${sql.ref('messages.seq')})`

// The registered agents a broadcast, or a message of the topic `topic` names, is meant for that have not read far
// enough to have their row for it yet.
function pendingAgents (db: Db, seq: number | Expression<number>, senderId: number | Expression<number>,
  topic: string | null | Expression<string | null>) {
  const agents = db.selectFrom('agents as a').where('a.deleted_at', 'is', null)
    .where('a.broadcasts_upto', '<', seq).where('a.id', '!=', senderId)
  if (topic === null) return agents
  return agents.where((eb) => {
    const subscribed = eb.exists(eb.selectFrom('subscriptions as s').select('s.agent_id')
      .whereRef('s.agent_id', '=', 'a.id').where('s.topic', '=', topic).where('s.since_seq', '<', seq))
    return typeof topic === 'string' ? subscribed : eb.or([eb(topic, 'is', null), subscribed])
  })
}

async function broadcastPending (db: Db, seq: number, senderId: number, topic: string | null): Promise<string[]> {
  const rows = await pendingAgents(db, seq, senderId, topic).select('a.name')
    .where(({ not, exists, selectFrom }) => not(exists(selectFrom('deliveries as o').select('o.message_seq')
      .where('o.message_seq', '=', seq).whereRef('o.recipient_id', '=', 'a.id'))))
    .execute()
  return rows.map((r) => r.name)
}

// The live tables and the archive have the same columns, so each read is written once and run over either pair.
// (Reading through one UNION ALL view instead makes SQLite materialise it: a scan of every message per query.)
interface Store { messages: 'messages', deliveries: 'deliveries', archived: 0 | 1 }
const LIVE: Store = { messages: 'messages', deliveries: 'deliveries', archived: 0 }
// Typed as the live tables: same shape, other names.
const ARCHIVE = { messages: 'archived_messages', deliveries: 'archived_deliveries', archived: 1 } as unknown as Store
const STORES = [LIVE, ARCHIVE]

const messageColumns = (store: Store) => [
  'm.seq', 'm.sender_id', 'm.recipients', 'm.subject', 'm.body', 'm.data', 'm.priority', 'm.reply_to', 'm.thread_id',
  'm.created_at', 'm.topic', 'm.queue', sql.lit(store.archived).as('archived'), 's.name as sender', 'd.delivered_at', 'd.read_at', 'd.ack_by'
] as const

// A message row as the reads select it: with its store, its sender's name, and the reader's own delivery.
type MessageRowWithSender = Omit<MessageRow, 'sender_id' | 'idempotency_key' | 'request_hash'> & {
  archived: 0 | 1
  sender: string
  delivered_at: string | null
  read_at: string | null
  ack_by: string | null
}

// The part of a message that every recipient sees alike.
type StoredRow = Pick<MessageRowWithSender, 'seq' | 'sender' | 'recipients' | 'subject' | 'body' | 'data' | 'priority' | 'reply_to' |
  'thread_id' | 'created_at' | 'topic' | 'queue'>
function toStored (row: StoredRow): StoredMessage {
  return {
    id: row.seq,
    from: row.sender,
    to: row.recipients === null ? [] : JSON.parse(row.recipients) as string[],
    broadcast: row.recipients === null && row.topic === null,
    topic: row.topic,
    queue: row.queue,
    subject: row.subject,
    body: row.body,
    data: row.data === null ? null : JSON.parse(row.data) as Record<string, unknown>,
    priority: PRIORITIES[row.priority],
    reply_to: row.reply_to,
    thread_id: row.thread_id,
    created_at: row.created_at
  }
}

// A message as one reader sees it. Written out rather than spread: a spread copy is a slow object to build and
// to serialize (it was a quarter of an inbox request's time).
function withDelivery (m: StoredMessage, deliveredAt: string | null, readAt: string | null, ackBy: string | null, archived: boolean) {
  return {
    id: m.id,
    from: m.from,
    to: m.to,
    broadcast: m.broadcast,
    topic: m.topic,
    queue: m.queue,
    subject: m.subject,
    body: m.body,
    data: m.data,
    priority: m.priority,
    reply_to: m.reply_to,
    thread_id: m.thread_id,
    created_at: m.created_at,
    delivered_at: deliveredAt,
    read_at: readAt,
    ack_by: ackBy,
    archived
  }
}

export function toMessage (row: MessageRowWithSender) {
  return withDelivery(toStored(row), row.delivered_at, row.read_at, row.ack_by, row.archived === 1)
}
export type MessageView = ReturnType<typeof toMessage>

// Deliveries joined to their messages, for reads that need the message of every row in one statement (the webhook
// queue); inbox pages and streams take messages from the cache instead (withMessages).
export function deliveredMessages (db: Db) {
  return db.selectFrom('deliveries as d')
    .innerJoin('messages as m', 'm.seq', 'd.message_seq')
    .innerJoin('agents as s', 's.id', 'm.sender_id')
    .select(messageColumns(LIVE))
}

// Messages of one store that the agent sent or received, with its own delivery. Only for narrow lookups (one id,
// one thread): the OR cannot use an index on its own.
// A queue message is also visible to the agent that claimed it last, so that a worker can read its task again and
// reply to it (reply_to) in its thread.
function visibleIn (db: Db, store: Store, agentId: number) {
  return db.selectFrom(`${store.messages} as m`)
    .innerJoin('agents as s', 's.id', 'm.sender_id')
    .leftJoin(`${store.deliveries} as d`, (j) => j.onRef('d.message_seq', '=', 'm.seq').on('d.recipient_id', '=', agentId))
    .select(messageColumns(store))
    .where((eb) => eb.or([eb('m.sender_id', '=', agentId), eb('d.recipient_id', '=', agentId), eb.and([
      eb('m.queue', 'is not', null),
      eb.exists(eb.selectFrom('queue_entries as q').select('q.message_seq').whereRef('q.message_seq', '=', 'm.seq').where('q.claimed_by', '=', agentId))
    ])]))
}

async function findVisible (db: Db, agentId: number, seq: number) {
  for (const store of STORES) {
    const row = await visibleIn(db, store, agentId).where('m.seq', '=', seq).executeTakeFirst()
    if (row) return { row, store }
  }
  return undefined
}

export interface InboxQuery {
  unread?: boolean
  priority?: PriorityName
  limit: number
  // Keyset position in inbox order: the last (priority rank, seq) seen.
  after?: { rank: number, seq: number }
  // Only messages up to this seq (a stream's backlog ends where its live part starts).
  upToSeq?: number
}

// What a reader needs of its own delivery beside the message.
interface DeliveryRef { message_seq: number, delivered_at: string | null, read_at: string | null, ack_by: string | null }
const deliveryColumns = ['d.message_seq', 'd.delivered_at', 'd.read_at', 'd.ack_by'] as const

// A page of the caller's live inbox in inbox order: urgent, then high, then normal; oldest first within each. Every
// option is always bound (absent ones to values that let every row through), so each of the two queries has one
// shape and is compiled once.
const inboxPage = (unread: boolean) => prepared((db, agentId: number, minRank: number, maxRank: number, upToSeq: number,
  afterRank: number, afterSeq: number, limit: number) => {
  let query = db.selectFrom('deliveries as d').select(deliveryColumns).where('d.recipient_id', '=', agentId)
  if (unread) query = query.where('d.read_at', 'is', null)
  return query.where('d.priority', '>=', minRank).where('d.priority', '<=', maxRank)
    // The unary plus keeps SQLite from taking this bound as a reason to range-scan the primary key and sort the
    // agent's whole inbox (30 ms at 10,000 unread, against 0.05 ms on the inbox index); it changes nothing else.
    .where(sql<number>`+${sql.ref('d.message_seq')}`, '<=', upToSeq)
    .where((eb) => eb.or([eb('d.priority', '<', afterRank), eb.and([eb('d.priority', '=', afterRank), eb('d.message_seq', '>', afterSeq)])]))
    .orderBy('d.priority', 'desc').orderBy('d.message_seq', 'asc').limit(limit)
})
export const unreadInboxPage = inboxPage(true)
export const inboxPageAll = inboxPage(false)

export async function listInbox (db: Db, cache: MessageCache, agentId: number, q: InboxQuery): Promise<MessageView[]> {
  const rank = q.priority === undefined ? undefined : rankOf(q.priority)
  const page = q.unread ? unreadInboxPage : inboxPageAll
  const refs = await page(db, agentId, rank ?? 0, rank ?? PRIORITIES.length - 1, q.upToSeq ?? Number.MAX_SAFE_INTEGER,
    q.after?.rank ?? PRIORITIES.length, q.after?.seq ?? 0, q.limit)
  return withMessages(db, cache, refs)
}

// The caller's unread messages stored after a seq, in the order they were stored: a stream's live part.
const unreadAfter = prepared((db, agentId: number, afterSeq: number, upToSeq: number, limit: number) =>
  db.selectFrom('deliveries as d').select(deliveryColumns)
    .where('d.recipient_id', '=', agentId).where('d.read_at', 'is', null)
    .where('d.message_seq', '>', afterSeq).where('d.message_seq', '<=', upToSeq)
    .orderBy('d.message_seq').limit(limit))

export async function listUnreadAfter (db: Db, cache: MessageCache, agentId: number, afterSeq: number, upToSeq: number,
  limit: number): Promise<MessageView[]> {
  return withMessages(db, cache, await unreadAfter(db, agentId, afterSeq, upToSeq, limit))
}

// Messages by id with their sender's name, from one store. The ids are padded to a power of two, so that a few
// compiled statements serve every page size.
const messagesIn = (store: Store) => prepared((db, seqs: number[]) => db.selectFrom(`${store.messages} as m`)
  .innerJoin('agents as s', 's.id', 'm.sender_id')
  .select(['m.seq', 'm.recipients', 'm.subject', 'm.body', 'm.data', 'm.priority', 'm.reply_to', 'm.thread_id', 'm.created_at', 'm.topic', 'm.queue', 's.name as sender'])
  .where('m.seq', 'in', seqs))
const messageReads = STORES.map(messagesIn)

// The messages of these deliveries, from the cache or else the database: the live table, or the archive for one
// archived between reading its delivery and reading it.
async function withMessages (db: Db, cache: MessageCache, refs: DeliveryRef[]): Promise<MessageView[]> {
  const found = new Map<number, StoredMessage>()
  let missing: number[] = []
  for (const { message_seq: seq } of refs) {
    const message = found.get(seq) ?? cache.get(seq)
    if (message === undefined) missing.push(seq)
    else found.set(seq, message)
  }
  for (const read of messageReads) {
    if (missing.length === 0) break
    const size = 2 ** Math.ceil(Math.log2(missing.length))
    for (const row of await read(db, [...missing, ...Array<number>(size - missing.length).fill(missing[0])])) {
      const stored = toStored(row)
      found.set(row.seq, stored)
      cache.set(stored, row.body.length + (row.subject?.length ?? 0) + (row.data?.length ?? 0) + (row.recipients?.length ?? 0))
    }
    missing = missing.filter((seq) => !found.has(seq))
  }
  return refs.map((ref) => {
    const message = found.get(ref.message_seq)
    if (message === undefined) throw new Error(`message ${ref.message_seq} has a delivery but is stored nowhere`)
    return withDelivery(message, ref.delivered_at, ref.read_at, ref.ack_by, false)
  })
}

// Messages by id as the agent that was handed them now sees them (a queue claim): delivered, not read.
export async function messagesByIds (db: Db, cache: MessageCache, seqs: number[], deliveredAt: string): Promise<MessageView[]> {
  return withMessages(db, cache, seqs.map((seq) => ({ message_seq: seq, delivered_at: deliveredAt, read_at: null, ack_by: null })))
}

// Records, in a group commit, which messages of a page the agent received for the first time (by its stream or an
// inbox read), and shows it on them; answers how many that was. A page already delivered costs no write.
export async function recordDelivery (write: Write, agentId: number, page: MessageView[]): Promise<number> {
  const firstTime = page.filter((m) => m.delivered_at === null)
  if (firstTime.length === 0) return 0
  const now = new Date().toISOString()
  await write((trx) => markDelivered(trx, agentId, firstTime.map((m) => m.id), now))
  for (const m of firstTime) m.delivered_at = now
  return firstTime.length
}

// Records the first hand-over of these messages to the agent.
export async function markDelivered (db: Db, agentId: number, seqs: number[], now: string): Promise<void> {
  if (seqs.length === 0) return
  await db.updateTable('deliveries').set({ delivered_at: now })
    .where('recipient_id', '=', agentId).where('message_seq', 'in', seqs).where('delivered_at', 'is', null).execute()
}

export async function countUnread (db: Db, agentId: number): Promise<number> {
  const { count } = await db.selectFrom('deliveries').select((eb) => eb.fn.countAll<number>().as('count'))
    .where('recipient_id', '=', agentId).where('read_at', 'is', null).executeTakeFirstOrThrow()
  return Number(count)
}

export interface AckOutcome {
  acked: number
  already_read: number
  not_found: number[]
  // The messages this ack marked read, with their senders, for read receipts.
  newlyRead: Array<{ seq: number, senderId: number }>
}

// Marks the caller's deliveries read, inside the caller's transaction. Idempotent: a second ack of the same id
// counts as already read.
export async function ackMessages (trx: Transaction<Database>, agentId: number, ids: number[], now: string): Promise<AckOutcome> {
  const unique = [...new Set(ids)]
  const rows = await trx.selectFrom('deliveries as d').innerJoin('messages as m', 'm.seq', 'd.message_seq')
    .select(['d.message_seq', 'd.read_at', 'm.sender_id'])
    .where('d.recipient_id', '=', agentId).where('d.message_seq', 'in', unique).execute()
  const found = new Set(rows.map((r) => r.message_seq))
  const missing = unique.filter((id) => !found.has(id))
  // Archived messages were read by everyone, this caller included.
  const archived = missing.length === 0 ? [] : await trx.selectFrom('archived_deliveries').select('message_seq')
    .where('recipient_id', '=', agentId).where('message_seq', 'in', missing).execute()
  for (const r of archived) found.add(r.message_seq)
  const newlyRead = rows.filter((r) => r.read_at === null).map((r) => ({ seq: r.message_seq, senderId: r.sender_id }))
  const unread = newlyRead.map((r) => r.seq)
  if (unread.length > 0) {
    await trx.updateTable('deliveries').set({ read_at: now })
      .where('recipient_id', '=', agentId).where('message_seq', 'in', unread).execute()
    await countRead(trx, agentId, unread.length)
  }
  return {
    acked: unread.length,
    already_read: found.size - unread.length,
    not_found: unique.filter((id) => !found.has(id)),
    newlyRead
  }
}

export interface Receipt { agent: string, delivered_at: string | null, read_at: string | null, ack_by: string | null, overdue: boolean }

export async function getMessage (db: Db, agentId: number, seq: number) {
  const found = await findVisible(db, agentId, seq)
  if (!found) return undefined
  const { row, store } = found
  const message: MessageView & { receipts?: Receipt[] } = toMessage(row)
  if (row.sender_id === agentId) {
    const receipts = (await db.selectFrom(`${store.deliveries} as d`).innerJoin('agents as a', 'a.id', 'd.recipient_id')
      .select(['a.name as agent', 'd.delivered_at', 'd.read_at', 'd.ack_by', 'd.overdue_at']).where('d.message_seq', '=', seq).execute())
      .map(({ overdue_at: overdueAt, ...receipt }) => ({ ...receipt, overdue: overdueAt !== null }))
    // A broadcast's recipients that have not read since it was sent have no row yet: neither delivered nor read.
    if (row.recipients === null && store === LIVE) {
      for (const agent of await broadcastPending(db, seq, agentId, row.topic)) {
        receipts.push({ agent, delivered_at: null, read_at: null, ack_by: null, overdue: false })
      }
    }
    message.receipts = receipts.sort((a, b) => a.agent < b.agent ? -1 : a.agent > b.agent ? 1 : 0)
  }
  return message
}

export async function listThread (db: Db, agentId: number, threadId: number): Promise<MessageView[]> {
  const rows = []
  for (const store of STORES) rows.push(...await visibleIn(db, store, agentId).where('m.thread_id', '=', threadId).execute())
  return rows.sort((a, b) => a.seq - b.seq).map(toMessage)
}

export interface HistoryQuery {
  since?: string
  until?: string
  withAgentId?: number
  thread?: number
  topic?: string
  limit: number
  afterSeq?: number
  // Only messages up to this seq (the reader's horizon).
  upToSeq?: number
}

// What the agent sent or received, in the order it was stored, archived messages included. Each of the four
// sources (sent and received, live and archived) is an index range scan; the pages are merged here.
export async function listHistory (db: Db, agentId: number, q: HistoryQuery): Promise<MessageView[]> {
  const pages = await Promise.all(STORES.flatMap((store) => (['sent', 'received'] as const).map(async (side) => {
    let query = side === 'sent'
      ? db.selectFrom(`${store.messages} as m`)
        .leftJoin(`${store.deliveries} as d`, (j) => j.onRef('d.message_seq', '=', 'm.seq').on('d.recipient_id', '=', agentId))
        .where('m.sender_id', '=', agentId)
      : db.selectFrom(`${store.deliveries} as d`).innerJoin(`${store.messages} as m`, 'm.seq', 'd.message_seq')
        .where('d.recipient_id', '=', agentId)
    let built = query.innerJoin('agents as s', 's.id', 'm.sender_id').select(messageColumns(store))
    if (q.afterSeq !== undefined) built = built.where('m.seq', '>', q.afterSeq)
    if (q.upToSeq !== undefined) built = built.where('m.seq', '<=', q.upToSeq)
    if (q.since !== undefined) built = built.where('m.created_at', '>=', q.since)
    if (q.until !== undefined) built = built.where('m.created_at', '<', q.until)
    if (q.thread !== undefined) built = built.where('m.thread_id', '=', q.thread)
    if (q.topic !== undefined) built = built.where('m.topic', '=', q.topic)
    const other = q.withAgentId
    if (other !== undefined) {
      // A conversation with one other agent: what I sent them, or what they sent me.
      built = side === 'sent'
        ? built.where((eb) => eb.exists(eb.selectFrom(`${store.deliveries} as o`).select('o.message_seq')
          .whereRef('o.message_seq', '=', 'm.seq').where('o.recipient_id', '=', other)))
        : built.where('m.sender_id', '=', other)
    }
    return built.orderBy('m.seq').limit(q.limit).execute()
  })))
  const bySeq = new Map<number, MessageRowWithSender>()
  for (const row of pages.flat()) bySeq.set(row.seq, row)
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq).slice(0, q.limit).map(toMessage)
}

// Moves up to `batch` messages created before the cutoff and read by every recipient into the archive tables,
// in one short transaction; returns how many moved. The caller loops, yielding between batches, so sends never wait long.
export async function archiveBatch (storage: Storage, cutoff: string, batch: number): Promise<number> {
  // One node of a cluster archives at a time; the others find nothing to do (0) until it is done.
  return await storage.exclusively('archive', async (trx) => {
    const rows = await trx.selectFrom('messages as m').select('m.seq')
      .where('m.created_at', '<', cutoff)
      // Read by every recipient that is still registered: a deregistered agent will never read its copy.
      .where((eb) => eb.not(eb.exists(eb.selectFrom('deliveries as d').innerJoin('agents as a', 'a.id', 'd.recipient_id')
        .select('d.message_seq').whereRef('d.message_seq', '=', 'm.seq').where('d.read_at', 'is', null).where('a.deleted_at', 'is', null))))
      // A broadcast also waits for the registered agents that have not caught up with it.
      .where((eb) => eb.or([eb('m.recipients', 'is not', null),
        eb.not(eb.exists(pendingAgents(trx, eb.ref('m.seq'), eb.ref('m.sender_id'), eb.ref('m.topic')).select('a.id')))]))
      // A queue message waits for its ack (or stays as a dead letter until requeued and acked).
      .where((eb) => eb.not(eb.exists(eb.selectFrom('queue_entries as q').select('q.message_seq')
        .whereRef('q.message_seq', '=', 'm.seq').where('q.acked_at', 'is', null))))
      .orderBy('m.seq').limit(batch).execute()
    if (rows.length === 0) return 0
    const seqs = rows.map((r) => r.seq)
    await trx.insertInto('archived_messages').expression(trx.selectFrom('messages').selectAll().where('seq', 'in', seqs)).execute()
    await trx.insertInto('archived_deliveries').expression(trx.selectFrom('deliveries').selectAll().where('message_seq', 'in', seqs)).execute()
    await trx.deleteFrom('deliveries').where('message_seq', 'in', seqs).execute()
    await trx.deleteFrom('messages').where('seq', 'in', seqs).execute()
    await countArchived(trx, seqs.length)
    return seqs.length
  }) ?? 0
}
