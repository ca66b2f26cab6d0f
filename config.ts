import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

// A choice among fixed words. Its error lists them (TypeBox itself only says "expected union value").
// (Unsafe only types it: the schema keeps its Union kind, which Value.Convert and Value.Errors understand.)
const OneOf = <const T extends string[]>(values: T, options: { default: T[number], description: string }) =>
  Type.Unsafe<T[number]>(Type.Union(values.map((v) => Type.Literal(v)), options))

// One schema for the whole configuration. Keys are the environment variable names, so the schema, the README table
// and the process environment all speak the same words; Value.Convert turns the strings into numbers and booleans.
export const ConfigSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'Address to listen on.' }),
  PORT: Type.Integer({ default: 8091, minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one.' }),
  BUS_DB: Type.String({ default: './data/bus.db', minLength: 1, description: 'A SQLite file (its folder is created) or :memory:; or a PostgreSQL URL, postgres://user:password@host:5432/dbname (libpq parameters such as ?sslmode= allowed), for several nodes on one database.' }),
  BUS_ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 16, secret: true, description: 'Admin bearer token (16 characters or more); when set, registering an agent needs it.' })),
  BUS_METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16, secret: true, description: 'A bearer token (16 characters or more) for GET /metrics and the dashboard, and nothing else. /metrics and /dashboard are open to anyone on a loopback HOST while neither it nor BUS_ADMIN_TOKEN is set; with either set, they take only those tokens.' })),
  BUS_METRICS: Type.Boolean({ default: true, description: 'Serve Prometheus metrics at GET /metrics (and count what they need); false turns both off.' }),
  BUS_OPEN_REGISTRATION: Type.Boolean({ default: false, description: 'Allow open registration on a non-loopback HOST.' }),
  BUS_ALLOWED_HOSTS: Type.Optional(Type.String({ description: 'Comma-separated host names the bus answers to besides the loopback names (a DNS-rebinding guard); on a non-loopback HOST, setting it turns the check on.' })),
  BUS_OFFLINE_AFTER_S: Type.Integer({ default: 300, minimum: 1, description: 'Seconds of silence after which an agent is offline.' }),
  BUS_ARCHIVE_AFTER_S: Type.Integer({ default: 604800, minimum: 1, description: 'Age in seconds after which fully read messages are archived.' }),
  BUS_ARCHIVE_INTERVAL_S: Type.Integer({ default: 3600, minimum: 0, description: 'Seconds between archiver runs; 0 disables the loop.' }),
  BUS_MAX_MESSAGE_BYTES: Type.Integer({ default: 65536, minimum: 1, maximum: 16 * 1024 * 1024, description: 'Largest message in bytes: body, subject and data together (UTF-8).' }),
  BUS_STREAM_STALL_S: Type.Integer({ default: 30, minimum: 1, description: 'A stream reader that takes no event for this long is cut off (it resumes with Last-Event-ID).' }),
  BUS_MAX_READERS_PER_AGENT: Type.Integer({ default: 8, minimum: 1, maximum: 1000, description: 'Streams and long-polls one agent may hold open at once (per node); opening one more ends its oldest.' }),
  BUS_WEBHOOK_RETRY_BASE_MS: Type.Integer({ default: 1000, minimum: 1, description: 'First webhook retry delay; it doubles per attempt, with jitter.' }),
  BUS_WEBHOOK_MAX_AGE_S: Type.Integer({ default: 86400, minimum: 1, description: 'Webhook retries stop this long after the message was sent.' }),
  BUS_WEBHOOK_TIMEOUT_MS: Type.Integer({ default: 5000, minimum: 1, description: 'Each webhook attempt is cut off after this long.' }),
  BUS_WEBHOOK_ALLOW: Type.Optional(Type.String({ description: 'Comma-separated hosts, addresses and CIDRs webhooks may target, private ones included; unset allows any public address.' })),
  BUS_WEBHOOK_ALLOW_PRIVATE: Type.Boolean({ default: false, description: 'Let webhooks reach loopback, private (10/8, 172.16/12, 192.168/16), unique-local (fc00::/7) and CGNAT (100.64/10) addresses.' }),
  BUS_WEBHOOK_PER_RECIPIENT: Type.Integer({ default: 4, minimum: 1, description: 'Webhook attempts in flight for one agent at most (32 in all).' }),
  BUS_WEBHOOK_BREAKER_FAILURES: Type.Integer({ default: 5, minimum: 1, description: 'Failed webhook attempts in a row after which an agent\'s endpoint gets none for a cool-down.' }),
  BUS_WEBHOOK_BREAKER_COOLDOWN_MS: Type.Integer({ default: 30000, minimum: 1, description: 'First cool-down of a failing webhook endpoint; it doubles while probes fail, up to an hour.' }),
  BUS_RATE_LIMIT_PER_MIN: Type.Integer({ default: 0, minimum: 0, description: 'Requests a minute per agent; 0 = off.' }),
  BUS_RATE_LIMIT_REGISTRATIONS_PER_MIN: Type.Integer({ default: 0, minimum: 0, description: 'Registrations a minute per client address; 0 = off.' }),
  BUS_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ default: 1000, minimum: 0, description: 'Shed load (503 + Retry-After) once the event loop lags this much; 0 = off.' }),
  BUS_MAX_CONNECTIONS: Type.Optional(Type.Integer({ minimum: 1, description: 'Client connections open at once (streams included); further ones are closed as they arrive. Unset = the open-files limit less 128 descriptors kept for the database, its WAL, logs and webhooks, and at most 10000; a value above that limit stops the start.' })),
  BUS_MAX_CONNECTIONS_PER_ADDRESS: Type.Integer({ default: 256, minimum: 0, description: 'Connections one client address (an IPv6 /64) may hold open; 0 = off. Behind a reverse proxy every client shares its address: raise it or set 0.' }),
  BUS_FIRST_REQUEST_TIMEOUT_MS: Type.Integer({ default: 10000, minimum: 100, description: 'A new connection that sends no complete request head within this time is closed.' }),
  BUS_REQUEST_TIMEOUT_MS: Type.Integer({ default: 30000, minimum: 100, description: 'A request must arrive whole within this time (slow clients are cut off).' }),
  BUS_SYNC: OneOf(['full', 'normal'], { default: 'full', description: 'SQLite synchronous mode: full fsyncs every commit before answering; normal may lose the last commits on power loss. On PostgreSQL the server\'s synchronous_commit decides.' }),
  LOG_LEVEL: OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info', description: 'pino log level.' })
}, { additionalProperties: false })

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

// The items of a comma-separated setting (BUS_ALLOWED_HOSTS, BUS_WEBHOOK_ALLOW); none when it is unset.
export const commaList = (value: string | undefined): string[] => (value ?? '').split(',').map((s) => s.trim()).filter(Boolean)

export const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/

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
