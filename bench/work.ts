// The client side of the topic and work-queue benchmarks (bench/run.ts, `--only work`): subscribing agents, filling
// a queue, and consumers that claim and ack as an agent would, each over HTTP from the bench process.
import { setTimeout as sleep } from 'node:timers/promises'

const json = { 'content-type': 'application/json' }

async function call (base: string, token: string, method: string, path: string, body?: unknown): Promise<{ status: number, json: any }> {
  const res = await fetch(`${base}${path}`, {
    // No content type without a body: Fastify refuses an empty JSON body.
    method, headers: { ...(body === undefined ? {} : json), authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text) }
}

async function must (what: string, pending: Promise<{ status: number, json: any }>): Promise<any> {
  const { status, json } = await pending
  if (status >= 300) throw new Error(`${what}: ${status} ${JSON.stringify(json)}`)
  return json
}

// A topic created by the first agent, and every agent subscribed to it (the first one too), 50 requests at a time.
export async function subscribeAll (base: string, tokens: string[], topic: string): Promise<void> {
  await must('create topic', call(base, tokens[0], 'POST', '/topics', { name: topic }))
  for (let i = 0; i < tokens.length; i += 50) {
    await Promise.all(tokens.slice(i, i + 50).map((token) => must('subscribe', call(base, token, 'PUT', `/topics/${topic}/subscription`))))
  }
}

export async function createQueue (base: string, token: string, name: string): Promise<void> {
  // A lease long enough that none ends while the bench runs: every delivery is a first one.
  await must('create queue', call(base, token, 'POST', '/queues', { name, lease_s: 300, max_deliveries: 5 }))
}

// `count` messages put on the queue by `concurrency` loops, each sending as its 201s come back; the senders are
// taken in turn from `tokens`.
export async function fillQueue (base: string, tokens: string[], queue: string, count: number, body: string, concurrency = 64) {
  let next = 0
  let errors = 0
  const began = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const i = next++
      const { status } = await call(base, tokens[i % tokens.length], 'POST', '/send', { queue, body })
      if (status !== 201) errors++
    }
  }))
  const seconds = (performance.now() - began) / 1000
  return { messages: count, seconds, perS: count / seconds, errors }
}

export interface Consumed {
  claims: number // claim requests answered with work
  emptyClaims: number // claim requests that waited wait_s and got nothing
  acks: number // ack requests
  messages: number // messages acked
  errors: number // claims or acks answered with an error (a 409 on an ack: a lease that changed)
  ackedAt: Map<number, { ms: number, latency: number }> // by message id: when acked (performance.now()), ms from created_at
  lastAck: number // performance.now() of the last ack
}

// Consumer loops, one per token: claim up to `limit` (waiting up to `waitS` for work), ack what came, again, until
// `done` says so. End-to-end latency is from the message's created_at (the bus's clock) to the ack's answer here (this
// machine's clock, the same one).
export async function consume (base: string, tokens: string[], queue: string, done: (c: Consumed) => boolean, limit = 10, waitS = 1): Promise<Consumed> {
  const out: Consumed = { claims: 0, emptyClaims: 0, acks: 0, messages: 0, errors: 0, ackedAt: new Map(), lastAck: 0 }
  await Promise.all(tokens.map(async (token) => {
    while (!done(out)) {
      const claim = await call(base, token, 'POST', `/queues/${queue}/claim`, { limit, wait_s: waitS })
      if (claim.status !== 200) {
        out.errors++
        await sleep(10)
        continue
      }
      const claimed = claim.json.messages as Array<{ message: { id: number, created_at: string } }>
      if (claimed.length === 0) {
        out.emptyClaims++
        continue
      }
      out.claims++
      const ack = await call(base, token, 'POST', `/queues/${queue}/ack`, { ids: claimed.map((c) => c.message.id) })
      const at = performance.now()
      const wall = Date.now()
      out.acks++
      if (ack.status !== 200) {
        out.errors++
        continue
      }
      out.lastAck = at
      for (const { message } of claimed) {
        out.messages++
        out.ackedAt.set(message.id, { ms: at, latency: wall - Date.parse(message.created_at) })
      }
    }
  }))
  return out
}

const percentile = (sorted: number[], p: number): number => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

function latencies (values: number[]): { p50: number, p99: number } {
  const sorted = values.sort((a, b) => a - b)
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) }
}

// A queue filled beforehand with `count` messages, drained by one consumer loop per token: the rates over the drain
// (from the first claim to the last ack), and each message's latency, most of which is its wait in the backlog.
export async function drain (base: string, tokens: string[], queue: string, count: number, timeoutS: number) {
  const began = performance.now()
  const deadline = began + timeoutS * 1000
  const c = await consume(base, tokens, queue, (c) => c.messages >= count || performance.now() > deadline)
  const seconds = ((c.lastAck || performance.now()) - began) / 1000
  return {
    consumers: tokens.length, messages: c.messages, missing: count - c.messages, seconds,
    claimsPerS: c.claims / seconds, acksPerS: c.acks / seconds, messagesPerS: c.messages / seconds,
    perClaim: c.claims === 0 ? 0 : c.messages / c.claims, emptyClaims: c.emptyClaims, errors: c.errors,
    latency: latencies([...c.ackedAt.values()].map((a) => a.latency))
  }
}

// Enqueueing and draining at once: `rate` messages a second put on the (empty) queue for `seconds` by an open loop
// (each send due at an even pace, whatever the answers do), while one consumer loop per consumer token claims and
// acks. The latency of each message from its created_at to its ack, on a queue that keeps up; then the consumers run
// until every message sent is acked, or `graceS` more seconds.
export async function paced (base: string, producers: string[], consumers: string[], queue: string, rate: number, seconds: number,
  body: string, graceS = 10) {
  const sent = new Set<number>()
  let sendErrors = 0
  let producing = true
  let graceUntil = Infinity
  const consumed = consume(base, consumers, queue, (c) => (!producing && [...sent].every((id) => c.ackedAt.has(id))) || performance.now() > graceUntil)
  const inFlight: Array<Promise<void>> = []
  const began = performance.now()
  for (let k = 0; performance.now() - began < seconds * 1000;) {
    const due = Math.floor((performance.now() - began) * rate / 1000)
    for (; k < due; k++) {
      const token = producers[k % producers.length]
      inFlight.push(call(base, token, 'POST', '/send', { queue, body }).then(({ status, json }) => {
        if (status === 201) sent.add(json.id as number)
        else sendErrors++
      }, () => { sendErrors++ }))
    }
    await sleep(1)
  }
  await Promise.all(inFlight)
  producing = false
  graceUntil = performance.now() + graceS * 1000
  const c = await consumed
  const mine = [...sent].flatMap((id) => c.ackedAt.get(id)?.latency ?? [])
  return {
    rate, seconds, sent: sent.size, acked: mine.length, lost: sent.size - mine.length, sendErrors, errors: c.errors,
    perClaim: c.claims === 0 ? 0 : c.messages / c.claims, emptyClaims: c.emptyClaims, latency: latencies(mine)
  }
}
