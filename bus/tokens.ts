import { createHash, randomBytes } from 'node:crypto'

// 256 random bits; the prefix makes a leaked token easy to recognise in a scan.
export const newToken = (): string => `bus_${randomBytes(32).toString('base64url')}`
// Tokens are stored only as hashes and looked up by hash, so no stored secret is ever compared byte by byte.
export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex')
