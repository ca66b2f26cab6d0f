import type { FastifySchemaValidationError } from 'fastify'
import { AgentName } from './common.js'

// Ajv's words, rephrased where they leave a newcomer guessing.
function explain (e: FastifySchemaValidationError): string {
  const params = e.params as Record<string, unknown>
  if (e.keyword === 'pattern' && params.pattern === AgentName.pattern) {
    return 'must be an agent name: 1 to 64 lower-case letters, digits, dots, underscores or dashes, starting with a letter or digit'
  }
  if (e.keyword === 'minItems') return `must have at least ${String(params.limit)} item${params.limit === 1 ? '' : 's'}`
  if (e.keyword === 'additionalProperties') return `has an unknown field "${String(params.additionalProperty)}"`
  return e.message ?? 'is invalid'
}

const within = (path: string, parent: string): boolean => path === parent || path.startsWith(`${parent}/`)

// Fastify's schemaErrorFormatter, shaped for readers. A value that fits no branch of an anyOf (`to` is a name or a
// list of names) gets one error per branch plus one for the anyOf; the branch whose type fits the value says what
// is wrong, so the type mismatches of the other branches and the anyOf summary are left out.
export function formatValidationErrors (errors: FastifySchemaValidationError[], dataVar: string): Error {
  const unions = errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath)
  const specific = (e: FastifySchemaValidationError): boolean => e.keyword !== 'anyOf' && e.keyword !== 'type'
  const kept = errors.filter((e) => {
    if (e.keyword === 'anyOf') return false
    if (e.keyword !== 'type' || !unions.includes(e.instancePath)) return true
    return !errors.some((o) => specific(o) && within(o.instancePath, e.instancePath))
  })
  const shown = kept.length > 0 ? kept : errors
  return new Error([...new Set(shown.map((e) => `${dataVar}${e.instancePath} ${explain(e)}`))].join(', '))
}
