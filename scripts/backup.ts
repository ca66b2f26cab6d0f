import { existsSync, renameSync, rmSync, statSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import SQLite from 'better-sqlite3'
import { ConfigError, loadConfig } from '../config.js'
import { isPostgresUrl } from '../db/dialects/postgres.js'

// A consistent online copy of the bus's database, taken with SQLite's backup API while the bus keeps serving:
// npm run backup -- [--force] <file>. The source is BUS_DB (as for npm start).

// Mistakes an operator can fix get one line on stderr, not a stack trace (as in server.ts).
function fail (message: string): never {
  process.stderr.write(`agent-bus backup: ${message}\n`)
  process.exit(1)
}

const args = process.argv.slice(2)
const force = args.includes('--force')
const files = args.filter((arg) => arg !== '--force')
if (files.length !== 1 || files[0].startsWith('-')) {
  process.stderr.write('usage: npm run backup -- [--force] <file>   (--force overwrites an existing <file>)\n')
  process.exit(2)
}
const target = files[0]
const folder = dirname(target)
if (!existsSync(folder) || !statSync(folder).isDirectory()) fail(`folder ${folder} does not exist: create it first`)
// A backup usually lands beside older ones: overwriting one must be asked for.
if (existsSync(target) && !force) fail(`${target} already exists: add --force to overwrite it`)

let source: string
try {
  source = loadConfig().BUS_DB
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  fail(err.message)
}
if (isPostgresUrl(source)) fail('BUS_DB is a PostgreSQL database: back it up with pg_dump (see the README)')
if (source === ':memory:' || !existsSync(source)) fail(`no database at ${source}`)

// The copy is written beside the target and renamed into place once complete, so a failed backup (disk full, a
// permission) leaves any earlier file at the target as it was, and no one ever sees a half-written copy there.
const partial = join(folder, `.${basename(target)}.${process.pid}.partial`)
const db = new SQLite(source, { readonly: true, fileMustExist: true })
db.pragma('busy_timeout = 5000')
let pages = 0
try {
  await db.backup(partial, { progress: ({ totalPages }) => { pages = totalPages; return 1000 } })
  // A -wal left beside an overwritten database belongs to that database: SQLite would replay it into the copy.
  rmSync(`${target}-wal`, { force: true })
  rmSync(`${target}-shm`, { force: true })
  renameSync(partial, target)
} catch (err) {
  rmSync(partial, { force: true })
  fail(`cannot write ${target}: ${(err as Error).message}`)
} finally {
  db.close()
}
process.stdout.write(`backed up ${source} to ${target} (${pages} pages)\n`)
