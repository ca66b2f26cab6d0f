import { Type, type Static } from '@sinclair/typebox'
import { AgentName, Cursor, NullableTimestamp, QueueName, ref, Timestamp } from './common.js'
import { Message, MessageId } from './message.js'

export const QueueCreate = Type.Object({
  name: ref(QueueName),
  description: Type.Optional(Type.String({ maxLength: 1024 })),
  lease_s: Type.Optional(Type.Integer({ minimum: 1, maximum: 43200, default: 60, description: 'How long a claim holds a message, unless the claim says otherwise.' })),
  max_deliveries: Type.Optional(Type.Integer({
    minimum: 1, maximum: 1000, default: 5, description: 'Deliveries (claims) that may end without an ack, by lease expiry or release, before the message becomes a dead letter.'
  }))
}, { $id: 'QueueCreate', additionalProperties: false, examples: [{ name: 'reviews', lease_s: 120, max_deliveries: 3 }] })
export type QueueCreate = Static<typeof QueueCreate>

export const Queue = Type.Object({
  name: ref(QueueName),
  description: Type.Union([Type.String(), Type.Null()]),
  lease_s: Type.Integer(),
  max_deliveries: Type.Integer(),
  created_by: ref(AgentName),
  created_at: ref(Timestamp),
  available: Type.Integer({ description: 'Messages a claim would get now.' }),
  delayed: Type.Integer({ description: 'Released with a delay that has not passed yet.' }),
  leased: Type.Integer({ description: 'Claimed, with a lease still running.' }),
  dead: Type.Integer({ description: 'Dead letters.' })
}, { $id: 'Queue' })

export const QueueList = Type.Object({ queues: Type.Array(ref(Queue)) }, { $id: 'QueueList' })

export const QueueParams = Type.Object({ name: { ...ref(QueueName), examples: ['reviews'] } })

export const ClaimBody = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 1, description: 'At most this many messages.' })),
  wait_s: Type.Optional(Type.Integer({ minimum: 0, maximum: 60, default: 0, description: 'Long-poll: hold an empty answer this many seconds until work arrives.' })),
  lease_s: Type.Optional(Type.Integer({ minimum: 1, maximum: 43200, description: 'The lease, instead of the queue\'s lease_s.' }))
}, { $id: 'ClaimBody', additionalProperties: false, examples: [{ limit: 1, wait_s: 30 }] })

export const ClaimedMessage = Type.Object({
  message: ref(Message),
  delivery_count: Type.Integer({ description: 'This claim included: 1 the first time.' }),
  lease_expires_at: ref(Timestamp)
}, { $id: 'ClaimedMessage' })

export const Claimed = Type.Object({ messages: Type.Array(ref(ClaimedMessage), { description: 'Most urgent first, then oldest.' }) }, { $id: 'Claimed' })

const Ids = Type.Array(MessageId, { minItems: 1, maxItems: 100, description: 'Ids of messages of this queue leased to the caller.' })

export const LeaseIds = Type.Object({ ids: Ids }, { $id: 'LeaseIds', additionalProperties: false, examples: [{ ids: [1] }] })
export const ReleaseBody = Type.Object({
  ids: Ids,
  delay_s: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400, default: 0, description: 'Available again only after this many seconds.' }))
}, { $id: 'ReleaseBody', additionalProperties: false, examples: [{ ids: [1], delay_s: 10 }] })
export const ExtendBody = Type.Object({
  ids: Ids,
  lease_s: Type.Integer({ minimum: 1, maximum: 43200, description: 'The leases now end this many seconds from now.' })
}, { $id: 'ExtendBody', additionalProperties: false, examples: [{ ids: [1], lease_s: 120 }] })
export const RequeueBody = Type.Object({
  ids: Type.Optional(Type.Array(MessageId, { minItems: 1, maxItems: 1000, description: 'Dead letters to requeue; all of the queue\'s when left out.' }))
}, { $id: 'RequeueBody', additionalProperties: false, examples: [{}] })

export const QueueAcked = Type.Object({
  acked: Type.Integer({ description: 'Newly acked.' }),
  already_acked: Type.Integer({ description: 'Acked by the caller before.' })
}, { $id: 'QueueAcked' })
export const Released = Type.Object({
  released: Type.Integer({ description: 'Available again (after delay_s).' }),
  dead: Type.Integer({ description: 'Had had their max_deliveries: dead letters now.' })
}, { $id: 'Released' })
export const Extended = Type.Object({
  extended: Type.Integer(),
  lease_expires_at: ref(Timestamp)
}, { $id: 'Extended' })
export const Requeued = Type.Object({
  requeued: Type.Array(MessageId, { description: 'Available again, with a fresh delivery count.' }),
  not_dead: Type.Array(MessageId, { description: 'Ids given that are not dead letters of this queue.' })
}, { $id: 'Requeued' })

export const DeadLetter = Type.Object({
  message: ref(Message),
  delivery_count: Type.Integer(),
  claimed_by: Type.Union([ref(AgentName), Type.Null()], { description: 'Who claimed it last.' }),
  dead_at: NullableTimestamp('When it became a dead letter.')
}, { $id: 'DeadLetter' })
export const DeadLetterPage = Type.Object({
  dead: Type.Array(ref(DeadLetter)),
  next_cursor: Type.Union([ref(Cursor), Type.Null()])
}, { $id: 'DeadLetterPage' })
export const DeadQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
  cursor: Type.Optional(ref(Cursor))
}, { additionalProperties: false })
