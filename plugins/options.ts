import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

declare module 'fastify' {
  interface FastifyInstance {
    // The methods a path of the API takes (OPTIONS included), or undefined for a path it does not have.
    allowedMethods: (path: string) => string[] | undefined
  }
}

// OPTIONS on any path of the API answers which methods it takes (RFC 9110 §9.3.7), instead of a 404 without Allow;
// the not-found handler uses the same table to answer 405 to a wrong method on a real path.
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
      routes.push({ pattern: new RegExp(`^${source}$`), methods })
    }
    for (const method of [route.method].flat()) methods.add(method)
  })
  const allowedMethods = (path: string): string[] | undefined => {
    const route = routes.find((r) => r.pattern.test(path))
    return route === undefined ? undefined : [...route.methods].sort()
  }
  app.decorate('allowedMethods', allowedMethods)
  app.options('*', { schema: { hide: true } }, async (request, reply) => {
    const path = request.url.split('?')[0]
    const allowed = allowedMethods(path)
    if (allowed === undefined) {
      return reply.code(404).send({ statusCode: 404, code: 'BUS_ROUTE_NOT_FOUND', error: 'Not Found', message: `no route ${path}` })
    }
    return reply.code(204).header('allow', allowed.join(', ')).send()
  })
}

export default fp(options, { name: 'options', fastify: '5.x' })
