import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyPluginAsync, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { bodyErrors, transportErrors } from '../schemas/common.js'

// The answers every route can give whatever it does (408, 429, 503), and those of a route with a body (413, 415),
// declared once here so that generated clients type them and no route can forget them. A route's own description of
// the same status wins. A route without `security` is public, and says so (security: []).
function declareCommonAnswers (route: RouteOptions): void {
  const schema = route.schema as { hide?: boolean, body?: unknown, security?: unknown, response?: Record<string, unknown> } | undefined
  if (schema === undefined || schema.hide === true || schema.response === undefined) return
  // /health is never rate limited (plugins/limits.ts), so it cannot answer 429.
  const { 429: limited, ...always } = transportErrors
  schema.response = { ...always, ...(route.url !== '/health' && { 429: limited }), ...(schema.body !== undefined && bodyErrors), ...schema.response }
  schema.security ??= []
}

// The document as served to Swagger UI: its first server is the bus the page was loaded from, so "Try it out" calls
// this bus whatever host and port it runs on. openapi.yaml keeps the templated server alone.
function servedFrom (doc: Readonly<Record<string, any>>, request: FastifyRequest): Record<string, any> {
  return { ...doc, servers: [{ url: `${request.protocol}://${request.host}`, description: 'This bus' }, ...(doc.servers ?? [])] }
}

// The OpenAPI document is generated from the route schemas; shared schemas become named components because
// each reference resolves to its own $id.
const docs: FastifyPluginAsync = async (app) => {
  app.addHook('onRoute', declareCommonAnswers)
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'agent-bus',
        // Fixed, not read from package.json, so openapi.yaml changes only when the API does.
        version: '1.0.0',
        description: 'A message bus for AI agents: register, send direct or broadcast messages, read and acknowledge an inbox, see who is online.',
        license: { name: 'MIT', identifier: 'MIT' },
        contact: { name: 'agent-bus maintainers' }
      },
      // A generated client needs an absolute base URL; by default the bus listens on 127.0.0.1:8091.
      servers: [{
        url: '{scheme}://{host}:{port}',
        description: 'A bus you run (npm start)',
        variables: {
          scheme: { default: 'http', enum: ['http', 'https'], description: 'https behind a TLS-terminating proxy.' },
          host: { default: '127.0.0.1', description: 'HOST the bus listens on, or its public name.' },
          port: { default: '8091', description: 'PORT the bus listens on.' }
        }
      }],
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
            description: 'Signed as the Standard Webhooks specification says (standardwebhooks.com): verify with the ' +
              '`standardwebhooks` package or one of its ports, using the `webhook_secret` (`whsec_…`) answered when the webhook ' +
              'was set. Retried with exponential backoff until a 2xx, for up to BUS_WEBHOOK_MAX_AGE_S. At least once: ' +
              'deduplicate on `webhook-id`, which is the message id.',
            // The receiver authenticates the bus by the signature, not by a token the bus sends.
            security: [],
            parameters: [
              { name: 'webhook-id', in: 'header', required: true, description: 'The message id: the same on every retry.', schema: { type: 'string' } },
              { name: 'webhook-timestamp', in: 'header', required: true, description: 'Unix seconds when this attempt was signed. Reject old ones to stop replays.', schema: { type: 'string', pattern: '^\\d+$' } },
              {
                name: 'webhook-signature',
                in: 'header',
                required: true,
                description: '`v1,<base64 HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<raw body>">`, keyed with the base64-decoded part of the secret after `whsec_`.',
                schema: { type: 'string', pattern: '^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$' }
              },
              {
                name: 'X-Bus-Signature',
                in: 'header',
                required: false,
                deprecated: true,
                description: 'The bus\'s former scheme, kept for existing receivers: t=<unix seconds>,v1=<hex HMAC-SHA256 keyed with the whole secret over "<t>.<raw body>">.',
                schema: { type: 'string', pattern: '^t=\\d+,v1=[0-9a-f]{64}$' }
              }
            ],
            requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/Message' } } } },
            responses: {
              '2XX': { description: 'Delivered: the bus records delivered_at and stops.' },
              '4XX': { description: 'Refused (a bad signature, say): the bus retries, as for any answer other than a 2xx.' },
              default: { description: 'Anything else, or no answer within BUS_WEBHOOK_TIMEOUT_MS: the bus retries.' }
            }
          }
        }
      },
      tags: [
        { name: 'agents', description: 'Registration, tokens and presence.' },
        { name: 'messages', description: 'Sending, inboxes, receipts, threads and history.' },
        { name: 'topics', description: 'Publish/subscribe: a message published to a topic reaches every subscriber.' },
        { name: 'queues', description: 'Work queues: each message to one consumer at a time, with leases, redelivery and dead letters.' },
        { name: 'system', description: 'Health and statistics.' }
      ]
    },
    hideUntagged: true,
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) }
  })
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    // The token pasted under "Authorize" survives a reload of the page.
    uiConfig: { persistAuthorization: true, tryItOutEnabled: true, displayRequestDuration: true },
    transformSpecification: servedFrom
  })
  app.get('/openapi.json', { schema: { hide: true } }, async (request) => servedFrom(app.swagger(), request))
}

export default fp(docs, { name: 'swagger', fastify: '5.x' })
