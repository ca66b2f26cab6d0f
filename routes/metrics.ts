import type { FastifyPluginAsync } from 'fastify'

// Prometheus scrapes this (plugins/metrics.ts says what is in it). For operators, not agents: the admin or metrics
// token, never an agent's (plugins/auth.ts requireOperator); and not in the OpenAPI document, which describes the
// agents' API.
const metrics: FastifyPluginAsync = async (app) => {
  const { registry, refresh } = app.telemetry
  app.get('/metrics', { onRequest: app.requireOperator, schema: { hide: true }, logLevel: 'warn' }, async (_request, reply) => {
    await refresh()
    return reply.type(registry.contentType).send(await registry.metrics())
  })
}

export default metrics
