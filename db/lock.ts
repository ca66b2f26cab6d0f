import { createHash } from 'node:crypto'
import { realpathSync } from 'node:fs'
import { createServer, type Server } from 'node:net'

export class DatabaseInUse extends Error {
  override name = 'DatabaseInUse'
}

// One bus process per database file: a second one would store messages its peer's live readers never hear of.
// The lock is a Linux abstract-namespace socket named after the file's real path: the kernel releases it when the
// process dies, even by SIGKILL, so there is never a stale lock to clean up.
export async function lockDatabase (path: string): Promise<() => Promise<void>> {
  const name = `\0agent-bus:${createHash('sha256').update(realpathSync(path)).digest('hex')}`
  const server: Server = createServer((socket) => socket.destroy())
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE'
      ? new DatabaseInUse(`${path} is already served by another agent-bus process; stop it first, or point BUS_DB at another file`)
      : err))
    server.listen({ path: name }, resolve)
  })
  server.unref()
  return async () => { await new Promise<void>((resolve) => server.close(() => resolve())) }
}
