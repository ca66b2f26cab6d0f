import t from 'tap'
import { prepared } from '../../db/prepared.js'
import { build, register } from '../helper.js'

t.test('a prepared query binds each call\'s arguments, keeps its own constants, and compiles once per shape', async (t) => {
  const app = await build(t)
  for (const name of ['ann', 'bob', 'cid']) await register(app, name)
  let builds = 0
  const named = prepared((db, names: string[], limit: number) => {
    builds++
    // 'zed' is a constant of the query, not an argument: it must stay in place whatever the arguments.
    return db.selectFrom('agents').select('name').where((eb) => eb.or([eb('name', 'in', names), eb('name', '=', 'zed')]))
      .orderBy('name').limit(limit)
  })
  t.strictSame(await named(app.db, ['bob'], 10), [{ name: 'bob' }])
  t.strictSame(await named(app.db, ['cid'], 10), [{ name: 'cid' }], 'another argument, same compiled query')
  t.equal(builds, 1)
  t.strictSame(await named(app.db, ['ann', 'cid', 'bob'], 2), [{ name: 'ann' }, { name: 'bob' }], 'a longer list and another limit')
  t.strictSame(await named(app.db, ['cid', 'ann', 'nobody'], 5), [{ name: 'ann' }, { name: 'cid' }])
  t.equal(builds, 2, 'one build per list length')
  await register(app, 'zed')
  t.strictSame(await named(app.db, ['ann'], 5), [{ name: 'ann' }, { name: 'zed' }], 'the constant is still bound')
})

t.test('an object argument binds field by field, so a row can be inserted and updated with one compiled query', async (t) => {
  const app = await build(t)
  const a = await register(app, 'ann')
  const setProfile = prepared((db, row: { description: string | null, metadata: string }, name: string) =>
    db.updateTable('agents').set(row).where('name', '=', name))
  await setProfile(app.db, { description: 'first', metadata: '{"k":1}' }, 'ann')
  await setProfile(app.db, { description: null, metadata: '{"k":2}' }, 'ann')
  const res = await app.inject({ method: 'GET', url: '/agents/ann', headers: a.auth })
  t.match(res.json(), { description: null, metadata: { k: 2 } })
})
