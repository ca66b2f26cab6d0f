import { Type, type Static, type TLiteral } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

// A choice among fixed words. Its error lists them (TypeBox itself only says "expected union value").
const OneOf = <const T extends string[]>(values: T, options: { default: T[number], description: string }) =>
  Type.Union(values.map((v) => Type.Literal(v)) as { [K in keyof T]: TLiteral<T[K]> }, options)

// One schema for the whole configuration. Keys are the environment variable names, so the schema, the README table
// and the process environment all speak the same words; Value.Convert turns the strings into numbers and booleans.
export const ConfigSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'Address to listen on.' }),
  PORT: Type.Integer({ default: 8091, minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one.' }),
  BUS_DB: Type.String({ default: './data/bus.db', minLength: 1, description: 'SQLite file (its folder is created), or :memory:.' }),
  BUS_ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 16, secret: true, description: 'Admin bearer token (16 characters or more); when set, registering an agent needs it.' })),
  BUS_OPEN_REGISTRATION: Type.Boolean({ default: false, description: 'Allow open registration on a non-loopback HOST.' }),
  BUS_OFFLINE_AFTER_S: Type.Integer({ default: 300, minimum: 1, description: 'Seconds of silence after which an agent is offline.' }),
  BUS_ARCHIVE_AFTER_S: Type.Integer({ default: 604800, minimum: 1, description: 'Age in seconds after which fully read messages are archived.' }),
  BUS_ARCHIVE_INTERVAL_S: Type.Integer({ default: 3600, minimum: 0, description: 'Seconds between archiver runs; 0 disables the loop.' }),
  BUS_MAX_MESSAGE_BYTES: Type.Integer({ default: 65536, minimum: 1, maximum: 16 * 1024 * 1024, description: 'Largest message body in bytes (UTF-8).' }),
  BUS_STREAM_STALL_S: Type.Integer({ default: 30, minimum: 1, description: 'A stream reader that takes no event for this long is cut off (it resumes with Last-Event-ID).' }),
  BUS_WEBHOOK_RETRY_BASE_MS: Type.Integer({ default: 1000, minimum: 1, description: 'First webhook retry delay; it doubles per attempt, with jitter.' }),
  BUS_WEBHOOK_MAX_AGE_S: Type.Integer({ default: 86400, minimum: 1, description: 'Webhook retries stop this long after the message was sent.' }),
  BUS_WEBHOOK_TIMEOUT_MS: Type.Integer({ default: 5000, minimum: 1, description: 'Each webhook attempt is cut off after this long.' }),
  BUS_WEBHOOK_ALLOW: Type.Optional(Type.String({ description: 'Comma-separated hosts and CIDRs webhooks may target; unset allows any http(s) URL.' })),
  BUS_RATE_LIMIT_PER_MIN: Type.Integer({ default: 0, minimum: 0, description: 'Requests a minute per agent; 0 = off.' }),
  BUS_RATE_LIMIT_REGISTRATIONS_PER_MIN: Type.Integer({ default: 0, minimum: 0, description: 'Registrations a minute per client address; 0 = off.' }),
  BUS_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ default: 1000, minimum: 0, description: 'Shed load (503 + Retry-After) once the event loop lags this much; 0 = off.' }),
  BUS_REQUEST_TIMEOUT_MS: Type.Integer({ default: 30000, minimum: 100, description: 'A request must arrive whole within this time (slow clients are cut off).' }),
  BUS_SYNC: OneOf(['full', 'normal'], { default: 'full', description: 'SQLite synchronous mode: full fsyncs every commit before answering; normal may lose the last commits on power loss.' }),
  LOG_LEVEL: OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info', description: 'pino log level.' })
}, { additionalProperties: false })

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/

// Parse the environment (or any string map) into a Config, failing with a message that names the variable.
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const picked: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    if (env[key] !== undefined && env[key] !== '') picked[key] = env[key]
  }
  const value = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, picked))
  const error = Value.Errors(ConfigSchema, value).First()
  if (error) {
    const name = error.path.replace(/^\//, '')
    const schema = error.schema as { anyOf?: Array<{ const: unknown }>, secret?: boolean }
    const problem = schema.anyOf !== undefined ? `must be one of ${schema.anyOf.map((s) => s.const).join(', ')}` : error.message.toLowerCase()
    // A secret is never printed, not even a wrong one: the message may end up in a log or a CI transcript.
    const got = schema.secret === true ? '' : ` (got ${JSON.stringify(env[name])})`
    throw new ConfigError(`invalid configuration: ${name} ${problem}${got}`)
  }
  const config = value as Config
  assertSafe(config)
  return config
}

// Without an admin token anyone who reaches the port can register agents; that is fine on loopback only.
export function assertSafe (config: Config): void {
  if (config.BUS_ADMIN_TOKEN === undefined && !config.BUS_OPEN_REGISTRATION && !LOOPBACK.test(config.HOST)) {
    throw new ConfigError(`refusing to listen on ${config.HOST} with open registration: set BUS_ADMIN_TOKEN, or BUS_OPEN_REGISTRATION=true to accept it`)
  }
}
