import { join } from 'node:path'
import type { Page } from 'playwright-core'
import t from 'tap'
import { build, register } from '../helper.js'
import { openBrowser, skip } from './chromium.js'

// Swagger UI in a real browser (./chromium.ts).

async function execute (page: Page, operation: string): Promise<{ status: string, body: string }> {
  const block = page.locator(`#operations-${operation}`)
  if (!await block.locator('.execute').isVisible()) await block.locator('.opblock-summary').first().click()
  await block.locator('.execute').click()
  const status = block.locator('.live-responses-table .response .response-col_status').first()
  await status.waitFor()
  return { status: (await status.innerText()).trim(), body: await block.locator('.live-responses-table .microlight').first().innerText() }
}

t.test('"Try it out" works as Swagger UI proposes it, and the token survives a reload', { skip }, async (t) => {
  const app = await build(t)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const browser = await openBrowser(t)
  const page = await browser.newPage()
  await page.goto(`${base}/docs`)
  await page.locator('#operations-agents-registerAgent').waitFor()

  // The proposed registration (alice) works as it is, against this bus, whatever its port.
  const registered = await execute(page, 'agents-registerAgent')
  t.equal(registered.status, '201', registered.body)
  const { token } = JSON.parse(registered.body) as { token: string }
  await register(app, 'bob') // the proposed send goes to bob

  await page.locator('.btn.authorize').first().click()
  await page.locator('.modal-ux input').first().fill(token)
  await page.locator('.modal-ux .btn.authorize').first().click()
  await page.locator('.modal-ux .btn-done').first().click()

  const sent = await execute(page, 'messages-sendMessage')
  t.equal(sent.status, '201', sent.body)
  t.match(JSON.parse(sent.body), { from: 'alice', to: ['bob'], priority: 'high' })

  // The stream proposes close_after, so Execute shows what arrived instead of spinning for ever.
  const bob = await register(app, 'carol')
  await app.inject({ method: 'POST', url: '/send', headers: bob.auth, payload: { to: 'alice', body: 'for the stream' } })
  const streamed = await execute(page, 'messages-streamMessages')
  t.equal(streamed.status, '200')
  t.match(streamed.body, /for the stream/)

  // After a reload the token is still there (persistAuthorization).
  await page.reload()
  await page.locator('#operations-messages-listInbox').waitFor()
  const inbox = await execute(page, 'messages-listInbox')
  t.equal(inbox.status, '200', inbox.body)
  await page.screenshot({ path: join('.tap', 'swagger-ui.png'), fullPage: false }).catch(() => {})
})
