import { Type, type Static } from '@sinclair/typebox'
import { AgentName, Cursor, NullableTimestamp, Priority, QueueName, ref, StringEnum, Timestamp, TopicName } from './common.js'

export const MessageId = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'A message id; ids grow in the order messages are stored.' })

export const MessageCreate = Type.Object({
  to: Type.Optional(Type.Union([
    ref(AgentName),
    Type.Array(ref(AgentName), { minItems: 1, maxItems: 1000, uniqueItems: true })
  ], { description: 'One recipient or a list of them. Omit it (and `topic` and `queue`) to broadcast to every other registered agent.' })),
  topic: Type.Optional(ref(TopicName, 'Publish to this topic instead: every subscriber but the sender gets it. Not with `to` or `queue`.')),
  queue: Type.Optional(ref(QueueName, 'Put it on this work queue instead: it goes to no inbox, and one consumer at a time claims it. Not with `to` or `topic`.')),
  ack_within_s: Type.Optional(Type.Integer({
    minimum: 1, maximum: 30 * 86400,
    description: 'Each recipient must acknowledge it within this many seconds, or it becomes overdue: the sender gets an `overdue` event (stream with ' +
      '`receipts=true`, webhook). Direct messages (`to`) only.'
  })),
  body: Type.String({ description: 'The message text. It may be empty when `data` carries the payload; a message with neither is refused (400). ' +
    'Body, subject and data together are at most BUS_MAX_MESSAGE_BYTES bytes (413 above).' }),
  subject: Type.Optional(Type.String({ maxLength: 256 })),
  priority: Type.Optional(ref(Priority)),
  reply_to: Type.Optional({ ...MessageId, description: 'A message the sender sent or received; the reply joins its thread.' }),
  data: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Structured payload, any JSON object (nested at most 32 levels).' }))
}, {
  $id: 'MessageCreate',
  additionalProperties: false,
  examples: [{ to: 'bob', subject: 'review', body: 'Can you review PR 12?', priority: 'high' }]
})
export type MessageCreate = Static<typeof MessageCreate>

export const MessageSent = Type.Object({
  id: MessageId,
  thread_id: MessageId,
  from: ref(AgentName),
  to: Type.Array(ref(AgentName), { description: 'The explicit recipients; empty for a broadcast.' }),
  broadcast: Type.Boolean(),
  topic: Type.Union([ref(TopicName), Type.Null()], { description: 'The topic it was published to.' }),
  queue: Type.Union([ref(QueueName), Type.Null()], { description: 'The work queue it was put on.' }),
  recipients: Type.Integer({ description: 'How many inboxes the message was delivered to (0 for a queue message).' }),
  priority: ref(Priority),
  created_at: ref(Timestamp)
}, { $id: 'MessageSent' })
export type MessageSent = Static<typeof MessageSent>

export const Receipt = Type.Object({
  agent: ref(AgentName),
  delivered_at: NullableTimestamp('First handed to the agent: by its stream, its webhook, or an inbox read.'),
  read_at: NullableTimestamp('When the agent acknowledged it.'),
  ack_by: NullableTimestamp('Its ack deadline, for a message sent with `ack_within_s`.'),
  overdue: Type.Boolean({ description: 'The agent missed the ack deadline (an ack after it still records the read).' })
}, { $id: 'Receipt' })

export const QueueStatus = Type.Object({
  queue: ref(QueueName),
  state: StringEnum(['available', 'delayed', 'leased', 'acked', 'dead'], {
    description: 'available: waiting for a claim; delayed: released with a delay; leased: claimed, lease running; acked: done; dead: a dead letter.'
  }),
  delivery_count: Type.Integer({ description: 'How many times it was claimed (since it was last requeued from the dead letters).' }),
  claimed_by: Type.Union([ref(AgentName), Type.Null()], { description: 'Who claimed it last.' }),
  lease_expires_at: NullableTimestamp('While leased: when the lease ends.'),
  acked_by: Type.Union([ref(AgentName), Type.Null()]),
  acked_at: NullableTimestamp('When it was acked.'),
  dead_at: NullableTimestamp('When it became a dead letter.')
}, { $id: 'QueueStatus', description: 'Where a queue message stands, shown to its sender.' })

export const Message = Type.Object({
  id: MessageId,
  from: ref(AgentName),
  to: Type.Array(ref(AgentName), { description: 'The explicit recipients; empty for a broadcast.' }),
  broadcast: Type.Boolean(),
  topic: Type.Union([ref(TopicName), Type.Null()], { description: 'The topic it was published to; null for other messages.' }),
  queue: Type.Union([ref(QueueName), Type.Null()], { description: 'The work queue it was put on; null for other messages.' }),
  subject: Type.Union([Type.String(), Type.Null()]),
  body: Type.String(),
  data: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  priority: ref(Priority),
  reply_to: Type.Union([MessageId, Type.Null()]),
  thread_id: MessageId,
  created_at: ref(Timestamp),
  delivered_at: NullableTimestamp('When the caller first received it (stream, webhook or inbox read); null if the caller sent it.'),
  read_at: NullableTimestamp('When the caller acknowledged it; null if unread or if the caller sent it.'),
  ack_by: NullableTimestamp('The caller must acknowledge it by then (the sender set `ack_within_s`); null without a deadline.'),
  archived: Type.Boolean({ description: 'Moved to the archive: read by all and older than BUS_ARCHIVE_AFTER_S.' }),
  receipts: Type.Optional(Type.Array(ref(Receipt), { description: 'Read receipts, shown to the sender only.' })),
  queue_status: Type.Optional(ref(QueueStatus, 'For a queue message, shown to its sender: who claimed it, how often, acked or dead.'))
}, { $id: 'Message' })
export type Message = Static<typeof Message>

export const MessagePage = Type.Object({
  messages: Type.Array(ref(Message)),
  next_cursor: Type.Union([ref(Cursor), Type.Null()], { description: 'Pass as cursor for the next page; null at the end.' })
}, { $id: 'MessagePage' })

export const Thread = Type.Object({
  thread_id: MessageId,
  messages: Type.Array(ref(Message))
}, { $id: 'Thread' })

const limit = (max: number) => Type.Integer({ minimum: 1, maximum: max, default: 50, description: `Page size, at most ${max}.` })

export const InboxQuery = Type.Object({
  unread: Type.Optional(Type.Boolean({ description: 'Only messages not yet acknowledged.' })),
  priority: Type.Optional(ref(Priority)),
  limit: Type.Optional(limit(500)),
  cursor: Type.Optional(ref(Cursor)),
  wait: Type.Optional(Type.Integer({ minimum: 0, maximum: 60, description: 'Long-poll: seconds to hold an empty answer until a message arrives.' }))
}, { additionalProperties: false })

export const HistoryQuery = Type.Object({
  since: Type.Optional(ref(Timestamp)),
  until: Type.Optional(ref(Timestamp)),
  with: Type.Optional(ref(AgentName)),
  thread: Type.Optional(MessageId),
  topic: Type.Optional(ref(TopicName, 'Only messages of this topic.')),
  limit: Type.Optional(limit(500)),
  cursor: Type.Optional(ref(Cursor))
}, { additionalProperties: false })

export const AckBody = Type.Object({
  ids: Type.Array(MessageId, { minItems: 1, maxItems: 1000, description: 'Ids of messages in the caller\'s inbox.' })
}, { $id: 'AckBody', additionalProperties: false, examples: [{ ids: [1] }] })

export const AckResult = Type.Object({
  acked: Type.Integer({ description: 'Newly marked read.' }),
  already_read: Type.Integer({ description: 'Were read before.' }),
  not_found: Type.Array(MessageId, { description: 'Not in the caller\'s inbox.' })
}, { $id: 'AckResult' })

export const MessageParams = Type.Object({ id: { ...MessageId, examples: [1] } })

// The events of GET /stream. `message` events carry a Message and an id to resume from; these two are signals of
// the moment, not stored events, so they carry no id and are not replayed: after a reconnect, GET /messages/{id}
// shows the receipts of a message and GET /agents who is online.
export const ReceiptEvent = Type.Object({
  message_id: MessageId,
  agent: ref(AgentName),
  read_at: ref(Timestamp)
}, { $id: 'ReceiptEvent', description: 'The data of a `receipt` event: a recipient acknowledged a message the caller sent.' })

export const PresenceEvent = Type.Object({
  agent: ref(AgentName),
  status: StringEnum(['online', 'offline'])
}, { $id: 'PresenceEvent', description: 'The data of a `presence` event: another agent came online or went offline.' })

export const OverdueEvent = Type.Object({
  message_id: MessageId,
  agent: ref(AgentName),
  ack_by: ref(Timestamp)
}, { $id: 'OverdueEvent', description: 'The data of an `overdue` event: a recipient did not acknowledge, by its deadline, a message the caller sent with `ack_within_s`.' })
