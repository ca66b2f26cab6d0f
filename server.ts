import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'
import { StorageStartError } from './db/storage.js'

// Mistakes an operator can fix get one line on stderr, not a stack trace.
function fail (err: unknown): never {
  if (!(err instanceof ConfigError) && !(err instanceof StorageStartError)) throw err
  process.stderr.write(`agent-bus: ${err.message}\n`)
  process.exit(1)
}

let config
try {
  config = loadConfig()
} catch (err) {
  fail(err)
}

const app = await buildApp(config, {
  logger: {
    level: config.LOG_LEVEL,
    // Tokens never reach the log, whether in a header or a response field.
    redact: ['req.headers.authorization', 'token', '*.token']
  }
}).catch(fail)

// First SIGINT/SIGTERM: stop accepting, let in-flight requests finish, close the database. A second one aborts.
closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

await app.listen({ host: config.HOST, port: config.PORT })
