import type { Migration } from 'kysely'
import * as init from './0001-init.js'

// The in-code record of migrations, in order. Never edit a merged migration: add the next one here.
export const migrations: Record<string, Migration> = {
  '0001-init': init
}
