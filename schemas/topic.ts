import { Type, type Static } from '@sinclair/typebox'
import { AgentName, ref, Timestamp, TopicName } from './common.js'

export const TopicCreate = Type.Object({
  name: ref(TopicName),
  description: Type.Optional(Type.String({ maxLength: 1024 }))
}, { $id: 'TopicCreate', additionalProperties: false, examples: [{ name: 'reviews', description: 'Pull requests that want a review' }] })
export type TopicCreate = Static<typeof TopicCreate>

export const Topic = Type.Object({
  name: ref(TopicName),
  description: Type.Union([Type.String(), Type.Null()]),
  created_by: ref(AgentName),
  created_at: ref(Timestamp),
  subscribers: Type.Integer({ description: 'Registered agents subscribed to it.' }),
  subscribed: Type.Boolean({ description: 'Whether the caller is subscribed.' })
}, { $id: 'Topic' })

export const TopicList = Type.Object({ topics: Type.Array(ref(Topic)) }, { $id: 'TopicList' })

export const Subscription = Type.Object({
  topic: ref(TopicName),
  subscribed: Type.Boolean({ description: 'Whether the caller is subscribed now.' }),
  changed: Type.Boolean({ description: 'Whether this request changed it (false: it already was so).' })
}, { $id: 'Subscription' })

export const TopicParams = Type.Object({ name: { ...ref(TopicName), examples: ['reviews'] } })
