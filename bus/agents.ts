import type { Static } from '@sinclair/typebox'
import type { Kysely } from 'kysely'
import {
  createAgent, deregisterAgent, findAgent, findAgentByTokenHash, listAgents, markOfflineBefore, markSeen, setTokenHash, toAgent, toAgentSelf,
  updateProfile, type CallingAgent
} from '../db/agents.js'
import type { AgentRow, Database } from '../db/schema.js'
import { clearWebhooks, queueUndelivered, setWebhook } from '../db/webhooks.js'
import { AgentNotFound, BadWebhook, Forbidden, NameRetired, NameTaken } from '../errors.js'
import type { AgentCreate, AgentUpdate } from '../schemas/agent.js'
import { newWebhookSecret } from '../webhooks/sign.js'
import type { BusOptions } from './bus.js'
import { refuseNul } from './pages.js'
import { hashToken, newToken } from './tokens.js'

// Who calls: an agent, with the hash of the token it authenticated with (readers check it again: stillAuthorized),
// or the admin.
export type Caller = { kind: 'agent', agent: CallingAgent, tokenHash: string } | { kind: 'admin' }
export type AgentCaller = Extract<Caller, { kind: 'agent' }>

// Whether the token the caller authenticated with still names its agent. A reader (stream, long-poll) starts
// listening for 'revoked' events only after authentication, and a rotation or deregistration committed in between
// would go unheard: so a reader asks once more after it subscribed. Either this sees the new state, or the event
// (published after the commit) reaches the subscription.
export async function stillAuthorized (db: Kysely<Database>, agentId: number, tokenHash: string): Promise<boolean> {
  return (await findAgentByTokenHash(db, tokenHash))?.id === agentId
}

// An agent's webhook URL is for the agent itself and the admin.
const seesWebhookOf = (caller: Caller, name: string): boolean =>
  caller.kind === 'admin' || caller.agent.name === name

// The agent itself or the admin may manage an agent; anyone else is told it is forbidden.
function assertManages (caller: Caller, name: string): void {
  if (caller.kind === 'agent' && caller.agent.name !== name) throw new Forbidden(`only ${name} itself or the admin may do this`)
}

export function agentOperations ({ db, write, notifier, refuseWebhook, exclusively }: BusOptions) {
  // The registered agent of that name, or a 404.
  async function agentNamed (name: string): Promise<AgentRow> {
    const row = await findAgent(db, name)
    if (!row) throw new AgentNotFound(name)
    return row
  }

  async function checkWebhook (url: string): Promise<string> {
    const refused = await refuseWebhook(url)
    if (refused !== undefined) throw new BadWebhook(refused)
    return url
  }

  return {
    // A new agent and its token, which only this answer shows. The caller is null where registration is open (no
    // admin token); a name is never handed on unless the admin asks (mail addressed to the old agent must not reach
    // a stranger).
    async register (caller: Caller | null, input: AgentCreate) {
      const { name, webhook_url: url, reuse_name: reuseName = false, ...profile } = input
      refuseNul({ description: profile.description })
      if (reuseName && caller?.kind !== 'admin') throw new Forbidden('only the admin may reuse the name of a deregistered agent')
      const webhook = url === undefined ? undefined : { url: await checkWebhook(url), secret: newWebhookSecret() }
      const token = newToken()
      // Ordered: no send that has taken a seq but not committed may miss the new agent (db/agents.ts).
      const created = await write((trx) => createAgent(trx, name, profile, hashToken(token), new Date().toISOString(), webhook, { reuseName }), { ordered: true })
      if (created === 'taken') throw new NameTaken(name)
      if (created === 'retired') throw new NameRetired(name)
      return { ...toAgentSelf(created), ...(webhook && { webhook_secret: webhook.secret }), token }
    },

    // A new webhook URL gets a new secret (answered once) and a push of every message not yet delivered; null stops webhooks.
    async updateAgent (caller: Caller, name: string, input: Static<typeof AgentUpdate>) {
      assertManages(caller, name)
      const row = await agentNamed(name)
      const { webhook_url: url, ...profile } = input
      refuseNul({ description: profile.description ?? undefined })
      const webhook = url === undefined || url === null ? undefined : { url: await checkWebhook(url), secret: newWebhookSecret() }
      const now = new Date().toISOString()
      // A webhook change is ordered: a send in flight on another node must not store its delivery after the
      // undelivered ones were queued, without a push queued for it.
      await write(async (trx) => {
        await updateProfile(trx, row.id, profile)
        if (url !== undefined) await setWebhook(trx, row.id, webhook?.url ?? null, webhook?.secret ?? null)
        if (webhook) await queueUndelivered(trx, row.id, now)
        if (url === null) await clearWebhooks(trx, row.id)
      }, { ordered: url !== undefined })
      return { ...toAgentSelf(await agentNamed(name)), ...(webhook && { webhook_secret: webhook.secret }) }
    },

    async listAgents (caller: Caller) {
      return { agents: (await listAgents(db)).map((row) => seesWebhookOf(caller, row.name) ? toAgentSelf(row) : toAgent(row)) }
    },

    async getAgent (caller: Caller, name: string) {
      const row = await agentNamed(name)
      return seesWebhookOf(caller, row.name) ? toAgentSelf(row) : toAgent(row)
    },

    // The old token stops working at once. The webhook goes too: a token is rotated because it may have leaked, and
    // whoever held it may have pointed the webhook at themselves.
    async rotateToken (caller: Caller, name: string) {
      assertManages(caller, name)
      const row = await agentNamed(name)
      const token = newToken()
      await db.transaction().execute(async (trx) => {
        if (!await setTokenHash(trx, row.id, hashToken(token))) throw new AgentNotFound(name)
        if (row.webhook_url !== null) {
          await setWebhook(trx, row.id, null, null)
          await clearWebhooks(trx, row.id)
        }
      })
      // After the commit, as every event: the readers holding the old token end now.
      notifier.publish({ kind: 'revoked', agentId: row.id })
      return { name, token, webhook_removed: row.webhook_url !== null }
    },

    async deregister (caller: Caller, name: string): Promise<void> {
      assertManages(caller, name)
      const row = await agentNamed(name)
      // Ordered: the unread count it takes off must include the deliveries of sends in flight.
      await write((trx) => deregisterAgent(trx, row.id, new Date().toISOString()), { ordered: true })
      notifier.publish({ kind: 'revoked', agentId: row.id })
    },

    // The agent a token names, or undefined for an unknown or revoked one. Every call counts as activity: the agent
    // is marked seen, at most every seenEveryMs (so reads do not each cost a write), and announced if it was offline.
    async authenticate (token: string, seenEveryMs: number, now = new Date()): Promise<AgentCaller | undefined> {
      const tokenHash = hashToken(token)
      const agent = await findAgentByTokenHash(db, tokenHash)
      if (!agent) return undefined
      if (agent.online === 0 || agent.last_seen_at === null || now.getTime() - Date.parse(agent.last_seen_at) >= seenEveryMs) {
        await write((trx) => markSeen(trx, agent.id, now.toISOString()))
        if (agent.online === 0) notifier.publish({ kind: 'presence', agent: agent.name, status: 'online' })
        agent.online = 1
        agent.last_seen_at = now.toISOString()
      }
      return { kind: 'agent', agent, tokenHash }
    },

    stillAuthorized: async (agentId: number, tokenHash: string): Promise<boolean> => stillAuthorized(db, agentId, tokenHash),

    // Marks offline every agent silent for longer than ttlMs, except those with an open reader, and tells the
    // readers; returns their names.
    // Every node runs this on a timer. An agent with an open reader on this node is online on every node: the node
    // says so in the table, which every node reads. The sweep itself runs on one node of a cluster at a time.
    async sweepOffline (now: Date, ttlMs: number): Promise<string[]> {
      const connected = notifier.connectedAgents()
      if (connected.length > 0) await write((trx) => markSeen(trx, connected, now.toISOString()))
      const cutoff = new Date(now.getTime() - ttlMs).toISOString()
      const names = await exclusively('offline-sweep', (trx) => markOfflineBefore(trx, cutoff, connected)) ?? []
      for (const agent of names) notifier.publish({ kind: 'presence', agent, status: 'offline' })
      return names
    }
  }
}
