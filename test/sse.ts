import { EventSource } from 'eventsource'

export interface Received { type: string, id: string, data: any }

// A real SSE client (the eventsource package) that records what it receives; auth and Last-Event-ID go in headers.
export function openStream (url: string, token: string, { lastEventId, kinds = ['message'] }: { lastEventId?: string, kinds?: string[] } = {}) {
  const events: Received[] = []
  const waiters: Array<() => void> = []
  const es = new EventSource(url, {
    fetch: (input, init) => fetch(input, {
      ...init,
      headers: { ...init?.headers, authorization: `Bearer ${token}`, ...(lastEventId !== undefined && { 'last-event-id': lastEventId }) }
    })
  })
  for (const kind of kinds) {
    es.addEventListener(kind, (e) => {
      events.push({ type: kind, id: e.lastEventId, data: JSON.parse(e.data) })
      for (const wake of waiters.splice(0)) wake()
    })
  }
  const opened = new Promise<void>((resolve, reject) => {
    es.addEventListener('open', () => resolve())
    es.addEventListener('error', (e) => reject(new Error(`stream failed: ${String(e.message)} ${String(e.code)}`)))
  })
  // Resolves once `count` events arrived, or rejects after timeoutMs: generous, since the bound only keeps a broken
  // build from hanging (a test whose point is how soon an event comes passes its own, shorter bound).
  async function until (count: number, timeoutMs = 30_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs
    while (events.length < count) {
      if (Date.now() > deadline) throw new Error(`got ${events.length} of ${count} events`)
      await new Promise<void>((resolve) => { waiters.push(resolve); setTimeout(resolve, 50) })
    }
    return events
  }
  return { es, events, opened, until, close: () => es.close() }
}
