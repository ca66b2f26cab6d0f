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
      // What the bus POSTs to an agent's webhook_url (set at registration or with PATCH /agents/{name}).
      webhooks: {
        message: {
          post: {
            operationId: 'receiveMessage',
            summary: 'A new message for the agent, pushed to its webhook',
            description: 'Retried with exponential backoff until a 2xx, for up to BUS_WEBHOOK_MAX_AGE_S. At least once: deduplicate on X-Bus-Message-Id.',
            parameters: [
              {
                name: 'X-Bus-Signature',
                in: 'header',
                required: true,
                description: 't=<unix seconds>,v1=<hex HMAC-SHA256 with the webhook secret over "<t>.<raw body>">. Reject old t to stop replays.',
                schema: { type: 'string', pattern: '^t=\\d+,v1=[0-9a-f]{64}$' }
              },
              { name: 'X-Bus-Message-Id', in: 'header', required: true, description: 'The message id.', schema: { type: 'string' } }
            ],
            requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/Message' } } } },
            responses: {
              '2XX': { description: 'Delivered: the bus records delivered_at and stops.' },
              default: { description: 'Anything else, or no answer within BUS_WEBHOOK_TIMEOUT_MS: the bus retries.' }
            }
          }
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
