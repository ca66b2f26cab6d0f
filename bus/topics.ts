import { createTopic, listTopics, subscribe, topicExists, unsubscribe } from '../db/topics.js'
import { TopicNotFound, TopicTaken } from '../errors.js'
import type { TopicCreate } from '../schemas/topic.js'
import type { AgentCaller } from './agents.js'
import type { BusOptions } from './bus.js'
import { refuseNul } from './pages.js'

// Topics (publish/subscribe). Publishing is a send with `topic` (bus/messages.ts); a topic message then reaches each
// subscriber as any message does: inbox, stream, long-poll, webhook, receipts, history.
export function topicOperations ({ db, write, clock = Date.now }: BusOptions) {
  const now = (): string => new Date(clock()).toISOString()

  async function mustExist (name: string): Promise<void> {
    if (!await topicExists(db, name)) throw new TopicNotFound(name)
  }

  return {
    // Creating a topic does not subscribe its creator.
    async createTopic ({ agent }: AgentCaller, { name, description }: TopicCreate) {
      refuseNul({ description })
      const createdAt = now()
      if (!await write((trx) => createTopic(trx, { name, description: description ?? null, created_by: agent.id, created_at: createdAt }))) {
        throw new TopicTaken(name)
      }
      return { name, description: description ?? null, created_by: agent.name, created_at: createdAt, subscribers: 0, subscribed: false }
    },

    async listTopics ({ agent }: AgentCaller) {
      return { topics: await listTopics(db, agent.id) }
    },

    // From the newest message on: the caller gets what is published after this. Idempotent.
    async subscribe ({ agent }: AgentCaller, topic: string) {
      await mustExist(topic)
      // Ordered: a publish in flight either has its seq below the start (and is not the caller's) or above it.
      const changed = await write((trx) => subscribe(trx, topic, agent.id, now()), { ordered: true })
      return { topic, subscribed: true, changed }
    },

    // What was published while subscribed stays in the caller's inbox. Idempotent.
    async unsubscribe ({ agent }: AgentCaller, topic: string) {
      await mustExist(topic)
      const changed = await write((trx) => unsubscribe(trx, topic, agent.id), { ordered: true })
      return { topic, subscribed: false, changed }
    }
  }
}
