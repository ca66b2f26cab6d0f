import { linkSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { lockDatabase } from '../../db/dialects/sqlite-lock.js'

t.test('the lock is on the file: another name of it is refused, and a release lets the next one in', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'sub', 'bus.db')
  const lock = await lockDatabase(path)
  linkSync(path, join(dir, 'link.db'))
  await t.rejects(lockDatabase(join(dir, 'link.db')), { name: 'DatabaseInUse', message: /link\.db is already served by another agent-bus process/ })
  await t.rejects(lockDatabase(path), { name: 'DatabaseInUse' }, 'and so is the same path')
  lock.release()
  const next = await lockDatabase(join(dir, 'link.db'))
  next.release()
})

t.test('fileProblem says when the path stops naming the locked file, and clears when it names it again', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'bus.db')
  const lock = await lockDatabase(path)
  t.teardown(() => lock.release())
  t.equal(lock.fileProblem(), undefined)

  renameSync(path, `${path}.away`)
  t.equal(lock.fileProblem(), 'the database file was moved or deleted while the bus ran')
  writeFileSync(path, '')
  t.equal(lock.fileProblem(), 'the database file was replaced by another file while the bus ran')
  rmSync(path)
  renameSync(`${path}.away`, path)
  t.equal(lock.fileProblem(), undefined, 'back in place')

  rmSync(path)
  t.equal(lock.fileProblem(), 'the database file was deleted while the bus ran')
})
