import { readFile } from 'node:fs/promises'
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
    'AckBody', 'AckResult', 'Agent', 'AgentCreate', 'AgentList', 'AgentName', 'AgentSelf', 'AgentToken', 'AgentUpdate', 'AgentWithToken', 'Cursor', 'ErrorResponse',
    'Health', 'Heartbeat', 'Message', 'MessageCreate', 'MessagePage', 'MessageSent', 'Priority', 'Receipt', 'Stats', 'Thread', 'Timestamp'
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
      }
    }
  }
  t.equal(operations, 16)
  t.equal(ids.size, operations, 'operationIds are unique')
})

t.test('the document passes an OpenAPI validator', async (t) => {
  const result = await new Validator().validate(parse(generated.yaml))
  t.ok(result.valid, JSON.stringify(result.errors))
})
