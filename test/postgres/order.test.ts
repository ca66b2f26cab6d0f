import t, { type Test } from 'tap'
import { createAgent } from '../../db/agents.js'
import { openPostgres } from '../../db/dialects/postgres.js'
import { sendMessage } from '../../db/messages.js'
import type { Storage } from '../../db/storage.js'
import { postgresUrl, testDb } from '../helper.js'

// On PostgreSQL a sequence hands out seq before commit. Two nodes, the lower seq committing later, and a reader in
// between whose position is the highest seq it has seen (a stream's Last-Event-ID, a cursor): the reader must not
// skip the lower one. db/dialects/postgres.ts serialises the batches that store messages with a cluster-wide lock;
// the control case turns it off and shows the skip this test exists to catch.

const pgOnly = { skip: postgresUrl === undefined && 'PostgreSQL only: npm test runs it against a throwaway server' }

async function nodes (t: Test, unordered: boolean): Promise<[Storage, Storage]> {
  const url = await testDb(t)
  const a = await openPostgres({ url, unordered })
  const b = await openPostgres({ url, unordered })
  t.teardown(async () => { await a.close(); await b.close() })
  return [a, b]
}

// waitMs: how long B's commit is given. The bound where B must wait (the lock) is short; where it must commit (the
// control), a busy PostgreSQL may need long.
async function scenario (t: Test, unordered: boolean, waitMs: number) {
  const [a, b] = await nodes(t, unordered)
  const now = new Date().toISOString()
  const sender = await createAgent(a.db, 'sender', {}, 'h1', now)
  const reader = await createAgent(a.db, 'reader', {}, 'h2', now)
  if (typeof sender === 'string' || typeof reader === 'string') throw new Error('registration failed')
  const input = (body: string) => ({ senderId: sender.id, senderName: 'sender', to: ['reader'], body, priority: 'normal' as const, now })

  // Node A stores a message and holds its transaction open; node B then stores another and commits.
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  let stored!: () => void
  const aStored = new Promise<void>((resolve) => { stored = resolve })
  // A's message row only, held before the rest of its send: a full send would also hold the /stats counters' row,
  // which B's send waits for too, and that would order the two by accident, not by design.
  const first = a.write(async (trx) => {
    const { seq } = await trx.insertInto('messages').values({
      sender_id: sender.id, recipients: '["reader"]', subject: null, body: 'first', data: null, priority: 0, reply_to: null,
      thread_id: 0, created_at: now, idempotency_key: null, request_hash: null
    }).returning('seq').executeTakeFirstOrThrow()
    await trx.insertInto('deliveries').values({ message_seq: seq, recipient_id: reader.id, priority: 0, read_at: null, delivered_at: null, webhook_next_at: null }).execute()
    stored()
    await held
    return seq
  }, { ordered: true })
  await aStored
  const second = b.write((trx) => sendMessage(trx, input('second')), { ordered: true })
  // Give B every chance to commit before A does (it cannot, with the lock).
  let timer!: ReturnType<typeof setTimeout>
  const bDone = await Promise.race([second.then(() => true), new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), waitMs) })])
  clearTimeout(timer)

  // The reader in between: it reads what is visible and moves its position to the highest seq it saw.
  const visible = async (after: number) => (await b.db.selectFrom('deliveries').select('message_seq')
    .where('recipient_id', '=', reader.id).where('message_seq', '>', after).orderBy('message_seq').execute()).map((r) => r.message_seq)
  const seen = await visible(0)
  const position = seen.at(-1) ?? 0

  release()
  const [firstId, outcome] = await Promise.all([first, second])
  const ids = [firstId, (outcome as { sent: { id: number } }).sent.id]
  const later = await visible(position)
  return { bDone, ids, seen, later }
}

t.test('with the order lock: a reader between two commits skips nothing', pgOnly, async (t) => {
  const { bDone, ids, seen, later } = await scenario(t, false, 1000)
  t.notOk(bDone, 'node B waited for node A')
  t.strictSame(seen, [], 'the reader saw nothing while A was open')
  t.ok(ids[0] < ids[1], 'A took the lower seq')
  t.strictSame(later, ids, 'after both commits the reader gets both, in order')
})

t.test('control: without it, the lower seq commits later and the reader skips it for ever', pgOnly, async (t) => {
  const { bDone, ids, seen, later } = await scenario(t, true, 30_000)
  t.ok(bDone, 'node B committed while A was open')
  t.ok(ids[0] < ids[1], 'A took the lower seq')
  t.strictSame(seen, [ids[1]], 'the reader saw only the higher seq')
  t.strictSame(later, [], 'reading on from its position it never gets the lower one')
})
