import { readFileSync } from 'node:fs'

// Resident memory of a process, from /proc (Linux), in bytes.
export function rssBytes (pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(kb?.[1] ?? 0) * 1024
}

// The machine's monotonic clock (CLOCK_MONOTONIC, shared by every process on Linux), in ms: times taken in two
// processes compare directly.
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6
