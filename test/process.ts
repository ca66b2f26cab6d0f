import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'

// Stops the server when this process dies, however it dies (see the fixture); startServer gives it stdin as a pipe.
const exitWithParent = new URL('./fixtures/exit-with-parent.mjs', import.meta.url).href

// The real process, the way `npm start` runs it (npm test builds dist/ first).
export function startServer (env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', exitWithParent, 'dist/server.js'], {
    // Load shedding is off unless a test turns it on: on a busy machine it would rightly answer 503 to requests a
    // test means to be served.
    env: { ...process.env, PORT: '0', BUS_MAX_EVENT_LOOP_DELAY_MS: '0', ...env }, stdio: ['pipe', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  const url = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const match = /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(out)
      if (match) resolve(match[1])
    })
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${err}${out}`)))
  })
  url.catch(() => {}) // a test that expects the start to fail awaits the exit instead
  return { child, url, output: () => out, errors: () => err }
}

// A TCP port free at the moment of asking, for a process that must come back on the same one (a restart, nginx).
export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}
