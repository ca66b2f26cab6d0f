import { Migrator, type Kysely, type Migration, type MigrationResultSet } from 'kysely'

// Each engine has its own list (db/migrations/<engine>/index.ts), under the same names, so that a schema version
// means the same on both.
export type Migrations = Record<string, Migration>

function migrator (db: Kysely<any>, migrations: Migrations): Migrator {
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

export async function migrateToLatest (db: Kysely<any>, migrations: Migrations): Promise<MigrationResultSet> {
  return check(migrator(db, migrations).migrateToLatest())
}

export async function migrateDown (db: Kysely<any>, migrations: Migrations): Promise<MigrationResultSet> {
  return check(migrator(db, migrations).migrateDown())
}

// Runs migrations down (or up) until `name` is the latest applied one.
export async function migrateTo (db: Kysely<any>, migrations: Migrations, name: string): Promise<MigrationResultSet> {
  return check(migrator(db, migrations).migrateTo(name))
}
