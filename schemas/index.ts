import { AgentName, Cursor, ErrorResponse, Priority, Timestamp } from './common.js'
import { Agent, AgentCreate, AgentList, AgentSelf, AgentToken, AgentUpdate, AgentWithToken, Heartbeat } from './agent.js'
import { AckBody, AckResult, Message, MessageCreate, MessagePage, MessageSent, PresenceEvent, Receipt, ReceiptEvent, Thread } from './message.js'
import { Health, Stats } from './stats.js'

// Every schema with an $id, registered once at the root; each becomes a named OpenAPI component.
// Referenced schemas come before the schemas that reference them.
export const schemas = [
  ErrorResponse, Timestamp, Priority, AgentName, Cursor,
  AgentCreate, AgentUpdate, Agent, AgentSelf, AgentWithToken, AgentToken, AgentList, Heartbeat,
  MessageCreate, MessageSent, Receipt, Message, MessagePage, Thread, AckBody, AckResult, ReceiptEvent, PresenceEvent,
  Stats, Health
]
