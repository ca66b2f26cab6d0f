import type { ClusterLink } from '../db/storage.js'
import type { BusEvent, Notifier } from './events.js'

// A notifier for a bus that shares its database with other nodes: every event reaches this node's readers at once,
// as with the local notifier, and the other nodes' readers through the storage's link (PostgreSQL NOTIFY). Events
// carry positions, never payloads, so they only wake readers, which then read the database: a lost one costs
// latency (until the reader's own periodic re-read), never a message.
export function createClusterNotifier (local: Notifier, link: ClusterLink): Notifier {
  link.listen((payload) => {
    // Anything that can connect to the database can NOTIFY on the channel, and a node of another version may speak
    // differently: only well-formed events get through, and none can end this node's readers for it.
    const event = parseEvent(payload)
    if (event !== undefined) local.publish(event)
  }, () => {
    // Events may have been missed while the link was down: every reader and the webhook dispatcher read again.
    local.publish(WAKE_ALL)
  })
  return {
    publish (event) {
      local.publish(event)
      // Shutting down is this node's business alone.
      if (event.kind !== 'shutdown') link.publish(JSON.stringify(compact(event)))
    },
    subscribe: local.subscribe,
    connectedAgents: local.connectedAgents
  }
}

// A broadcast from no one: wakes every reader of every agent, and the webhook dispatcher.
const WAKE_ALL: BusEvent = { kind: 'message', seq: 0, senderId: -1, recipientIds: null, webhooks: true }

// A notification holds about 8000 bytes. A message to so many recipients that their ids would not fit wakes every
// reader instead, as a broadcast does: readers that find nothing new simply wait again.
const MAX_RECIPIENT_IDS = 500
function compact (event: BusEvent): BusEvent {
  if (event.kind === 'message' && event.recipientIds !== null && event.recipientIds.length > MAX_RECIPIENT_IDS) {
    return { ...event, recipientIds: null }
  }
  return event
}

const isId = (value: unknown): value is number => Number.isSafeInteger(value)
const isText = (value: unknown): value is string => typeof value === 'string' && value.length <= 1024

// The event a payload carries, when it is one another node may send; undefined otherwise.
export function parseEvent (payload: string): BusEvent | undefined {
  let e: Record<string, unknown>
  try {
    e = JSON.parse(payload) as Record<string, unknown>
  } catch {
    return undefined
  }
  if (e === null || typeof e !== 'object') return undefined
  switch (e.kind) {
    case 'message':
      if (isId(e.seq) && isId(e.senderId) && typeof e.webhooks === 'boolean' &&
        (e.recipientIds === null || (Array.isArray(e.recipientIds) && e.recipientIds.every(isId)))) {
        return { kind: 'message', seq: e.seq, senderId: e.senderId, recipientIds: e.recipientIds as number[] | null, webhooks: e.webhooks }
      }
      return undefined
    case 'receipt':
      if (isId(e.senderId) && isId(e.messageId) && isText(e.agent) && isText(e.readAt)) {
        return { kind: 'receipt', senderId: e.senderId, messageId: e.messageId, agent: e.agent, readAt: e.readAt }
      }
      return undefined
    case 'overdue':
      if (isId(e.senderId) && isId(e.messageId) && isText(e.agent) && isText(e.ackBy)) {
        return { kind: 'overdue', senderId: e.senderId, messageId: e.messageId, agent: e.agent, ackBy: e.ackBy }
      }
      return undefined
    case 'queue':
      return isText(e.queue) ? { kind: 'queue', queue: e.queue } : undefined
    case 'presence':
      if (isText(e.agent) && (e.status === 'online' || e.status === 'offline')) return { kind: 'presence', agent: e.agent, status: e.status }
      return undefined
    // A forged one could only end an agent's readers, which then reconnect, as after a token rotation.
    case 'revoked':
      return isId(e.agentId) ? { kind: 'revoked', agentId: e.agentId } : undefined
    default:
      return undefined // 'shutdown' is a node's own business
  }
}
