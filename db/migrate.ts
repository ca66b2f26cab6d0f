import { Migrator, type Kysely, type MigrationResultSet } from 'kysely'
import { migrations } from './migrations/index.js'

function migrator (db: Kysely<any>): Migrator {
  return new Migrator({ db, provider: { getMigrations: async () => migrations } })
}

async function check (run: Promise<MigrationResultSet>): Promise<MigrationResultSet> {
  const result = await run
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown'
    throw new Error(`migration ${failed} failed: ${String((result.error as Error).message ?? result.error)}`)
  }
  return result
}

export async function migrateToLatest (db: Kysely<any>): Promise<MigrationResultSet> {
  return check(migrator(db).migrateToLatest())
}

export async function migrateDown (db: Kysely<any>): Promise<MigrationResultSet> {
  return check(migrator(db).migrateDown())
}

export const latestSchemaVersion = Object.keys(migrations).at(-1) as string

// Runs migrations down (or up) until `name` is the latest applied one.
export async function migrateTo (db: Kysely<any>, name: string): Promise<MigrationResultSet> {
  return check(migrator(db).migrateTo(name))
}
