import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { Validator } from '@seriousme/openapi-schema-validator'
import t from 'tap'
import { parse } from 'yaml'
import { generateOpenapi, TYPES_PATH, YAML_PATH } from '../scripts/openapi.js'

const generated = await generateOpenapi()

t.test('openapi.yaml and the client types are what the app generates (run npm run openapi)', async (t) => {
  t.equal(generated.yaml, await readFile(YAML_PATH, 'utf8'), 'openapi.yaml is stale: run npm run openapi')
  t.equal(generated.types, await readFile(TYPES_PATH, 'utf8'), `${TYPES_PATH} is stale: run npm run openapi`)
})

t.test('the document has named components and no anonymous ones', async (t) => {
  t.notMatch(generated.yaml, /def-\d+/)
  const doc = parse(generated.yaml)
  t.strictSame(Object.keys(doc.components.schemas).sort(), [
    'AckBody', 'AckResult', 'Agent', 'AgentCreate', 'AgentList', 'AgentName', 'AgentSelf', 'AgentToken', 'AgentUpdate', 'AgentWithToken',
    'ClaimBody', 'Claimed', 'ClaimedMessage', 'Cursor', 'DeadLetter', 'DeadLetterPage', 'ErrorResponse', 'ExtendBody', 'Extended',
    'Health', 'Heartbeat', 'LeaseIds', 'Message', 'MessageCreate', 'MessagePage', 'MessageSent', 'OverdueEvent', 'PresenceEvent', 'Priority',
    'Queue', 'QueueAcked', 'QueueCreate', 'QueueList', 'QueueName', 'QueueStatus', 'Receipt', 'ReceiptEvent', 'ReleaseBody', 'Released',
    'RequeueBody', 'Requeued', 'Stats', 'Subscription', 'Thread', 'Timestamp', 'Topic', 'TopicCreate', 'TopicList', 'TopicName'
  ])
})

t.test('every operation has an operationId, a summary, tags, and error answers; authenticated ones declare bearer', async (t) => {
  const doc = parse(generated.yaml)
  const ids = new Set<string>()
  let operations = 0
  for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      const where = `${method.toUpperCase()} ${path}`
      t.match(op, { operationId: /^[a-z][A-Za-z]+$/, summary: String, tags: [String] }, where)
      ids.add(op.operationId)
      operations++
      t.ok(Object.keys(op.responses).some((s) => s >= '400'), `${where} documents its errors`)
      if (path !== '/health') {
        t.ok(op.security.some((s: Record<string, unknown>) => 'bearer' in s), `${where} declares bearer auth`)
        t.ok('401' in op.responses, `${where} documents 401`)
      } else {
        t.strictSame(op.security, [], 'the health check is declared public')
      }
      // The answers the bus gives whatever the route, with Retry-After where a client should wait.
      for (const status of ['408', '503', ...(path === '/health' ? [] : ['429'])]) t.ok(status in op.responses, `${where} documents ${status}`)
      for (const status of ['429', '503']) if (status in op.responses) t.ok(op.responses[status].headers?.['retry-after'], `${where} ${status} has Retry-After`)
      if (op.requestBody !== undefined) for (const status of ['413', '415']) t.ok(status in op.responses, `${where} documents ${status}`)
    }
  }
  t.equal(operations, 28)
  t.equal(ids.size, operations, 'operationIds are unique')
})

t.test('the document passes an OpenAPI validator', async (t) => {
  const result = await new Validator().validate(parse(generated.yaml))
  t.ok(result.valid, JSON.stringify(result.errors))
})

t.test('the document has an absolute server, a license and a contact, so generated clients work out of the box', async (t) => {
  const doc = parse(generated.yaml)
  t.match(doc.servers, [{ url: '{scheme}://{host}:{port}', variables: { host: { default: '127.0.0.1' }, port: { default: '8091' } } }])
  t.match(doc.info, { license: { name: String }, contact: { name: String } })
  t.strictSame(doc.webhooks.message.post.security, [], 'the webhook is authenticated by its signature, not a token')
})

// Both linters judge the committed document; each exits non-zero on an error. Their own telemetry stays off.
const run = promisify(execFile)
const lint = async (command: string, args: string[]) => run(`node_modules/.bin/${command}`, args, {
  env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_UPDATE_NOTIFIER: '1' }
}).then(({ stdout, stderr }) => ({ code: 0, out: stdout + stderr }), (err: { code: number, stdout: string, stderr: string }) => ({ code: err.code, out: err.stdout + err.stderr }))

t.test('Redocly lint passes with no errors or warnings', async (t) => {
  const { code, out } = await lint('redocly', ['lint', '--format=json', YAML_PATH])
  t.equal(code, 0, out)
  const report = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1))
  t.strictSame(report.totals, { errors: 0, warnings: 0, ignored: 0 }, JSON.stringify(report.problems))
})

t.test('Spectral with the spectral:oas ruleset passes with no errors or warnings', async (t) => {
  const { code, out } = await lint('spectral', ['lint', '--ruleset', '.spectral.yaml', '--fail-severity=warn', YAML_PATH])
  t.equal(code, 0, out)
})
