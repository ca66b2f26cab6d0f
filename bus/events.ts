// What the bus tells its live readers (streams, long-polls, the webhook dispatcher) after a commit. Events carry
// positions, not payloads: the database stays the source of truth, and each reader pulls from its own cursor.
export type BusEvent =
  // Deliveries were stored; recipientIds null means a broadcast to every agent but the sender; webhooks tells the
  // dispatcher whether there may be a webhook to push.
  | { kind: 'message', seq: number, senderId: number, recipientIds: number[] | null, webhooks: boolean }
  // One of the agent's sent messages was read.
  | { kind: 'receipt', senderId: number, messageId: number, agent: string, readAt: string }
  // A recipient of one of the agent's sent messages missed its ack deadline (ack_within_s).
  | { kind: 'overdue', senderId: number, messageId: number, agent: string, ackBy: string }
  // Messages of a work queue became available (sent, released, requeued, a lease ended): waiting claims look again.
  | { kind: 'queue', queue: string }
  | { kind: 'presence', agent: string, status: 'online' | 'offline' }
  // The agent's token was rotated or the agent deregistered: every reader opened with the old token ends now.
  | { kind: 'revoked', agentId: number }
  // The bus is closing: every reader ends now.
  | { kind: 'shutdown' }

export type Listener = (event: BusEvent) => void

// The seam for several bus processes on one PostgreSQL database: a LISTEN/NOTIFY notifier implements the same
// interface, publishing to every process instead of to this one.
export interface Notifier {
  publish: (event: BusEvent) => void
  // Listen for the events that concern one agent (use 0 for a process-wide reader, such as the webhook dispatcher).
  subscribe: (agentId: number, listener: Listener) => () => void
  // Agents with at least one open reader: they count as online however long they stay quiet.
  connectedAgents: () => number[]
}

export function createLocalNotifier (): Notifier {
  const byAgent = new Map<number, Set<Listener>>()
  const emit = (listeners: Set<Listener> | undefined, event: BusEvent): void => {
    if (listeners) for (const listener of listeners) listener(event)
  }
  return {
    publish (event) {
      switch (event.kind) {
        case 'message':
          if (event.recipientIds === null) {
            for (const [agentId, listeners] of byAgent) if (agentId !== event.senderId) emit(listeners, event)
          } else {
            for (const id of event.recipientIds) emit(byAgent.get(id), event)
            emit(byAgent.get(0), event)
          }
          break
        case 'receipt':
          emit(byAgent.get(event.senderId), event)
          break
        case 'overdue':
          emit(byAgent.get(event.senderId), event)
          break
        case 'revoked':
          emit(byAgent.get(event.agentId), event)
          break
        default:
          for (const listeners of byAgent.values()) emit(listeners, event)
      }
    },
    subscribe (agentId, listener) {
      let listeners = byAgent.get(agentId)
      if (!listeners) byAgent.set(agentId, listeners = new Set())
      listeners.add(listener)
      return () => {
        listeners.delete(listener)
        if (listeners.size === 0 && byAgent.get(agentId) === listeners) byAgent.delete(agentId)
      }
    },
    connectedAgents: () => [...byAgent.keys()].filter((id) => id !== 0)
  }
}

// Why a reader's watch ended: the bus is closing, the token it was opened with was revoked, or the agent opened
// more readers than it may hold and this was the oldest.
export type WatchEnd = 'shutdown' | 'revoked' | 'replaced'

// The open readers (streams, long-polls) of each agent on this node, at most `max` per agent: opening one more ends
// the oldest. An agent that reconnects after a network failure is never locked out by its own half-open streams,
// and however many an agent opens, each message it receives wakes at most `max` readers, so the work one agent
// causes does not grow with the connections it holds.
export class Readers {
  readonly #byAgent = new Map<number, Set<Watch>>()

  constructor (readonly max: number) {}

  add (agentId: number, watch: Watch): void {
    let open = this.#byAgent.get(agentId)
    if (open === undefined) this.#byAgent.set(agentId, open = new Set())
    open.add(watch)
    // A Set iterates in insertion order: the first is the oldest.
    for (const oldest of open) {
      if (open.size <= this.max) break
      open.delete(oldest)
      oldest.end('replaced')
    }
  }

  delete (agentId: number, watch: Watch): void {
    const open = this.#byAgent.get(agentId)
    open?.delete(watch)
    if (open?.size === 0) this.#byAgent.delete(agentId)
  }

  count (agentId: number): number { return this.#byAgent.get(agentId)?.size ?? 0 }

  // Every open reader of this node.
  all (): Watch[] { return [...this.#byAgent.values()].flatMap((open) => [...open]) }
}

// Watches one agent's events for a reader that pulls from the database: subscribe first, then query, then wait,
// so that nothing stored between the query and the wait is missed.
export class Watch {
  #pending = false
  #ended: WatchEnd | undefined
  #wake: (() => void) | undefined
  readonly #unsubscribe: () => void

  // tokenHash: the token the reader was opened with; the backstop (bus/backstop.ts) ends the watch when it stops
  // working.
  constructor (notifier: Notifier, readonly agentId: number, match: (event: BusEvent) => boolean, readonly readers?: Readers,
    readonly tokenHash?: string) {
    this.#unsubscribe = notifier.subscribe(agentId, (event) => {
      if (event.kind === 'shutdown') this.end('shutdown')
      else if (event.kind === 'revoked') this.end('revoked')
      else if (match(event)) this.poke()
    })
    readers?.add(agentId, this)
  }

  // The position up to which the reader has read everything meant for it: the backstop (bus/backstop.ts) wakes it
  // only for a message past it.
  #caughtUpTo = 0
  get caughtUpTo (): number { return this.#caughtUpTo }
  caughtUp (seq: number): void { this.#caughtUpTo = Math.max(this.#caughtUpTo, seq) }

  // Wakes the waiter as an event would (for readers that also listen to other kinds of event).
  poke (): void {
    this.#pending = true
    this.#wake?.()
  }

  // Ends the reader: the waiter wakes, and `closed` tells it to stop.
  end (why: WatchEnd): void {
    this.#ended ??= why
    this.poke()
  }

  // True once the reader must stop; `ended` says why.
  get closed (): boolean { return this.#ended !== undefined }
  get ended (): WatchEnd | undefined { return this.#ended }

  // Waits until a matching event arrived since the last wait (at once if one already has), the time is up (never,
  // for Infinity), or the signal aborts; answers whether an event arrived.
  async wait (ms: number, signal?: AbortSignal): Promise<boolean> {
    if (!this.#pending && !this.closed && ms > 0 && !signal?.aborted) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', done)
          this.#wake = undefined
          resolve()
        }
        const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined
        signal?.addEventListener('abort', done)
        this.#wake = done
      })
    }
    const arrived = this.#pending
    this.#pending = false
    return arrived
  }

  close (): void {
    this.#unsubscribe()
    this.readers?.delete(this.agentId, this)
  }
}
