import { BadCursor, NulCharacter } from '../errors.js'

// Cursors are opaque to clients: base64url of the keyset position of the last item returned. Only the exact
// spelling the bus gives out is accepted ("99.0", " 1.1" or "0x1.1" would name the same position by accident).
export const encodeCursor = (...parts: number[]): string => Buffer.from(parts.join('.')).toString('base64url')
export function decodeCursor (cursor: string, parts: number): number[] {
  const text = Buffer.from(cursor, 'base64url').toString()
  const values = text.split('.')
  if (values.length !== parts || !values.every((v) => /^(0|[1-9]\d{0,14})$/.test(v)) || encodeCursor(...values.map(Number)) !== cursor) throw new BadCursor()
  return values.map(Number)
}

// A page answers at most about PAGE_BYTES of message text and data (and always at least one message), whatever its
// limit: 500 messages at the size limit would otherwise be a 32 MiB answer, held in memory while it is written.
const PAGE_BYTES = 4 << 20
export function withinBytes<T extends { body: string, subject: string | null, data: unknown }> (page: T[]): T[] {
  let bytes = 0
  for (let i = 0; i < page.length; i++) {
    const m = page[i]
    bytes += m.body.length + (m.subject?.length ?? 0) + (m.data === null ? 0 : JSON.stringify(m.data).length)
    if (bytes > PAGE_BYTES && i > 0) return page.slice(0, i)
  }
  return page
}

// Text the bus stores as it is given must not hold U+0000: PostgreSQL's text cannot, so no engine takes it, and a
// message means the same whichever engine stores it. (Inside `data` and `metadata` it is stored escaped, as JSON.)
export function refuseNul (fields: Record<string, string | undefined>): void {
  for (const [field, value] of Object.entries(fields)) if (value?.includes('\u0000') === true) throw new NulCharacter(field)
}
