import t from 'tap'
import { ConfigError, loadConfig } from '../config.js'

t.test('defaults match the documented ones', async (t) => {
  const config = loadConfig({})
  t.strictSame(config, {
    HOST: '127.0.0.1',
    PORT: 8091,
    BUS_DB: './data/bus.db',
    BUS_METRICS: true,
    BUS_OPEN_REGISTRATION: false,
    BUS_OFFLINE_AFTER_S: 300,
    BUS_ARCHIVE_AFTER_S: 604800,
    BUS_ARCHIVE_INTERVAL_S: 3600,
    BUS_MAX_MESSAGE_BYTES: 65536,
    BUS_STREAM_STALL_S: 30,
    BUS_MAX_READERS_PER_AGENT: 8,
    BUS_WEBHOOK_RETRY_BASE_MS: 1000,
    BUS_WEBHOOK_MAX_AGE_S: 86400,
    BUS_WEBHOOK_TIMEOUT_MS: 5000,
    BUS_WEBHOOK_ALLOW_PRIVATE: false,
    BUS_WEBHOOK_PER_RECIPIENT: 4,
    BUS_WEBHOOK_BREAKER_FAILURES: 5,
    BUS_WEBHOOK_BREAKER_COOLDOWN_MS: 30000,
    BUS_RATE_LIMIT_PER_MIN: 0,
    BUS_RATE_LIMIT_REGISTRATIONS_PER_MIN: 0,
    BUS_MAX_EVENT_LOOP_DELAY_MS: 1000,
    BUS_MAX_CONNECTIONS_PER_ADDRESS: 256,
    BUS_FIRST_REQUEST_TIMEOUT_MS: 10000,
    BUS_REQUEST_TIMEOUT_MS: 30000,
    BUS_SYNC: 'full',
    LOG_LEVEL: 'info'
  })
})

t.test('strings from the environment are converted and unknown variables ignored', async (t) => {
  const config = loadConfig({ PORT: '9000', BUS_OPEN_REGISTRATION: 'true', BUS_SYNC: 'normal', PATH: '/bin', BUS_ADMIN_TOKEN: 'a'.repeat(32) })
  t.equal(config.PORT, 9000)
  t.equal(config.BUS_OPEN_REGISTRATION, true)
  t.equal(config.BUS_SYNC, 'normal')
  t.equal(config.BUS_ADMIN_TOKEN, 'a'.repeat(32))
  t.notOk('PATH' in config)
})

t.test('a bad value stops the start with a message naming the variable', async (t) => {
  for (const [name, value] of [['PORT', 'eighty'], ['PORT', '70000'], ['BUS_SYNC', 'sometimes'], ['BUS_OFFLINE_AFTER_S', '0'],
    ['LOG_LEVEL', 'loud'], ['BUS_ADMIN_TOKEN', 'short'], ['BUS_OPEN_REGISTRATION', 'maybe']]) {
    t.throws(() => loadConfig({ [name]: value }), { name: 'ConfigError', message: new RegExp(`^invalid configuration: ${name} `) }, `${name}=${value}`)
  }
})

t.test('open registration on a non-loopback address needs an explicit yes', async (t) => {
  t.throws(() => loadConfig({ HOST: '0.0.0.0' }), ConfigError)
  t.throws(() => loadConfig({ HOST: '0.0.0.0' }), { message: /BUS_ADMIN_TOKEN/ })
  t.equal(loadConfig({ HOST: '0.0.0.0', BUS_OPEN_REGISTRATION: 'true' }).HOST, '0.0.0.0')
  t.equal(loadConfig({ HOST: '0.0.0.0', BUS_ADMIN_TOKEN: 'x'.repeat(20) }).HOST, '0.0.0.0')
  t.equal(loadConfig({ HOST: '::1' }).HOST, '::1')
  t.equal(loadConfig({ HOST: 'localhost' }).HOST, 'localhost')
})

t.test('a word from a fixed list names the allowed ones; a bad secret is never echoed', async (t) => {
  t.throws(() => loadConfig({ BUS_SYNC: 'sometimes' }), { message: 'invalid configuration: BUS_SYNC must be one of full, normal (got "sometimes")' })
  t.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), { message: /LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent/ })
  const secret = 'tooshort-secret'
  const err = (() => { try { loadConfig({ BUS_ADMIN_TOKEN: secret }) } catch (e) { return e as Error } })()
  t.match(err, { name: 'ConfigError', message: /BUS_ADMIN_TOKEN/ })
  t.notMatch(err?.message, secret, 'the rejected token is not in the message')
})
