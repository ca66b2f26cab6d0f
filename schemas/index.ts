import { AgentName, Cursor, ErrorResponse, Priority, QueueName, Timestamp, TopicName } from './common.js'
import { Agent, AgentCreate, AgentList, AgentSelf, AgentToken, AgentUpdate, AgentWithToken, Heartbeat } from './agent.js'
import { AckBody, AckResult, Message, MessageCreate, MessagePage, MessageSent, OverdueEvent, PresenceEvent, QueueStatus, Receipt, ReceiptEvent, Thread } from './message.js'
import {
  Claimed, ClaimBody, ClaimedMessage, DeadLetter, DeadLetterPage, Extended, ExtendBody, LeaseIds, Queue, QueueAcked, QueueCreate, QueueList, Released,
  ReleaseBody, Requeued, RequeueBody
} from './queue.js'
import { Subscription, Topic, TopicCreate, TopicList } from './topic.js'
import { Health, Stats } from './stats.js'

// Every schema with an $id, registered once at the root; each becomes a named OpenAPI component.
// Referenced schemas come before the schemas that reference them.
export const schemas = [
  ErrorResponse, Timestamp, Priority, AgentName, TopicName, QueueName, Cursor,
  AgentCreate, AgentUpdate, Agent, AgentSelf, AgentWithToken, AgentToken, AgentList, Heartbeat,
  MessageCreate, MessageSent, Receipt, QueueStatus, Message, MessagePage, Thread, AckBody, AckResult, ReceiptEvent, OverdueEvent, PresenceEvent,
  TopicCreate, Topic, TopicList, Subscription,
  QueueCreate, Queue, QueueList, ClaimBody, ClaimedMessage, Claimed, LeaseIds, ReleaseBody, ExtendBody, RequeueBody, QueueAcked, Released, Extended,
  Requeued, DeadLetter, DeadLetterPage,
  Stats, Health
]
