import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { agentOf } from '../plugins/auth.js'
import { authErrors, errorResponse, ref } from '../schemas/common.js'
import {
  Claimed, ClaimBody, DeadLetterPage, DeadQuery, Extended, ExtendBody, LeaseIds, Queue, QueueAcked, QueueCreate, QueueList, QueueParams, Released,
  ReleaseBody, Requeued, RequeueBody
} from '../schemas/queue.js'
import { untilGone } from './wait.js'

const security = [{ bearer: [] }]
const tags = ['queues']
const notFound = { 404: errorResponse('No such queue, or (for ids) a message that is not in it.') }
const conflict = {
  409: errorResponse('An id is not leased to the caller now: leased to another agent (named), its lease expired (it may be with another agent), ' +
    'or it is available, acked or dead. Nothing was changed.')
}

// Work queues: competing consumers with leases, redelivery and dead letters. Enqueueing is POST /send with `queue`.
const queues: FastifyPluginAsyncTypebox = async (app) => {
  const { bus } = app

  app.post('/queues', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'createQueue',
      tags,
      summary: 'Create a work queue',
      description: 'Any agent may put messages on a queue (POST /send with `queue`) and claim them. A claimed message is leased to its ' +
        'claimer for `lease_s`; unacked when the lease ends (or released), it is available again, and after `max_deliveries` such ' +
        'deliveries it becomes a dead letter.',
      security,
      body: ref(QueueCreate),
      response: { 201: ref(Queue, 'Created.'), ...authErrors, 409: errorResponse('A queue of that name exists.') }
    }
  }, async (request, reply) => {
    const queue = await bus.createQueue(agentOf(request), request.body)
    reply.code(201)
    return queue
  })

  app.get('/queues', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'listQueues',
      tags,
      summary: 'Every work queue, with how many messages are available, leased and dead',
      description: 'Sorted by name. The counts are of this moment: a lease that has passed counts as ended (available, or dead once the message has had its max_deliveries).',
      security,
      response: { 200: ref(QueueList, 'The queues, by name.'), ...authErrors }
    }
  }, async (request) => bus.listQueues(agentOf(request)))

  app.post('/queues/:name/claim', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'claimQueue',
      tags,
      summary: 'Lease available messages of a queue to the caller',
      description: 'Up to `limit` messages, most urgent and then oldest first, each leased to the caller until its `lease_expires_at`. ' +
        'No two claimers ever hold the same message. With `wait_s`, an empty claim is held until work arrives or the time is up. ' +
        'Finish each with /ack, give it back with /release, or buy time with /extend.',
      security,
      params: QueueParams,
      body: ref(ClaimBody),
      response: { 200: ref(Claimed, 'The leased messages; none when nothing is available.'), ...authErrors, ...notFound }
    }
  }, async (request, reply) => {
    const { limit, wait_s: waitS = 0, lease_s: leaseS } = request.body
    const me = agentOf(request)
    if (waitS === 0) return bus.claim(me, request.params.name, { limit, leaseS })
    return untilGone(reply, (signal) => bus.claim(me, request.params.name, { limit, leaseS, waitMs: waitS * 1000 }, signal))
  })

  app.post('/queues/:name/ack', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'ackQueue',
      tags,
      summary: 'Finish leased messages: they leave the queue',
      description: 'Every id must be leased to the caller, its lease running; otherwise nothing changes (409). Acking again what the caller ' +
        'acked already changes nothing. The sender sees the ack in GET /messages/{id}.',
      security,
      params: QueueParams,
      body: ref(LeaseIds),
      response: { 200: ref(QueueAcked, 'Acked.'), ...authErrors, ...notFound, ...conflict }
    }
  }, async (request) => bus.ackQueue(agentOf(request), request.params.name, request.body.ids))

  app.post('/queues/:name/release', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'releaseQueue',
      tags,
      summary: 'Give leased messages back unfinished',
      description: 'Available again to any claimer (after `delay_s`), or a dead letter once the message has had `max_deliveries` deliveries.',
      security,
      params: QueueParams,
      body: ref(ReleaseBody),
      response: { 200: ref(Released, 'Released.'), ...authErrors, ...notFound, ...conflict }
    }
  }, async (request) => bus.release(agentOf(request), request.params.name, request.body.ids, request.body.delay_s))

  app.post('/queues/:name/extend', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'extendQueue',
      tags,
      summary: 'Extend leases: they now end lease_s from now',
      description: 'For work that takes longer than its lease. Every id must be leased to the caller, its lease still running; otherwise nothing changes (409).',
      security,
      params: QueueParams,
      body: ref(ExtendBody),
      response: { 200: ref(Extended, 'Extended.'), ...authErrors, ...notFound, ...conflict }
    }
  }, async (request) => bus.extend(agentOf(request), request.params.name, request.body.ids, request.body.lease_s))

  app.get('/queues/:name/dead', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'listDeadLetters',
      tags,
      summary: 'The dead letters of a queue, oldest first',
      description: 'Messages that had max_deliveries deliveries end without an ack. They stay here until requeued.',
      security,
      params: QueueParams,
      querystring: DeadQuery,
      response: { 200: ref(DeadLetterPage, 'A page of dead letters.'), ...authErrors, ...notFound }
    }
  }, async (request) => bus.listDead(agentOf(request), request.params.name, request.query))

  app.post('/queues/:name/dead/requeue', {
    onRequest: app.requireAgent,
    schema: {
      operationId: 'requeueDeadLetters',
      tags,
      summary: 'Put dead letters back in the queue with a fresh delivery count',
      description: 'The ids given, or every dead letter of the queue when `ids` is left out.',
      security,
      params: QueueParams,
      body: ref(RequeueBody),
      response: { 200: ref(Requeued, 'Requeued.'), ...authErrors, ...notFound }
    }
  }, async (request) => bus.requeue(agentOf(request), request.params.name, request.body.ids))
}

export default queues
