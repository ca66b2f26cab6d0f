// The receiving side of the push benchmark, in a process of its own as agents are: it opens one stream per token
// and notes when each message event arrives. Started by bench/run.ts with fork(): it gets { base, tokens }, answers
// 'ready' once every stream is open, and on 'done' answers the arrivals as [message id, ms] pairs.
import { Agent, request } from 'node:http'
import { monotonicMs as now } from './proc.js'

process.once('message', async ({ base, tokens }: { base: string, tokens: string[] }) => {
  const agent = new Agent({ keepAlive: true, maxSockets: tokens.length })
  const arrived: Array<[number, number]> = []
  await Promise.all(tokens.map((token) => new Promise<void>((resolve, reject) => {
    const req = request(`${base}/stream`, { agent, headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, (res) => {
      let buffer = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        const at = now()
        buffer += chunk
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const data = /^data: (.*)$/m.exec(event)
          if (data) arrived.push([JSON.parse(data[1]).id, at])
        }
      })
      resolve()
    })
    req.on('error', reject)
    req.end()
  })))
  process.send?.('ready')
  process.once('message', () => {
    process.send?.(arrived, () => {
      agent.destroy()
      process.exit(0)
    })
  })
})
