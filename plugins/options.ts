import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

// OPTIONS on any path of the API answers which methods it takes (RFC 9110 §9.3.7), instead of a 404 without Allow.
// Routes are collected as they are added, so register this before them.
const options: FastifyPluginAsync = async (app) => {
  const routes: Array<{ pattern: RegExp, methods: Set<string> }> = []
  const byUrl = new Map<string, Set<string>>()
  app.addHook('onRoute', (route) => {
    if (route.url === '*' || route.url.includes('*')) return
    let methods = byUrl.get(route.url)
    if (methods === undefined) {
      byUrl.set(route.url, methods = new Set(['OPTIONS']))
      // /agents/:name becomes ^/agents/[^/]+$
      const source = route.url.split('/').map((part) => part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('/')
      routes.push({ pattern: new RegExp(`^${source}/?$`), methods })
    }
    for (const method of [route.method].flat()) methods.add(method)
  })
  app.options('*', { schema: { hide: true } }, async (request, reply) => {
    const path = request.url.split('?')[0]
    const route = routes.find((r) => r.pattern.test(path))
    if (route === undefined) {
      return reply.code(404).send({ statusCode: 404, code: 'BUS_ROUTE_NOT_FOUND', error: 'Not Found', message: `no route ${path}` })
    }
    return reply.code(204).header('allow', [...route.methods].sort().join(', ')).send()
  })
}

export default fp(options, { name: 'options', fastify: '5.x' })
