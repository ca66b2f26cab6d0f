import { Type, type Static } from '@sinclair/typebox'
import { AgentName, Cursor, NullableTimestamp, Priority, ref, StringEnum, Timestamp } from './common.js'

const MessageId = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'A message id; ids grow in the order messages are stored.' })

export const MessageCreate = Type.Object({
  to: Type.Optional(Type.Union([
    ref(AgentName),
    Type.Array(ref(AgentName), { minItems: 1, maxItems: 1000, uniqueItems: true })
  ], { description: 'One recipient or a list of them. Omit it to broadcast to every other registered agent.' })),
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
  recipients: Type.Integer({ description: 'How many inboxes the message was delivered to.' }),
  priority: ref(Priority),
  created_at: ref(Timestamp)
}, { $id: 'MessageSent' })
export type MessageSent = Static<typeof MessageSent>

export const Receipt = Type.Object({
  agent: ref(AgentName),
  delivered_at: NullableTimestamp('First handed to the agent: by its stream, its webhook, or an inbox read.'),
  read_at: NullableTimestamp('When the agent acknowledged it.')
}, { $id: 'Receipt' })

export const Message = Type.Object({
  id: MessageId,
  from: ref(AgentName),
  to: Type.Array(ref(AgentName), { description: 'The explicit recipients; empty for a broadcast.' }),
  broadcast: Type.Boolean(),
  subject: Type.Union([Type.String(), Type.Null()]),
  body: Type.String(),
  data: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  priority: ref(Priority),
  reply_to: Type.Union([MessageId, Type.Null()]),
  thread_id: MessageId,
  created_at: ref(Timestamp),
  delivered_at: NullableTimestamp('When the caller first received it (stream, webhook or inbox read); null if the caller sent it.'),
  read_at: NullableTimestamp('When the caller acknowledged it; null if unread or if the caller sent it.'),
  archived: Type.Boolean({ description: 'Moved to the archive: read by all and older than BUS_ARCHIVE_AFTER_S.' }),
  receipts: Type.Optional(Type.Array(ref(Receipt), { description: 'Read receipts, shown to the sender only.' }))
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
