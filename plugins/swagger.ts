import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

// The OpenAPI document is generated from the route schemas; shared schemas become named components because
// each reference resolves to its own $id.
const docs: FastifyPluginAsync = async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'agent-bus',
        // Fixed, not read from package.json, so openapi.yaml changes only when the API does.
        version: '1.0.0',
        description: 'A message bus for AI agents: register, send direct or broadcast messages, read and acknowledge an inbox, see who is online.'
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'An agent token from POST /agents, or the admin token.' }
        }
      },
      tags: [
        { name: 'agents', description: 'Registration, tokens and presence.' },
        { name: 'messages', description: 'Sending, inboxes, receipts, threads and history.' },
        { name: 'system', description: 'Health and statistics.' }
      ]
    },
    hideUntagged: true,
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) }
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}

export default fp(docs, { name: 'swagger', fastify: '5.x' })
