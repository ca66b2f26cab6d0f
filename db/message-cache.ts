// A message as stored: what every recipient sees alike. It never changes once committed (delivery and reading are
// recorded on each recipient's delivery row; a sender's name is kept when it deregisters), so it can be cached.
export interface StoredMessage {
  id: number
  from: string
  to: string[]
  broadcast: boolean
  topic: string | null
  queue: string | null
  subject: string | null
  body: string
  data: Record<string, unknown> | null
  priority: 'normal' | 'high' | 'urgent'
  reply_to: number | null
  thread_id: number
  created_at: string
}

// The most recently used messages, by id, up to about maxBytes of them. The reads that hand messages to their
// recipients (inbox pages, streams) take the message from here and only the delivery row from the database:
// fetching a message's eleven columns through two joins cost 60% of an inbox page's database time, and a page
// of messages already seen is the common case (an agent reads its inbox again before it acknowledges). Messages
// larger than maxEntryBytes are not kept: copying their text dominates their cost anyway, and a few would push
// out thousands of small ones.
export class MessageCache {
  readonly #entries = new Map<number, { message: StoredMessage, bytes: number }>()
  #bytes = 0

  constructor (readonly maxBytes: number, readonly maxEntryBytes: number) {}

  get (id: number): StoredMessage | undefined {
    const entry = this.#entries.get(id)
    if (entry === undefined) return undefined
    // Re-inserted: a Map iterates in insertion order, so the first key is the least recently used.
    this.#entries.delete(id)
    this.#entries.set(id, entry)
    return entry.message
  }

  set (message: StoredMessage, rawBytes: number): void {
    // Strings are UTF-16 in memory; the rest is the object and its parsed JSON, roughly.
    const bytes = 2 * rawBytes + 400
    if (bytes > this.maxEntryBytes) return
    const old = this.#entries.get(message.id)
    if (old !== undefined) this.#bytes -= old.bytes
    this.#entries.delete(message.id)
    this.#entries.set(message.id, { message, bytes })
    this.#bytes += bytes
    for (const [id, entry] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break
      this.#entries.delete(id)
      this.#bytes -= entry.bytes
    }
  }

  get size (): number { return this.#entries.size }
  get bytes (): number { return this.#bytes }
}
