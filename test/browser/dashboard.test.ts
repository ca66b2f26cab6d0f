import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import t from 'tap'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../config.js'
import { testDb } from '../helper.js'
import { openStream } from '../sse.js'
import { openBrowser, skip } from './chromium.js'

// The dashboard in a real browser (./chromium.ts).

const ADMIN = 'admin-token-for-the-dashboard-test'
const METRICS = 'metrics-token-for-the-dashboard-test'
// Generous: the machine may be busy. How long things took is printed, not asserted.
const WAIT_MS = 15_000

// The screenshot CI keeps (and the README shows): .tap/ is not committed.
const SHOTS = join('.tap', 'screenshots')

async function agentRow (page: Page, name: string) {
  return page.locator('#agents tbody tr', { has: page.locator('td:first-child', { hasText: new RegExp(`^${name}$`) }) })
}

t.test('the dashboard asks for a token, lists agents, shows a new message live and an agent going offline', { skip }, async (t) => {
  // The bus's own loops on, as in production: the heartbeat marks a silent agent offline after 1 s.
  const app = await buildApp(loadConfig({
    BUS_DB: await testDb(t), BUS_ADMIN_TOKEN: ADMIN, BUS_METRICS_TOKEN: METRICS, BUS_OFFLINE_AFTER_S: '1', BUS_MAX_EVENT_LOOP_DELAY_MS: '0'
  }), { loops: true })
  t.teardown(() => app.close())
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const admin = { authorization: `Bearer ${ADMIN}` }
  const tokens: Record<string, string> = {}
  for (const name of ['planner', 'coder', 'reviewer']) {
    const res = await app.inject({ method: 'POST', url: '/agents', headers: admin, payload: { name } })
    tokens[name] = res.json().token
  }
  const as = (name: string) => ({ authorization: `Bearer ${tokens[name]}` })
  await app.inject({ method: 'POST', url: '/send', headers: as('planner'), payload: { to: 'coder', subject: 'first task', body: 'not shown' } })

  // coder is online while its stream is open.
  const stream = openStream(`${base}/stream`, tokens.coder)
  t.teardown(() => stream.close())
  await stream.opened

  const browser = await openBrowser(t, { viewport: { width: 1280, height: 900 } })
  const page = await browser.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))

  // Without a token the page asks for one; an agent's token is refused and the page says so.
  await page.goto(`${base}/dashboard`)
  await page.locator('#login').waitFor({ state: 'visible' })
  await page.locator('#token').fill(tokens.planner)
  await page.locator('#login button[type=submit]').click()
  await t.resolves(page.locator('#login-why', { hasText: 'refused' }).waitFor({ timeout: WAIT_MS }), 'an agent token is refused')

  // The metrics token opens it; it is kept for the tab, never put in the address.
  await page.locator('#token').fill(METRICS)
  await page.locator('#login button[type=submit]').click()
  await (await agentRow(page, 'coder')).waitFor({ timeout: WAIT_MS })
  t.notMatch(page.url(), /token|metrics-token/, 'the token is not in the URL')
  t.equal(await page.evaluate(() => sessionStorage.getItem('agent-bus-dashboard-token')), METRICS, 'kept in sessionStorage')

  // Every agent is listed, with its status and unread count.
  for (const name of ['planner', 'coder', 'reviewer']) t.ok(await (await agentRow(page, name)).isVisible(), `${name} is listed`)
  await (await agentRow(page, 'coder')).locator('td', { hasText: /^online$/ }).waitFor({ timeout: WAIT_MS })
  t.equal(await (await agentRow(page, 'coder')).locator('td').nth(3).innerText(), '1', 'coder has one unread message')
  t.match(await page.locator('#latest tbody').innerText(), /first task/)
  t.notMatch(await page.content(), /not shown/, 'no message body reaches the page')

  // A message sent over the API appears without a reload.
  const sentAt = Date.now()
  const sent = await app.inject({ method: 'POST', url: '/send', headers: as('reviewer'), payload: { to: 'planner', subject: 'live one', priority: 'urgent', body: 'x' } })
  t.equal(sent.statusCode, 201)
  const row = page.locator('#latest tbody tr', { hasText: 'live one' })
  await row.waitFor({ timeout: WAIT_MS })
  t.comment(`a sent message appeared on the dashboard after ${Date.now() - sentAt} ms`)
  t.match(await row.innerText(), /reviewer\s+planner\s+live one\s+urgent/)
  t.equal(await page.locator('#t-messages').innerText(), '2')

  // coder goes offline: its stream closes, and a second later the heartbeat says so.
  const closedAt = Date.now()
  stream.close()
  await (await agentRow(page, 'coder')).locator('td', { hasText: /^offline$/ }).waitFor({ timeout: WAIT_MS })
  t.comment(`an agent going offline showed after ${Date.now() - closedAt} ms (BUS_OFFLINE_AFTER_S=1)`)

  // The token stays for a reload of the tab.
  await page.reload()
  await (await agentRow(page, 'coder')).waitFor({ timeout: WAIT_MS })
  t.ok(await page.locator('#login').isHidden(), 'no second prompt after a reload')

  mkdirSync(SHOTS, { recursive: true })
  await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true })
  // Readable on a phone: nothing wider than the screen but the tables, which scroll.
  await page.setViewportSize({ width: 390, height: 844 })
  await page.waitForTimeout(100)
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
  t.ok(overflow <= 1, `the page fits a phone's width (overflows by ${overflow} px)`)
  await page.screenshot({ path: join(SHOTS, 'dashboard-phone.png'), fullPage: true })
  t.same(errors, [], 'no script errors')
})

t.test('on a bus without tokens the dashboard opens without asking', { skip }, async (t) => {
  const app = await buildApp(loadConfig({ BUS_DB: await testDb(t), BUS_MAX_EVENT_LOOP_DELAY_MS: '0' }), { loops: false })
  t.teardown(() => app.close())
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  await app.inject({ method: 'POST', url: '/agents', payload: { name: 'solo' } })
  const browser = await openBrowser(t)
  const page = await browser.newPage()
  await page.goto(`${base}/dashboard`)
  await (await agentRow(page, 'solo')).waitFor({ timeout: WAIT_MS })
  t.ok(await page.locator('#login').isHidden(), 'no token asked for')
})
