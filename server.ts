import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'

let config
try {
  config = loadConfig()
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(`agent-bus: ${err.message}\n`)
  process.exit(1)
}

const app = await buildApp(config, {
  logger: {
    level: config.LOG_LEVEL,
    // Tokens never reach the log, whether in a header or a response field.
    redact: ['req.headers.authorization', 'token', '*.token']
  }
})

// First SIGINT/SIGTERM: stop accepting, let in-flight requests finish, close the database. A second one aborts.
closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
})

await app.listen({ host: config.HOST, port: config.PORT })
