import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { until } from '../helper.js'

// Issue 9: a test run stopped by tap's timeout or a user's kill -9 left `node dist/server.js` processes behind.

// A process that has exited but was not yet reaped (its new parent may be a container's init that never reaps) is
// a zombie: kill(pid, 0) still succeeds, yet it holds no port and no database.
function running (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z'
  } catch {
    return true // no /proc (macOS): kill(pid, 0) is all there is
  }
}

t.test('a server started by startServer stops when the test process that started it is SIGKILLed', async (t) => {
  // The fixture runs under this test's own loaders (tap's TypeScript import), as a test file would.
  const parent = spawn(process.execPath, [...process.execArgv, 'test/fixtures/start-server.ts', join(t.testdir(), 'bus.db')], {
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => parent.kill('SIGKILL'))
  let out = ''
  parent.stdout.on('data', (d) => { out += d })
  const exited = once(parent, 'exit')
  await until('the parent prints its server or exits', () => out.includes('\n') || parent.exitCode !== null, 60_000)
  if (!out.includes('\n')) return t.fail(`the parent exited (${parent.exitCode}) before its server listened`)
  const [pid, url] = out.trim().split(' ')
  const server = Number(pid)
  // If the server outlives the test, stop it here rather than leave the very orphan this test is about.
  t.teardown(() => { if (running(server)) process.kill(server, 'SIGKILL') })
  t.equal((await fetch(`${url}/health`)).status, 200, 'the server serves')

  parent.kill('SIGKILL')
  await exited
  // Generous: a loaded machine may take a while to schedule the shutdown; a leak never ends, so it still fails.
  await until('the server exits', () => !running(server), 60_000)
  t.notOk(running(server), 'the server exited after its parent was killed')
})
