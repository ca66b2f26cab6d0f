import type { ClusterLink } from '../db/storage.js'
import type { BusEvent, Notifier } from './events.js'

// A notifier for a bus that shares its database with other nodes: every event reaches this node's readers at once,
// as with the local notifier, and the other nodes' readers through the storage's link (PostgreSQL NOTIFY). Events
// carry positions, never payloads, so they only wake readers, which then read the database: a lost one costs
// latency (until the reader's own periodic re-read), never a message.
export function createClusterNotifier (local: Notifier, link: ClusterLink): Notifier {
  link.listen((payload) => {
    let event: BusEvent
    try {
      event = JSON.parse(payload) as BusEvent
    } catch {
      return // not ours, or cut short: nothing to wake
    }
    local.publish(event)
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
