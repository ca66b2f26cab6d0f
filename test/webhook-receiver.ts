import { createHmac } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'

export interface Hit { headers: IncomingMessage['headers'], body: string, status: number }

// A real HTTP receiver on localhost whose answers the test chooses, attempt by attempt.
export async function receiver (answer: (attempt: number) => number | 'hang') {
  const hits: Hit[] = []
  const server: Server = createServer(async (req, res) => {
    let body = ''
    for await (const chunk of req) body += chunk
    const status = answer(hits.length + 1)
    hits.push({ headers: req.headers, body, status: status === 'hang' ? 0 : status })
    if (status !== 'hang') res.writeHead(status).end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}/hook`, hits, close: () => { server.closeAllConnections(); server.close() } }
}

// What a receiver does: recompute the HMAC over `${t}.${raw body}` and compare.
export function verify (secret: string, hit: Hit): boolean {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(hit.headers['x-bus-signature']))
  if (!match) return false
  const expected = createHmac('sha256', secret).update(`${match[1]}.${hit.body}`).digest('hex')
  return expected === match[2] && Math.abs(Date.now() / 1000 - Number(match[1])) < 300
}
