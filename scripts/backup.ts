import { existsSync } from 'node:fs'
import SQLite from 'better-sqlite3'
import { loadConfig } from '../config.js'

// A consistent online copy of the bus's database, taken with SQLite's backup API while the bus keeps serving:
// npm run backup -- <file>. The source is BUS_DB (as for npm start).
const target = process.argv[2]
if (target === undefined || target.startsWith('-')) {
  process.stderr.write('usage: npm run backup -- <file>\n')
  process.exit(2)
}
const { BUS_DB: source } = loadConfig()
if (source === ':memory:' || !existsSync(source)) {
  process.stderr.write(`agent-bus backup: no database at ${source}\n`)
  process.exit(1)
}
const db = new SQLite(source, { readonly: true, fileMustExist: true })
db.pragma('busy_timeout = 5000')
let pages = 0
await db.backup(target, { progress: ({ totalPages }) => { pages = totalPages; return 1000 } })
db.close()
process.stdout.write(`backed up ${source} to ${target} (${pages} pages)\n`)
