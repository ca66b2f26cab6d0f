// A circuit breaker per webhook recipient. After `failures` attempts in a row fail, the recipient's endpoint gets no
// attempt for a cool-down; then one attempt probes it: success closes the circuit, failure opens it again for twice
// as long (at most maxCooldownMs). Retrying a dead endpoint only spends connections and log lines, and its rows
// are waiting in the database anyway.
export interface BreakerOptions {
  failures: number
  cooldownMs: number
  maxCooldownMs: number
}

export type Transition = 'opened' | 'reopened' | 'closed'

interface Circuit {
  url: string
  failures: number
  // Open until then; undefined while closed.
  openUntil?: number
  cooldownMs: number
}

export class Breakers {
  // Only recipients that have failed lately; a success forgets them.
  readonly #circuits = new Map<number, Circuit>()
  readonly #options: BreakerOptions

  constructor (options: BreakerOptions) {
    this.#options = options
  }

  // How many attempts the recipient may have in flight now: `open` none, `probe` one, `closed` the usual number.
  state (recipientId: number, url: string, now: number): 'closed' | 'probe' | 'open' {
    const circuit = this.#circuit(recipientId, url)
    if (circuit?.openUntil === undefined) return 'closed'
    return now < circuit.openUntil ? 'open' : 'probe'
  }

  // Endpoints with an open circuit now (for the query to skip).
  open (now: number): Array<{ recipientId: number, url: string }> {
    return [...this.#circuits].filter(([, c]) => c.openUntil !== undefined && now < c.openUntil).map(([recipientId, c]) => ({ recipientId, url: c.url }))
  }

  openUntil (recipientId: number): number | undefined {
    return this.#circuits.get(recipientId)?.openUntil
  }

  success (recipientId: number, url: string): Transition | undefined {
    const circuit = this.#circuit(recipientId, url)
    this.#circuits.delete(recipientId)
    return circuit?.openUntil !== undefined ? 'closed' : undefined
  }

  failure (recipientId: number, url: string, now: number): Transition | undefined {
    const circuit = this.#circuit(recipientId, url) ?? { url, failures: 0, cooldownMs: this.#options.cooldownMs }
    this.#circuits.set(recipientId, circuit)
    circuit.failures++
    if (circuit.openUntil === undefined) {
      if (circuit.failures < this.#options.failures) return undefined
      circuit.openUntil = now + circuit.cooldownMs
      return 'opened'
    }
    // An attempt started before the circuit opened: it says nothing new about the endpoint.
    if (now < circuit.openUntil) return undefined
    circuit.cooldownMs = Math.min(circuit.cooldownMs * 2, this.#options.maxCooldownMs)
    circuit.openUntil = now + circuit.cooldownMs
    return 'reopened'
  }

  // A recipient's circuit, forgotten when its webhook moved to another URL (a new endpoint starts afresh).
  #circuit (recipientId: number, url: string): Circuit | undefined {
    const circuit = this.#circuits.get(recipientId)
    if (circuit && circuit.url !== url) this.#circuits.delete(recipientId)
    return circuit?.url === url ? circuit : undefined
  }
}
