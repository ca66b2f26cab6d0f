import { createHmac, randomBytes } from 'node:crypto'

// Webhook signatures as the Standard Webhooks specification has them (standardwebhooks.com), so receivers verify
// with any of its libraries: the key is the base64 after `whsec_`, the signature an HMAC-SHA256 over
// `${id}.${timestamp}.${body}`, sent as `v1,<base64>` in webhook-signature beside webhook-id and webhook-timestamp.

// Standard base64, not base64url: the reference libraries decode the secret strictly and refuse `-` and `_`.
export const newWebhookSecret = (): string => `whsec_${randomBytes(32).toString('base64')}`

// Secrets made before the standard headers were base64url; Node's base64 decoder reads both alphabets, so those
// agents' webhooks keep being signed with the same key (their receivers convert it, or the agent sets its webhook again).
export const webhookKey = (secret: string): Buffer => Buffer.from(secret.replace(/^whsec_/, ''), 'base64')

export interface SignedHeaders { 'webhook-id': string, 'webhook-timestamp': string, 'webhook-signature': string }

export function signWebhook (secret: string, id: string, timestamp: number, body: string): SignedHeaders {
  const mac = createHmac('sha256', webhookKey(secret)).update(`${id}.${timestamp}.${body}`).digest('base64')
  return { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': `v1,${mac}` }
}

// Deprecated X-Bus-Signature, still sent for receivers written before the standard headers: `t=<unix seconds>,v1=<hex>`,
// an HMAC-SHA256 keyed with the whole secret string (as text) over `${t}.${body}`.
export function legacySignature (secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}
