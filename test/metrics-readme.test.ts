import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import t from 'tap'
import { build, engine, register, send } from './helper.js'

// The README's list of metrics is the operator's reference: every agent_bus_ family the bus exposes is in it, and
// every one it lists exists (the PostgreSQL-only ones on PostgreSQL).
interface Family { name: string, type: string, help: string }
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[]

t.test('the README lists exactly the agent_bus_ metrics the bus exposes', async (t) => {
  const app = await build(t)
  const alice = await register(app, 'alice')
  await register(app, 'bob')
  await send(app, alice, { to: 'bob', body: 'hi' })
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  const exposed = new Set(parse(res.body).map((f) => f.name).filter((name) => name.startsWith('agent_bus_')))

  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## Operating the bus'), readme.indexOf('## Reliability and security'))
  const rows = [...section.matchAll(/^\| `(agent_bus_[a-z_]+)` \| (\w+) \|[^\n]*\| ([^\n]*) \|$/gm)]
  const listed = new Map(rows.map(([, name, type, what]) => [name, { type, pgOnly: what.startsWith('PostgreSQL only') }]))
  t.ok(listed.size >= 15, `the table lists ${listed.size} metrics`)

  for (const name of exposed) t.ok(listed.has(name), `${name} is in the README`)
  for (const [name, { pgOnly }] of listed) {
    if (pgOnly && engine !== 'postgresql') t.notOk(exposed.has(name), `${name} is PostgreSQL only`)
    else t.ok(exposed.has(name), `${name}, listed in the README, is exposed`)
  }
  const types = new Map(parse(res.body).map((f) => [f.name, f.type.toLowerCase()]))
  for (const [name, { type }] of listed) if (types.has(name)) t.equal(types.get(name), type, `${name} is a ${type}`)
})
