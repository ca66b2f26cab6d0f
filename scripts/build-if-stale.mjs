// Compiles the TypeScript (tsc -p tsconfig.build.json, 20-40 s on a small machine) only when a source is newer than
// the last successful build, so `npm start` and a restart take about 2 s. Plain JS because it runs before anything
// is compiled. npm's `prepare` runs it at install, so a fresh clone is compiled by `npm install`; a reinstall over an
// up-to-date build compiles nothing, since the output depends on our sources and tsconfig, not on dependency types
// (`npm run typecheck` checks those). `--force` always compiles (`npm run build`).
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const stamp = join(root, 'dist', '.build-stamp')
// Never compiled into dist/: dependencies, the output itself, tap's and git's folders, and the tests, which
// tsconfig.build.json excludes (editing a test needs no rebuild; `npm run typecheck` checks them).
const skipped = new Set(['node_modules', 'dist', 'test'])

// Walks the whole project rather than reading tsconfig.build.json's include list, so a new source folder is watched
// without a second list to keep in step (a superset costs at worst a needless build, never a stale one).
function newestSource (dir) {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || (dir === root && skipped.has(entry.name))) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path))
    else if (entry.name.endsWith('.ts') || (dir === root && /^tsconfig.*\.json$/.test(entry.name))) {
      newest = Math.max(newest, statSync(path).mtimeMs)
    }
  }
  return newest
}

function stale () {
  if (!existsSync(stamp) || !existsSync(join(root, 'dist', 'server.js'))) return 'no build yet'
  return newestSource(root) > statSync(stamp).mtimeMs ? 'a source changed since the last build' : undefined
}

const reason = process.argv.includes('--force') ? 'forced' : stale()
if (reason !== undefined) {
  process.stderr.write(`agent-bus: compiling TypeScript (${reason})...\n`)
  // Taken before tsc reads anything: a file saved while it runs is newer than the stamp and is compiled next time.
  const started = new Date()
  let tsc
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  } catch {
    process.stderr.write('agent-bus: TypeScript is not installed (a dev dependency): run npm install without --omit=dev\n')
    process.exit(1)
  }
  const { status } = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
  if (status !== 0) {
    // tsc emits even with type errors; without a stamp the next run compiles again instead of starting that output.
    rmSync(stamp, { force: true })
    process.exit(status ?? 1)
  }
  writeFileSync(stamp, 'written by scripts/build-if-stale.mjs after a successful tsc -p tsconfig.build.json\n')
  utimesSync(stamp, started, started)
}
