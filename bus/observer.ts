// What the bus reports of its own work, for metrics (plugins/metrics.ts): counts of what this process did. The core
// calls it after the fact (after the commit, as it publishes events); it never changes what the bus does.
export type MessageKind = 'direct' | 'broadcast' | 'topic' | 'queue'
// How messages reach their agents the first time: an inbox read (long-polls included), a stream; and queue claims
// (each lease, redeliveries included).
export type DeliveryPath = 'inbox' | 'stream' | 'claim'
// Readers held open: SSE streams, inbox long-polls, claims that wait for work.
export type ReaderKind = 'stream' | 'poll' | 'claim'

export interface BusObserver {
  stored: (kind: MessageKind) => void
  delivered: (path: DeliveryPath, count: number) => void
  // Direct, broadcast and topic copies marked read; queue messages acked.
  acked: (kind: 'message' | 'queue', count: number) => void
  // A reader opened; call what it answers when the reader ends.
  opened: (kind: ReaderKind) => () => void
}

const nothing = (): void => {}
export const UNOBSERVED: BusObserver = { stored: nothing, delivered: nothing, acked: nothing, opened: () => nothing }

export const kindOf = ({ to, topic, queue }: { to?: unknown, topic?: string, queue?: string }): MessageKind =>
  queue !== undefined ? 'queue' : topic !== undefined ? 'topic' : to !== undefined ? 'direct' : 'broadcast'
