// Types of scripts/pg-cluster.mjs, for the tests and the benchmark written in TypeScript.
export interface Cluster {
  // The admin URL: postgres://bus@127.0.0.1:<port>/postgres
  url: string
  // Stops the server and removes its folder.
  stop: () => Promise<void>
  // Stops the server as a restart would, keeping its data; up() starts it again on the same port.
  down: () => Promise<void>
  up: () => Promise<void>
}
export function startCluster (options?: { fsync?: boolean }): Promise<Cluster>
export function findPostgresBinDir (): string | undefined
export function createDatabase (adminUrl: string, name: string): Promise<string>
export function dropDatabase (adminUrl: string, name: string): Promise<void>
