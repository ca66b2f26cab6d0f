import { createHmac } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { Webhook } from 'standardwebhooks'

// `at` and `closedAt` are ticks of one counter shared by every receiver, so tests compare the order of events
// across receivers without reading a clock.
export interface Hit { headers: IncomingMessage['headers'], body: string, status: number, at: number, closedAt?: number }

let ticks = 0
export const tick = (): number => ++ticks

// What the receiver does with an attempt: answer with a status, never answer ('hang'), or send a 200's headers
// and part of its body, then stall ('hang-body').
export type Answer = number | 'hang' | 'hang-body'

// A real HTTP receiver on localhost whose answers the test chooses, attempt by attempt.
export async function receiver (answer: (attempt: number) => Answer) {
  const hits: Hit[] = []
  const server: Server = createServer(async (req, res) => {
    let body = ''
    for await (const chunk of req) body += chunk
    const status = answer(hits.length + 1)
    const hit: Hit = { headers: req.headers, body, status: typeof status === 'number' ? status : 0, at: tick() }
    hits.push(hit)
    // When the connection ends: after the answer, or when the bus gives up on a stalled one.
    res.once('close', () => { hit.closedAt = tick() })
    if (status === 'hang-body') res.writeHead(200, { 'content-length': '100' }).write('{"partial":')
    else if (status !== 'hang') res.writeHead(status).end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}/hook`, port, hits, close: () => { server.closeAllConnections(); server.close() } }
}

// What a receiver does, with the Standard Webhooks library: check webhook-signature over webhook-id,
// webhook-timestamp and the raw body, and refuse a timestamp more than five minutes away (replays).
export function verify (secret: string, hit: Pick<Hit, 'headers' | 'body'>): boolean {
  try {
    new Webhook(secret).verify(hit.body, hit.headers as Record<string, string>)
    return true
  } catch {
    return false
  }
}

// The deprecated X-Bus-Signature: HMAC-SHA256 keyed with the secret string over `${t}.${raw body}`, as hex.
export function verifyLegacy (secret: string, hit: Pick<Hit, 'headers' | 'body'>): boolean {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(hit.headers['x-bus-signature']))
  if (!match) return false
  const expected = createHmac('sha256', secret).update(`${match[1]}.${hit.body}`).digest('hex')
  return expected === match[2] && Math.abs(Date.now() / 1000 - Number(match[1])) < 300
}
