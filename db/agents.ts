import { sql, type Kysely, type Transaction } from 'kysely'
import { prepared } from './prepared.js'
import { clearWebhooks } from './webhooks.js'
import type { AgentRow, Database } from './schema.js'

type Db = Kysely<Database> | Transaction<Database>

export interface AgentProfile {
  description?: string
  capabilities?: string[]
  metadata?: Record<string, unknown>
}

export interface Webhook { url: string, secret: string }

// The API's view of an agent row: JSON columns parsed, the online flag as a status word.
export function toAgent (row: AgentRow) {
  return {
    name: row.name,
    description: row.description,
    capabilities: JSON.parse(row.capabilities) as string[],
    metadata: JSON.parse(row.metadata) as Record<string, unknown>,
    status: row.online === 1 ? 'online' as const : 'offline' as const,
    last_seen_at: row.last_seen_at,
    registered_at: row.registered_at
  }
}

// What the agent itself (or the admin) sees: the public view plus its webhook URL.
export const toAgentSelf = (row: AgentRow) => ({ ...toAgent(row), webhook_url: row.webhook_url })

// The new agent's row; 'taken' when a registered agent has the name; 'retired' when a deregistered one had it (mail
// addressed to it, and others' history with it, must not reach a stranger) and reuseName was not given.
// Run it in the caller's transaction, as an ordered write (db/group-commit.ts): the agent's broadcasts_upto is the
// newest seq, and a send that took a seq but has not committed must not miss the new agent's webhook row or count.
export async function createAgent (trx: Db, name: string, profile: AgentProfile, tokenHash: string, now: string,
  webhook?: Webhook, { reuseName = false } = {}): Promise<AgentRow | 'taken' | 'retired'> {
  if (await findAgent(trx, name)) return 'taken'
  if (!reuseName && await trx.selectFrom('agents').select('id').where('name', '=', name).where('deleted_at', 'is not', null).executeTakeFirst()) return 'retired'
  const created = await trx.insertInto('agents').values({
    name,
    description: profile.description ?? null,
    capabilities: JSON.stringify(profile.capabilities ?? []),
    metadata: JSON.stringify(profile.metadata ?? {}),
    token_hash: tokenHash,
    registered_at: now,
    last_seen_at: null,
    deleted_at: null,
    webhook_url: webhook?.url ?? null,
    webhook_secret: webhook?.secret ?? null,
    // Broadcasts already stored were not meant for it.
    broadcasts_upto: trx.selectFrom('messages').select((eb) => eb.fn.coalesce(eb.fn.max('seq'), eb.lit(0)).as('seq'))
  })
    // Another node may register the same name between the check above and this insert: the name's unique index
    // decides, and the loser hears 'taken' as it would have a moment later.
    .onConflict((oc) => oc.column('name').where('deleted_at', 'is', null).doNothing())
    .returningAll().executeTakeFirst()
  return created ?? 'taken'
}

export async function findAgent (db: Db, name: string): Promise<AgentRow | undefined> {
  return db.selectFrom('agents').selectAll().where('name', '=', name).where('deleted_at', 'is', null).executeTakeFirst()
}

// What authentication needs of the calling agent, on every request: the fewer columns, the cheaper the lookup.
export type CallingAgent = Pick<AgentRow, 'id' | 'name' | 'online' | 'last_seen_at' | 'broadcasts_upto'>

const byTokenHash = prepared((db, tokenHash: string) => db.selectFrom('agents')
  .select(['id', 'name', 'online', 'last_seen_at', 'broadcasts_upto'])
  .where('token_hash', '=', tokenHash).where('deleted_at', 'is', null))

export async function findAgentByTokenHash (db: Db, tokenHash: string): Promise<CallingAgent | undefined> {
  return (await byTokenHash(db, tokenHash))[0]
}

export async function listAgents (db: Db): Promise<AgentRow[]> {
  return db.selectFrom('agents').selectAll().where('deleted_at', 'is', null).orderBy('name').execute()
}

export async function updateProfile (db: Db, id: number, profile: AgentProfile): Promise<void> {
  const set = {
    ...(profile.description !== undefined && { description: profile.description }),
    ...(profile.capabilities !== undefined && { capabilities: JSON.stringify(profile.capabilities) }),
    ...(profile.metadata !== undefined && { metadata: JSON.stringify(profile.metadata) })
  }
  if (Object.keys(set).length > 0) await db.updateTable('agents').set(set).where('id', '=', id).execute()
}

// False when the agent deregistered meanwhile: its new token would never work.
export async function setTokenHash (db: Db, id: number, tokenHash: string): Promise<boolean> {
  const { numUpdatedRows } = await db.updateTable('agents').set({ token_hash: tokenHash }).where('id', '=', id).where('deleted_at', 'is', null)
    .executeTakeFirst()
  return numUpdatedRows > 0n
}

// The row stays, without its token or webhook, so messages it sent keep their sender in the others' history.
// Its pending webhook attempts go too (the dispatcher skips agents without a webhook in any case).
export async function deregisterAgent (db: Db, id: number, now: string): Promise<void> {
  await db.updateTable('agents').set({ token_hash: null, online: 0, deleted_at: now, webhook_url: null, webhook_secret: null })
    .where('id', '=', id).execute()
  await clearWebhooks(db, id)
  // After the update, whose trigger (migrations 0004, 0005) counts the agent's unread topic copies through them: a
  // subscription then only holds registered agents, so a publish counts its recipients from subscriptions alone.
  await db.deleteFrom('subscriptions').where('agent_id', '=', id).execute()
}

// A stream that ends after its agent deregistered must not show it online again.
const setSeen = prepared((db, ids: number[], now: string) => db.updateTable('agents').set({ last_seen_at: now, online: 1 }).where('id', 'in', ids).where('deleted_at', 'is', null))

export async function markSeen (db: Db, ids: number | number[], now: string): Promise<void> {
  await setSeen(db, Array.isArray(ids) ? ids : [ids], now)
}

// Marks offline every online agent not seen since the cutoff, except those given; returns their names.
export async function markOfflineBefore (db: Db, cutoff: string, exceptIds: number[] = []): Promise<string[]> {
  let query = db.updateTable('agents').set({ online: 0 }).where('online', '=', 1).where('last_seen_at', '<', cutoff)
  if (exceptIds.length > 0) query = query.where('id', 'not in', exceptIds)
  return (await query.returning('name').execute()).map((r) => r.name)
}

// Read from the registered agents' entries of agents_registered_online (migration 0004) alone: deregistered rows,
// which are kept for history and only accumulate, cost nothing here.
const registeredAgentCounts = prepared((db) => db.selectFrom('agents')
  .select([sql<number>`count(*)`.as('total'), sql<number>`coalesce(sum(online), 0)`.as('online')])
  .where('deleted_at', 'is', null))

export async function agentStats (db: Db): Promise<{ total: number, online: number }> {
  const [row] = await registeredAgentCounts(db)
  return { total: Number(row.total), online: Number(row.online) }
}

// The token hash of each of these agents that is still registered (the backstop behind notifications,
// bus/backstop.ts). In chunks: the number of readers a node holds is not bounded by what one statement may bind.
export async function currentTokenHashes (db: Kysely<Database>, ids: number[]): Promise<Map<number, string | null>> {
  const hashes = new Map<number, string | null>()
  for (let from = 0; from < ids.length; from += 1000) {
    const rows = await db.selectFrom('agents').select(['id', 'token_hash'])
      .where('id', 'in', ids.slice(from, from + 1000)).where('deleted_at', 'is', null).execute()
    for (const row of rows) hashes.set(Number(row.id), row.token_hash)
  }
  return hashes
}
