import createError from '@fastify/error'

// The bus's coded errors. Fastify's error handler turns each into { statusCode, code, error, message }.
export const AgentNotFound = createError('BUS_AGENT_NOT_FOUND', 'agent not found: %s', 404)
export const MessageNotFound = createError('BUS_MESSAGE_NOT_FOUND', 'message not found: %s', 404)
export const ThreadNotFound = createError('BUS_THREAD_NOT_FOUND', 'thread not found: %s', 404)
export const NameTaken = createError('BUS_NAME_TAKEN', 'agent name is taken: %s', 409)
export const Unauthorized = createError('BUS_UNAUTHORIZED', '%s', 401)
export const Forbidden = createError('BUS_FORBIDDEN', '%s', 403)
export const MessageTooLarge = createError('BUS_MESSAGE_TOO_LARGE', 'body is %d bytes, more than the limit of %d', 413)
export const BadCursor = createError('BUS_BAD_CURSOR', 'cursor is not one this listing gave out', 400)
export const Unavailable = createError('BUS_UNAVAILABLE', '%s', 503)
export const BadEventId = createError('BUS_BAD_EVENT_ID', 'Last-Event-ID is not an id this stream gave out: %s', 400)
export const BadWebhook = createError('BUS_BAD_WEBHOOK', 'webhook_url %s', 400)
export const RateLimited = createError('BUS_RATE_LIMITED', 'rate limit of %d requests a minute exceeded; retry in %s', 429)
export const StorageUnavailable = createError('BUS_STORAGE_UNAVAILABLE', 'storage unavailable: %s; nothing was stored, retry later', 503)
export const BadNumber = createError('BUS_BAD_NUMBER', '%s must be a finite number', 400)
