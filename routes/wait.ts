import type { FastifyReply } from 'fastify'

// Runs a read that may wait (a long-poll), with a signal that aborts when the client goes away.
export async function untilGone<T> (reply: FastifyReply, read: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const gone = new AbortController()
  const onClose = (): void => gone.abort()
  reply.raw.once('close', onClose)
  try {
    return await read(gone.signal)
  } finally {
    reply.raw.off('close', onClose)
  }
}
