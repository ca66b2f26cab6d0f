import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext } from 'playwright-core'
import type { Test } from 'tap'

// Debian's Chromium, driven by playwright-core (never a downloaded browser), with the flags this machine's closed
// network needs. .ci/run installs it; a developer's machine without it skips, saying why.
const CHROMIUM = '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync']

export const skip = !existsSync(CHROMIUM) && process.env.CI === undefined ? `no ${CHROMIUM}: apt-get install chromium` : false

// A browser with a fresh profile (nothing from an earlier run, a stored token, can make a test pass), closed and
// removed when the test ends.
export async function openBrowser (t: Test, options: { viewport?: { width: number, height: number } } = {}): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), 'agent-bus-chromium-'))
  const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, ...options })
  t.teardown(async () => {
    await browser.close()
    rmSync(profile, { recursive: true, force: true })
  })
  return browser
}
