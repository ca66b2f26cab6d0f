// Bench only: the real server (dist/server.js) with PostgreSQL's order lock off, to measure what the lock costs.
// The lock can be turned off only in-process (openPostgres({ unordered: true })), and buildApp opens its storage
// itself, so a module resolve hook gives plugins/db.js bench/unordered-storage.js in place of db/dialects/index.js;
// nothing else changes. Started by bench/run.ts like dist/server.js, with BUS_DB a postgres:// URL.
import { register } from 'node:module'

const plugin = new URL('../plugins/db.js', import.meta.url).href
const storage = new URL('./unordered-storage.js', import.meta.url).href
const hook = `export async function resolve (specifier, context, next) {
  const resolved = await next(specifier, context)
  if (context.parentURL === ${JSON.stringify(plugin)} && resolved.url.endsWith('/db/dialects/index.js')) return { ...resolved, url: ${JSON.stringify(storage)} }
  return resolved
}`
register(`data:text/javascript,${encodeURIComponent(hook)}`)
await import('../server.js')
// The storage was opened before the server listened: if the hook missed (a file moved), say so rather than
// measure the ordered bus under the wrong name.
if ((globalThis as { busUnordered?: boolean }).busUnordered !== true) {
  process.stderr.write('bench/unordered-server: the storage was not replaced; the order lock is still on\n')
  process.exit(1)
}
