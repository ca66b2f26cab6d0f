import { spawn } from 'node:child_process'

// The real process, the way `npm start` runs it (npm test builds dist/ first).
export function startServer (env: Record<string, string>) {
  const child = spawn(process.execPath, ['dist/server.js'], { env: { ...process.env, PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
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

export { rssBytes } from '../bench/proc.js'
