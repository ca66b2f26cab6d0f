import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { agentOf } from '../plugins/auth.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'
import { Subscription, Topic, TopicCreate, TopicList, TopicParams } from '../schemas/topic.js'

const security = [{ bearer: [] }]
const tags = ['topics']

// Publish/subscribe. Publishing is POST /send with `topic`.
const topics: FastifyPluginAsyncTypebox = async (app) => {
  const { bus } = app

  app.post('/topics', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'createTopic',
      tags,
      summary: 'Create a topic',
      description: 'Any agent may create a topic and publish to it (POST /send with `topic`). Creating one does not subscribe its creator.',
      security,
      body: ref(TopicCreate),
      response: { 201: ref(Topic, 'Created.'), ...authErrors, 409: errorResponse('A topic of that name exists.') }
    }
  }, async (request, reply) => {
    const topic = await bus.createTopic(agentOf(request), request.body)
    reply.code(201)
    return topic
  })

  app.get('/topics', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'listTopics',
      tags,
      summary: 'Every topic, with its subscriber count and whether the caller is subscribed',
      description: 'Sorted by name. `subscribers` counts registered agents only.',
      security,
      response: { 200: ref(TopicList, 'The topics, by name.'), ...authErrors }
    }
  }, async (request) => bus.listTopics(agentOf(request)))

  app.put('/topics/:name/subscription', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'subscribeTopic',
      tags,
      summary: 'Subscribe the caller to a topic',
      description: 'Idempotent. The caller gets every message published to the topic from now on (not the ones before), by every ' +
        'channel its direct messages take: inbox, stream, long-poll, webhook.',
      security,
      params: TopicParams,
      response: { 200: ref(Subscription, 'Subscribed.'), ...authErrors, 404: errorResponse('No such topic.') }
    }
  }, async (request) => bus.subscribe(agentOf(request), request.params.name))

  app.delete('/topics/:name/subscription', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'unsubscribeTopic',
      tags,
      summary: 'Unsubscribe the caller from a topic',
      description: 'Idempotent. Messages published while the caller was subscribed stay in its inbox.',
      security,
      params: TopicParams,
      response: { 200: ref(Subscription, 'Not subscribed.'), ...authErrors, 404: errorResponse('No such topic.') }
    }
  }, async (request) => bus.unsubscribe(agentOf(request), request.params.name))
}

export default topics
