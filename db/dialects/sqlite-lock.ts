import { spawn } from 'node:child_process'
import { closeSync, constants, fstatSync, mkdirSync, openSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { StorageStartError } from '../storage.js'

export class DatabaseInUse extends StorageStartError {
  override name = 'DatabaseInUse'
}

export interface DatabaseLock {
  // Why the path no longer names the file the bus locked (deleted, moved, replaced), or undefined. Two syscalls.
  // The text goes to clients and /health, so it names no path.
  fileProblem: () => string | undefined
  // Call only after SQLite has closed the file: see the note on close(2) below.
  release: () => void
}

// One bus process per database file: a second one would store messages its peer's live readers never hear of, and
// a second one on another name of the file (a hardlink, a bind mount in a container) keeps its own WAL beside that
// name, which a later open replays over the shared file, erasing acknowledged messages.
//
// So the lock is on the file itself: flock(2) on the inode, which every path, hardlink and container on the host
// shares, and which the kernel drops when the process dies, even by SIGKILL, so there is no stale lock to clean up.
// flock locks are independent of the fcntl locks SQLite uses, so readers such as `npm run backup` are not blocked.
// (On NFS Linux emulates flock with fcntl locks, which would clash with SQLite's; WAL does not work there anyway.)
//
// Node has no flock call. The native addons that offer one either compile at install (fs-ext, with node-gyp and a
// toolchain) or take fcntl OFD locks (fs-native-extensions), which do conflict with SQLite's own locks. Instead the
// file is opened here and its descriptor handed as fd 3 to flock(1) (util-linux, or busybox), which locks it and
// exits: a flock belongs to the open file description, which this process still holds, so the lock lasts exactly
// as long as this process keeps the descriptor. One short child at boot, nothing that runs beside the bus.
export async function lockDatabase (path: string): Promise<DatabaseLock> {
  mkdirSync(dirname(path), { recursive: true })
  // Created if missing (SQLite takes an empty file as a new database), so that the lock comes before SQLite
  // opens the file: a refused bus must not create a WAL of its own beside the shared file.
  const fd = openSync(path, constants.O_RDONLY | constants.O_CREAT, 0o644)
  const { code, stderr } = await flock(fd)
  if (code !== 0) {
    // The descriptor is left open. close(2) drops every fcntl lock this process holds on the file, and if this
    // process already serves the file (two buses in one process, as tests do), those are SQLite's locks. A refused
    // server exits at once.
    if (code === 1 && stderr === '') {
      throw new DatabaseInUse(`${path} is already served by another agent-bus process (through this or another name of the file); stop it first, or point BUS_DB at another file`)
    }
    throw new Error(`could not lock ${path}: flock exited with ${code}: ${stderr}`)
  }
  const locked = fstatSync(fd)
  let released = false
  return {
    fileProblem () {
      // After release the number may already name another file.
      if (released) return undefined
      // Deleted while open: SQLite goes on writing into an inode nobody can reach, and a restart starts empty.
      if (fstatSync(fd).nlink === 0) return 'the database file was deleted while the bus ran'
      try {
        const named = statSync(path)
        if (named.ino !== locked.ino || named.dev !== locked.dev) return 'the database file was replaced by another file while the bus ran'
      } catch (err) {
        const why = (err as NodeJS.ErrnoException).code
        return why === 'ENOENT' ? 'the database file was moved or deleted while the bus ran' : `the database file cannot be checked (${why})`
      }
      return undefined
    },
    release () {
      released = true
      closeSync(fd)
    }
  }
}

// flock(1) on an inherited descriptor: exit 0 when locked, 1 with nothing on stderr when another holder has it.
function flock (fd: number): Promise<{ code: number | null, stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('flock', ['-x', '-n', '3'], { stdio: ['ignore', 'ignore', 'pipe', fd] })
    let stderr = ''
    child.stderr?.on('data', (d) => { stderr += d })
    child.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT'
      ? new Error('flock(1) was not found: agent-bus needs it (util-linux, or busybox) to lock its database file')
      : err))
    child.once('close', (code) => resolve({ code, stderr: stderr.trim() }))
  })
}
