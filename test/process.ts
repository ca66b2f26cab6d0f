import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'

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

// Resident memory of a process, from /proc, in bytes.
export function rssBytes (pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(kb?.[1] ?? 0) * 1024
}
