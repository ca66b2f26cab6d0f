import { Type, type Static, type TSchema } from '@sinclair/typebox'

// A reference to a shared schema by its $id, typed as the schema itself (TypeBox 0.34 docs), so the OpenAPI
// document gets a named component instead of an inlined copy.
// The description, where given, becomes the response's description in the document.
export const ref = <T extends TSchema & { $id?: string }>(schema: T, description?: string) =>
  Type.Unsafe<Static<T>>(Type.Ref(schema.$id as string, description === undefined ? {} : { description }))

// A string enum as one `enum` keyword, which generated clients turn into a union type.
export const StringEnum = <const T extends string[]>(values: T, options: { $id?: string, description?: string, default?: T[number] } = {}) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: values, ...options })

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer({ description: 'The HTTP status code.' }),
  code: Type.Optional(Type.String({ description: 'A stable machine-readable code, such as BUS_AGENT_NOT_FOUND.' })),
  error: Type.String({ description: 'The HTTP status text.' }),
  message: Type.String({ description: 'What was wrong, naming the field or resource.' })
}, { $id: 'ErrorResponse', description: 'Every error answer has this shape.' })

export const Timestamp = Type.String({ $id: 'Timestamp', format: 'date-time', description: 'An ISO-8601 UTC time.' })

// A Timestamp or null, as one type list rather than a union: the serializer picks a union's branch by validating
// the value against each (a date-time regex per field), which took over half the time of serializing an inbox page.
export const NullableTimestamp = (description: string) =>
  Type.Unsafe<string | null>({ type: ['string', 'null'], format: 'date-time', description: `An ISO-8601 UTC time, or null. ${description}` })

export const Priority = StringEnum(['normal', 'high', 'urgent'], {
  $id: 'Priority', description: 'Inbox order: urgent first, then high, then normal.'
})
export type Priority = Static<typeof Priority>

export const AgentName = Type.String({
  $id: 'AgentName', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', description: 'An agent name: lower-case letters, digits, dot, underscore, dash; at most 64.'
})

// Topics and queues are named as agents are (each has its own names).
export const TopicName = Type.String({ $id: 'TopicName', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', description: 'A topic name: lower-case letters, digits, dot, underscore, dash; at most 64.' })
export const QueueName = Type.String({ $id: 'QueueName', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', description: 'A work queue name: lower-case letters, digits, dot, underscore, dash; at most 64.' })

export const Cursor = Type.String({ $id: 'Cursor', minLength: 1, maxLength: 64, description: 'An opaque position to continue a listing from.' })

// An error answer. `retry` adds the Retry-After header that 429 and 503 answers carry.
export const errorResponse = (description: string, { retry = false } = {}) => retry
  ? { ...ref(ErrorResponse, description), headers: { 'retry-after': { type: 'integer', minimum: 0, description: 'Seconds to wait before retrying.' } } }
  : ref(ErrorResponse, description)

// The error answers every authenticated route can give.
export const authErrors = {
  400: errorResponse('Invalid request; the message names the field.'),
  401: errorResponse('Missing, invalid or revoked token.'),
  403: errorResponse('The token is valid but may not do this.')
}

// What any route may answer whatever it does: the request came too slowly, too many requests, or the bus is
// overloaded, shutting down or cannot write. plugins/swagger.ts adds them to every route that does not say otherwise.
export const transportErrors = {
  408: errorResponse('The request did not arrive whole within BUS_REQUEST_TIMEOUT_MS.'),
  429: errorResponse('Over the rate limit (BUS_RATE_LIMIT_PER_MIN, or registrations per address); retry after Retry-After seconds.', { retry: true }),
  503: errorResponse('Overloaded, shutting down, or the database cannot be written; nothing was stored. Retry after Retry-After seconds.', { retry: true })
}

// What a route with a request body may also answer.
export const bodyErrors = {
  413: errorResponse('The request body is larger than the bus accepts.'),
  415: errorResponse('The body is not JSON: send it with Content-Type: application/json.')
}
