// The web client under the gateway's security headers: the Content-Security-Policy is
// enforced by Chromium (never bypassed), the app boots (wasm under 'wasm-unsafe-eval',
// inline scripts by hash), streams an answer over grpc-web, and not one CSP violation
// is reported. Env as for app.test.mjs (BASE_URL, OUT_DIR); run it with
// `node --test csp.test.mjs` beside run.sh's gateways.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const OUT = process.env.OUT_DIR || 'tests-output/web';
const T = 20_000;

let browser;

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    headless: true,
  });
});

after(async () => {
  await browser?.close();
});

test('the app works under the enforced CSP with no violations', async (t) => {
  // bypassCSP stays false: the browser enforces what the gateway sends.
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, bypassCSP: false });
  const page = await context.newPage();
  const errors = [];
  const cspConsole = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspConsole.push(m.text());
  });
  // Collect violations from the first script on (before the app's own scripts run).
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`);
    });
  });
  t.after(async () => {
    await page.screenshot({ path: path.join(OUT, 'csp-enforced.png') }).catch(() => {});
    await context.close();
  });

  const response = await page.goto(BASE);
  const headers = response.headers();
  const csp = headers['content-security-policy'] || '';
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/, csp);
  assert.match(csp, /frame-ancestors 'none'/, csp);
  assert.doesNotMatch(csp, /'unsafe-eval'/, csp);
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.equal(headers['referrer-policy'], 'no-referrer');

  // The wasm app started (it renders the composer) and can talk to the gateway.
  await page.waitForSelector('[data-testid=composer-input]', { timeout: T });
  const input = page.locator('[data-testid=composer-input]');
  await input.fill('Hello under a strict CSP');
  await input.press('Enter');
  await page.waitForFunction(() => {
    const all = document.querySelectorAll('[data-testid=message][data-role=assistant]');
    return all.length > 0 && all[all.length - 1].dataset.status === 'complete';
  }, null, { timeout: T });
  const text = await page.locator('[data-testid=message][data-role=assistant] [data-testid=message-content]').last().innerText();
  assert.match(text, /You said: Hello under a strict CSP/);

  const violations = await page.evaluate(() => window.__cspViolations);
  assert.deepEqual(violations, [], 'no CSP violations');
  assert.deepEqual(cspConsole, [], 'no CSP messages in the console');
  assert.deepEqual(errors, [], 'no uncaught page errors');
});

test('the app cannot be framed by another origin', async (t) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  t.after(async () => context.close());
  // A page on another origin (about:blank counts as opaque) tries to frame the app.
  await page.setContent(`<iframe id="f" src="${BASE}"></iframe>`);
  await page.waitForTimeout(1500);
  const frame = page.frames().find((f) => f !== page.mainFrame());
  const framedApp = frame ? await frame.$('[data-testid=composer-input]').catch(() => null) : null;
  assert.equal(framedApp, null, 'frame-ancestors none keeps the app out of frames');
});
