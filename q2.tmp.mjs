import SQLite from 'better-sqlite3'
const s = new SQLite('/tmp/perf/m1.db')
const base = 'select d.message_seq from deliveries d join messages m on m.seq = d.message_seq where d.recipient_id = ? and d.read_at is null'
for (const q of [
  base + ' order by d.priority desc, d.message_seq limit 50',
  base + ' and d.message_seq <= ? order by d.priority desc, d.message_seq limit 50',
  base + ' and +d.message_seq <= ? order by d.priority desc, d.message_seq limit 50',
  base + ' and d.message_seq > ? and d.message_seq <= ? order by d.message_seq limit 50',
]) {
  const n = (q.match(/\?/g) || []).length
  const args = [5, 2000000, 0].slice(0, n); if (n === 3) { args[1] = 0; args[2] = 2000000 }
  console.log(q.slice(base.length)); console.log(s.prepare('explain query plan ' + q).all(...args).map((r) => '  ' + r.detail).join('\n'))
  const st = s.prepare(q); const t0 = performance.now(); for (let i = 0; i < 20; i++) st.all(...args); console.log('  ', ((performance.now() - t0) / 20).toFixed(3), 'ms')
}
