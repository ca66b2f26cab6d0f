import type { FastifyBaseLogger, FastifyInstance } from 'fastify'

// A background loop in the style of @fastify/under-pressure: it starts once the app is ready, schedules the next
// run only after the previous one finished (no overlap), never keeps the process alive, and onClose waits for
// the run in flight before the database closes.
export function startLoop (app: FastifyInstance, intervalMs: number, run: () => Promise<void>, log: FastifyBaseLogger,
  { runAtStart = false } = {}): void {
  if (intervalMs <= 0) return
  let timer: NodeJS.Timeout | undefined
  let inFlight: Promise<void> | undefined
  let closing = false
  const schedule = (): void => {
    if (closing) return
    timer = setTimeout(tick, intervalMs)
    timer.unref()
  }
  const tick = (): void => {
    inFlight = run()
      .catch((err: unknown) => { log.error({ err }, 'background run failed') })
      .finally(() => {
        inFlight = undefined
        schedule()
      })
  }
  app.addHook('onReady', async () => { runAtStart ? tick() : schedule() })
  app.addHook('onClose', async () => {
    closing = true
    clearTimeout(timer)
    await inFlight
  })
}
