// `npm test` (after pretest has built and type-checked): the tap suite once on SQLite, then once on PostgreSQL.
//
//   npm test                             both engines, the whole suite
//   npm test -- test/foo.test.ts -g x    the same extra arguments are given to both tap runs
//   BUS_TEST_ENGINES=sqlite npm test     one engine only (sqlite, postgres, or both: sqlite,postgres)
//   BUS_TEST_POSTGRES_URL=postgres://...  use that server instead of starting a throwaway one
//
// PostgreSQL runs when its server binaries are found (scripts/pg-cluster.mjs starts a throwaway cluster, and removes
// it afterwards) or BUS_TEST_POSTGRES_URL is set; otherwise it is skipped with a one-line notice, unless CI=true or
// BUS_TEST_ENGINES names it explicitly, when that is a failure. The PostgreSQL run gets BUS_TEST_ENGINE=postgres and
// BUS_TEST_POSTGRES_URL (the admin URL of the cluster) and leaves out test/sqlite/, which is about SQLite itself. The
// SQLite run gets BUS_TEST_ENGINE=sqlite and no BUS_TEST_POSTGRES_URL. Exits non-zero when either run fails or the
// coverage falls below .taprc's thresholds.
//
// Coverage: one report over both runs, checked against .taprc's thresholds. tap 21 writes each test process's raw V8
// coverage to .tap/coverage/<uuid>.json and wipes that folder when a run starts; `tap report` merges every file in it
// (c8) and checks the thresholds from .taprc, exiting 1 below them. So each run is told not to check
// (--coverage-report=none and thresholds of 0), the SQLite run's files are moved aside while PostgreSQL runs and put
// back afterwards, and a final `tap report` judges the union: code only one engine executes (db/dialects/postgres.ts,
// db/migrations/postgres/, the SQLite-only modules) counts as covered when that engine's run covered it, and neither
// run is failed for code it cannot execute. (--coverage-map cannot do this: it only chooses which files a test file
// instruments within one run.) When only one engine runs (BUS_TEST_ENGINES, or PostgreSQL skipped), the other engine's
// own files are left out of coverage with --coverage-exclude, so the thresholds still apply to what could run. When
// test files are named on the command line the report is printed but not enforced: a subset of the suite never
// reaches suite-wide thresholds (plain `tap test/one.test.ts` always failed on them).
import { spawn } from 'node:child_process'
import { cpSync, existsSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { findPostgresBinDir, startCluster } from './pg-cluster.mjs'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const tapBin = join(root, 'node_modules', '.bin', 'tap')

// Sources that only one engine executes: left out of coverage when the other engine runs alone. Keep in step with db/.
const POSTGRES_ONLY = ['db/dialects/postgres*.ts', 'db/migrations/postgres/**']
const SQLITE_ONLY = ['db/dialects/sqlite*.ts', 'db/migrations/sqlite/**']
// Tests about SQLite itself, not run on PostgreSQL.
const SQLITE_TESTS = join(root, 'test', 'sqlite')
// tap's own default for --exclude, which any --exclude given on the command line replaces.
const TAP_DEFAULT_EXCLUDE = ['**/@(fixture*(s)|dist)/**']

const say = (line) => process.stderr.write(`${line}\n`)
const isCI = /^(1|true|yes)$/i.test(process.env.CI ?? '')

// ---- arguments ----------------------------------------------------------------------------------------------------

// Options about the coverage report go to the final `tap report`, the rest to both tap runs.
const REPORT_OPTION = /^--(coverage-report|statements|branches|functions|lines)(=|$)/
const REPORT_FLAG = new Set(['--show-full-coverage', '--no-show-full-coverage', '--browser', '--no-browser', '--allow-incomplete-coverage'])
const runArgs = []
const reportArgs = []
{
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (REPORT_FLAG.has(a)) reportArgs.push(a)
    else if (REPORT_OPTION.test(a)) {
      reportArgs.push(a)
      if (!a.includes('=') && i + 1 < argv.length) reportArgs.push(argv[++i])
    } else runArgs.push(a)
  }
}
const coverageDisabled = runArgs.includes('--disable-coverage')
// Test files or folders named on the command line (anything else is an option or an option's value).
const isPath = (a) => !a.startsWith('-') && existsSync(resolve(a))
const namedPaths = runArgs.filter(isPath)

// .taprc's own exclude and coverage-exclude lists, which our command-line ones would replace.
function taprc () {
  const file = join(root, '.taprc')
  const list = (key) => {
    if (!existsSync(file)) return undefined
    // Only the simple YAML used there: `key:` followed by `  - item` lines.
    const lines = readFileSync(file, 'utf8').split('\n')
    const at = lines.findIndex((l) => l.trim() === `${key}:`)
    if (at < 0) return undefined
    const items = []
    for (const l of lines.slice(at + 1)) {
      const m = /^\s+-\s+(.+?)\s*$/.exec(l)
      if (!m) break
      items.push(m[1].replace(/^(['"])(.*)\1$/, '$2'))
    }
    return items
  }
  return { exclude: list('exclude'), coverageExclude: list('coverage-exclude') ?? [] }
}
const rc = taprc()

// The PostgreSQL run's arguments: without test/sqlite/ named directly, and with it excluded from any folder that tap
// expands (tap matches --exclude relative to the folder it expands, so each named ancestor gets its own pattern).
function postgresArgs () {
  const args = []
  const exclude = new Set([...(rc.exclude ?? TAP_DEFAULT_EXCLUDE), 'test/sqlite/**'])
  for (const a of runArgs) {
    if (!isPath(a)) {
      args.push(a)
      continue
    }
    const abs = resolve(a)
    if (abs === SQLITE_TESTS || abs.startsWith(SQLITE_TESTS + sep)) continue
    if (SQLITE_TESTS.startsWith(abs + sep)) exclude.add(`${relative(abs, SQLITE_TESTS).split(sep).join('/')}/**`)
    args.push(a)
  }
  const emptied = namedPaths.length > 0 && !args.some(isPath)
  return { args: [...[...exclude].map((e) => `--exclude=${e}`), ...args], emptied }
}

// ---- engines ------------------------------------------------------------------------------------------------------

const enginesEnv = process.env.BUS_TEST_ENGINES?.trim()
const engines = (enginesEnv || 'sqlite,postgres').split(/[\s,]+/).filter(Boolean)
if (engines.length === 0 || engines.some((e) => e !== 'sqlite' && e !== 'postgres')) {
  say(`BUS_TEST_ENGINES=${enginesEnv}: expected sqlite, postgres, or sqlite,postgres`)
  process.exit(2)
}
const runSqlite = engines.includes('sqlite')
let runPostgres = engines.includes('postgres')
let adminUrl = process.env.BUS_TEST_POSTGRES_URL || undefined
if (runPostgres && !adminUrl && !findPostgresBinDir()) {
  const why = 'no server binaries found (install the Debian package postgresql, or set BUS_TEST_POSTGRES_URL)'
  if (isCI || enginesEnv) {
    say(`PostgreSQL: FAILED — ${why}${isCI ? '; CI=true requires the PostgreSQL run' : `; BUS_TEST_ENGINES=${enginesEnv} asks for it`}`)
    process.exit(1)
  }
  say(`PostgreSQL: skipped — ${why}`)
  runPostgres = false
}
let pg = runPostgres ? postgresArgs() : undefined
if (pg?.emptied) {
  say('PostgreSQL: skipped — the test files named are all under test/sqlite/ (SQLite only)')
  runPostgres = false
  pg = undefined
}
if (!runSqlite && !runPostgres) process.exit(0)

// ---- running ------------------------------------------------------------------------------------------------------

let child
let interrupted
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(s, () => {
    interrupted ??= s
    child?.kill(s) // tap proxies it to its test processes; pg-cluster.mjs stops the cluster on its own handler
  })
}

function tap (label, args, env) {
  say(`\n# ${label}: tap ${args.join(' ')}`)
  return new Promise((resolve) => {
    child = spawn(tapBin, args, { stdio: 'inherit', env })
    child.on('error', (err) => {
      say(`cannot run ${tapBin}: ${err.message}`)
      resolve(1)
    })
    child.on('close', (code, signal) => {
      child = undefined
      resolve(code ?? (signal ? 1 : 0))
    })
  })
}

// Every run only collects coverage; the final report checks it (see the top of this file).
const collectOnly = coverageDisabled ? [] : ['--coverage-report=none', '--allow-empty-coverage', '--statements=0', '--branches=0', '--functions=0', '--lines=0']
const coverageExclude = (files) => [...rc.coverageExclude, ...(runSqlite && runPostgres ? [] : files)]
  .map((f) => `--coverage-exclude=${f}`)

const coverageDir = join(root, '.tap', 'coverage')
const stash = join(root, '.tap', 'coverage-sqlite')
rmSync(stash, { recursive: true, force: true })

let cluster
if (runPostgres && !adminUrl) {
  try {
    cluster = await startCluster() // before the SQLite run, so that a broken PostgreSQL fails in seconds, not minutes
  } catch (err) {
    say(err.message)
    process.exit(1)
  }
  adminUrl = cluster.url
}

const failed = []
try {
  if (runSqlite) {
    const env = { ...process.env, BUS_TEST_ENGINE: 'sqlite' }
    delete env.BUS_TEST_POSTGRES_URL
    if (await tap('SQLite', [...collectOnly, ...coverageExclude(POSTGRES_ONLY), ...runArgs], env) !== 0) failed.push('SQLite')
  }
  if (runPostgres && !interrupted) {
    if (existsSync(coverageDir)) renameSync(coverageDir, stash) // tap wipes .tap/coverage when a run starts
    const env = { ...process.env, BUS_TEST_ENGINE: 'postgres', BUS_TEST_POSTGRES_URL: adminUrl }
    if (await tap('PostgreSQL', [...collectOnly, ...coverageExclude(SQLITE_ONLY), ...pg.args], env) !== 0) failed.push('PostgreSQL')
    if (existsSync(stash)) {
      cpSync(stash, coverageDir, { recursive: true }) // uuid-named files: the two runs never collide
      rmSync(stash, { recursive: true, force: true })
    }
  }
} finally {
  await cluster?.stop()
}

if (interrupted) process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 })[interrupted])

if (!coverageDisabled) {
  const ran = [runSqlite && 'SQLite', runPostgres && 'PostgreSQL'].filter(Boolean).join(' + ')
  const args = ['report', '--no-show-full-coverage', ...(namedPaths.length ? ['--allow-incomplete-coverage', '--allow-empty-coverage'] : []), ...reportArgs]
  const label = `coverage over ${ran}${namedPaths.length ? ' (test files named: thresholds not enforced)' : ''}`
  if (await tap(label, args, process.env) !== 0) failed.push('coverage')
}

say(failed.length ? `\n# FAILED: ${failed.join(', ')}` : `\n# passed: ${[runSqlite && 'SQLite', runPostgres && 'PostgreSQL'].filter(Boolean).join(', ')}`)
process.exit(failed.length ? 1 : 0)
