// Browser end-to-end tests: headless Chromium (playwright-core) against a real
// confab-gateway whose chat service talks to fake-openai.mjs. Started by run.sh, which
// sets BASE_URL, FAKE_URL, FIXTURES and OUT_DIR. Every test saves a screenshot.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const LIMITED = process.env.LIMITED_URL;
const FAKE = process.env.FAKE_URL;
const FIX = process.env.FIXTURES;
const OUT = process.env.OUT_DIR || 'tests-output/web';
const T = 20_000;

let browser;

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    // playwright gives every launch its own temporary profile (no --user-data-dir here).
    headless: true,
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh browser profile = a fresh anonymous user with no conversations. */
async function open(t, { width = 1280, height = 860, base = BASE } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base);
  await page.waitForSelector('[data-testid=composer-input]', { timeout: T });
  const name = t.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  t.after(async () => {
    await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: false }).catch(() => {});
    await context.close();
    assert.deepEqual(errors, [], 'no uncaught page errors');
  });
  return page;
}

async function send(page, text) {
  const input = page.locator('[data-testid=composer-input]');
  await input.fill(text);
  await input.press('Enter');
}

const assistant = (page) => page.locator('[data-testid=message][data-role=assistant]');
const users = (page) => page.locator('[data-testid=message][data-role=user]');

async function waitAssistantStatus(page, status, timeout = T) {
  await page.waitForFunction(
    (s) => {
      const all = document.querySelectorAll('[data-testid=message][data-role=assistant]');
      return all.length > 0 && all[all.length - 1].dataset.status === s;
    },
    status,
    { timeout },
  );
}

async function lastAssistantText(page) {
  return (await assistant(page).last().locator('[data-testid=message-content]').innerText()).trim();
}

async function fake(pathname) {
  const r = await fetch(FAKE + pathname);
  return r.json();
}

test('send a message and watch the answer stream in as Markdown', async (t) => {
  const page = await open(t);
  await expectQuota(page);
  await send(page, 'Hello there, streaming test');
  await users(page).first().waitFor({ timeout: T });
  // Tokens arrive one by one: we see a partial answer with the cursor before it completes.
  await page.waitForSelector('[data-testid=streaming-indicator]', { timeout: T });
  const partial = await lastAssistantText(page);
  await waitAssistantStatus(page, 'complete');
  const full = await lastAssistantText(page);
  assert.match(full, /Hello from fake model \(answer #\d+\)\. You said: Hello there, streaming test/);
  assert.ok(partial.length < full.length, `partial "${partial}" shorter than full`);
  // The conversation appears in the sidebar and gets a title.
  await page.waitForSelector('[data-testid=conversation-item]', { timeout: T });
  await page.waitForFunction(() => !/New chat/.test(document.querySelector('[data-testid=chat-title]').textContent), null, { timeout: T });

  // Markdown: table, list, link, highlighted code with a copy button.
  await send(page, 'TABLE please');
  await waitAssistantStatus(page, 'complete');
  const last = assistant(page).last();
  assert.equal(await last.locator('table th').first().innerText(), 'Fruit');
  assert.equal(await last.locator('ul li').count(), 2);
  assert.equal(await last.locator('a[href="https://example.com/docs"]').getAttribute('target'), '_blank');
  assert.ok(await last.locator('.code-block .tok-keyword').count() >= 2);
  await last.locator('[data-testid=copy-code]').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=copy-code]').textContent === 'Copied');
  assert.match(await page.evaluate(() => window.__confabLastCopied || navigator.clipboard.readText()), /fn main\(\)/);
});

async function expectQuota(page) {
  await page.waitForFunction(() => /Requests: \d+\/\d+/.test(document.querySelector('[data-testid=quota]')?.textContent || ''), null, { timeout: T });
}

test('stop mid-stream keeps the partial answer as stopped', async (t) => {
  const page = await open(t);
  const before = (await fake('/__stats')).cancelled;
  await send(page, 'SLOW story please');
  await page.waitForFunction(() => /word3/.test(document.querySelector('[data-testid=message][data-role=assistant]:last-of-type [data-testid=message-content]')?.textContent || ''), null, { timeout: T });
  await page.keyboard.press('Escape'); // Esc stops, like the Stop button
  await waitAssistantStatus(page, 'stopped');
  const text = await lastAssistantText(page);
  assert.match(text, /word1/);
  assert.doesNotMatch(text, /word60/);
  await page.waitForSelector('[data-testid=send-button]');
  // The upstream request was cancelled, not left running.
  const deadline = Date.now() + 5000;
  while ((await fake('/__stats')).cancelled <= before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok((await fake('/__stats')).cancelled > before, 'upstream stream was cancelled');
  // After a refresh the stored answer is still marked stopped.
  await page.reload();
  await waitAssistantStatus(page, 'stopped');
});

test('regenerate replaces the last answer; edit and resend answers the new text', async (t) => {
  const page = await open(t);
  await send(page, 'first question');
  await waitAssistantStatus(page, 'complete');
  const first = await lastAssistantText(page);
  await assistant(page).last().locator('[data-testid=regenerate]').click();
  await waitAssistantStatus(page, 'complete');
  const second = await lastAssistantText(page);
  assert.notEqual(second, first);
  assert.match(second, /You said: first question/);
  assert.equal(await assistant(page).count(), 1);

  await users(page).last().hover();
  await users(page).last().locator('[data-testid=edit-message]').click();
  await page.locator('[data-testid=edit-input]').fill('edited question');
  await page.locator('[data-testid=edit-save]').click();
  await waitAssistantStatus(page, 'complete');
  assert.match(await lastAssistantText(page), /You said: edited question/);
  assert.equal(await users(page).count(), 1);
  assert.equal((await users(page).last().innerText()).includes('edited question'), true);
  // Copy a whole message.
  await assistant(page).last().locator('[data-testid=copy-message]').click();
  assert.match(await page.evaluate(() => window.__confabLastCopied || ''), /edited question/);
});

test('upload a PDF, a DOCX, an XLSX and an image; the model receives their content', async (t) => {
  const page = await open(t);
  await page.evaluate(() => {
    window.__sawProgress = false;
    new MutationObserver(() => {
      if (document.querySelector('[data-testid=upload-progress]')) window.__sawProgress = true;
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  const files = ['report.pdf', 'notes.docx', 'sales.xlsx', 'photo.png'].map((f) => path.join(FIX, f));
  await page.locator('[data-testid=file-input]').setInputFiles(files);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=attachment-chip]').length === 4, null, { timeout: T });
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=attachment-chip]')].every((c) => c.dataset.state === 'ready'), null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => window.__sawProgress), true, 'a progress bar was shown');
  assert.equal(await page.locator('[data-testid=attachment-thumbnail]').count(), 1, 'image chip shows a thumbnail');
  // "What the model will see" for the PDF.
  await page.locator('[data-testid=attachment-chip][data-name="report.pdf"] .chip-main').click();
  await page.waitForSelector('[data-testid=extraction-part]', { timeout: T });
  assert.match(await page.locator('[data-testid=extraction-viewer]').innerText(), /Quarterly aurora report/);
  await page.locator('[data-testid=close-viewer]').click();

  await send(page, 'Summarize these files');
  await waitAssistantStatus(page, 'complete', 30_000);
  // Sent message shows chips for documents and a thumbnail for the image.
  const sent = users(page).last();
  assert.equal(await sent.locator('[data-testid=message-attachment]').count(), 3);
  assert.equal(await sent.locator('[data-testid=message-thumbnail]').count(), 1);
  const body = await fake('/__last');
  const dump = JSON.stringify(body.messages);
  assert.match(dump, /Quarterly aurora report mentions pelican budget/, 'PDF text reached the model');
  assert.match(dump, /marigold migration plan/, 'DOCX text reached the model');
  assert.match(dump, /Saffron/, 'XLSX cells reached the model');
  assert.match(dump, /"image_url"/, 'the image was sent as an image part');
  assert.match(dump, /data:image\/(png|jpeg);base64,/);
  // The sheet opened from the sent message shows the table.
  await sent.locator('[data-testid=message-attachment]', { hasText: 'sales.xlsx' }).click();
  await page.waitForSelector('[data-testid=extraction-part]', { timeout: T });
  assert.match(await page.locator('[data-testid=extraction-viewer]').innerText(), /Saffron/);
});

test('unsupported and oversize files are refused before upload', async (t) => {
  const page = await open(t);
  await page.locator('[data-testid=file-input]').setInputFiles([path.join(FIX, 'archive.zip'), path.join(FIX, 'huge.txt')]);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=attachment-chip][data-state=failed]').length === 2, null, { timeout: T });
  const text = await page.locator('[data-testid=pending-attachments]').innerText();
  assert.match(text, /not supported/);
  assert.match(text, /the limit is 10\.0 MB/);
  assert.equal(await page.locator('[data-testid=send-button]').isDisabled(), true);
  // Drag-and-drop onto the composer works like the picker.
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped notes about lighthouses'], 'dropped.txt', { type: 'text/plain' }));
    return dt;
  });
  await page.dispatchEvent('[data-testid=composer]', 'dragover', { dataTransfer });
  await page.dispatchEvent('[data-testid=composer]', 'drop', { dataTransfer });
  await page.waitForSelector('[data-testid=attachment-chip][data-name="dropped.txt"][data-state=ready]', { timeout: T });
  const failedChips = page.locator('[data-testid=attachment-chip][data-state=failed]');
  while (await failedChips.count()) await failedChips.first().locator('[data-testid=remove-attachment]').click();
  assert.equal(await page.locator('[data-testid=attachment-chip]').count(), 1);
  await send(page, 'what is in the dropped file?');
  await waitAssistantStatus(page, 'complete');
  assert.match(JSON.stringify((await fake('/__last')).messages), /lighthouses/);
});

test('search finds an old message and opens it', async (t) => {
  const page = await open(t);
  await send(page, 'remember the word zanzibarquux for later');
  await waitAssistantStatus(page, 'complete');
  await send(page, 'and something else entirely');
  await waitAssistantStatus(page, 'complete');
  await page.locator('[data-testid=new-chat]').click();
  await send(page, 'a different conversation');
  await waitAssistantStatus(page, 'complete');
  await page.keyboard.press('Control+k');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'search-input');
  await page.keyboard.type('zanzibarquux');
  const hit = page.locator('[data-testid=search-result]').first();
  await hit.waitFor({ timeout: T });
  assert.match(await hit.locator('mark').first().innerText(), /zanzibarquux/i);
  await hit.click();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=message][data-role=user]')].some((m) => /zanzibarquux/.test(m.textContent)), null, { timeout: T });
  assert.equal(await users(page).count(), 2);
});

test('rename, pin and delete conversations', async (t) => {
  const page = await open(t);
  await send(page, 'conversation one');
  await waitAssistantStatus(page, 'complete');
  await page.locator('[data-testid=new-chat]').click();
  await send(page, 'conversation two');
  await waitAssistantStatus(page, 'complete');
  const items = page.locator('[data-testid=conversation-item]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=conversation-item]').length === 2);
  // rename the second in the list (the older one)
  const older = items.nth(1);
  const id = await older.getAttribute('data-id');
  await older.hover();
  await older.locator('[data-testid=rename-conversation]').click();
  await page.locator('[data-testid=rename-input]').fill('Renamed by test');
  await page.locator('[data-testid=rename-input]').press('Enter');
  await page.waitForFunction((i) => /Renamed by test/.test(document.querySelector(`[data-testid=conversation-item][data-id="${i}"]`)?.textContent || ''), id, { timeout: T });
  // pin it: pinned conversations come first
  await page.locator(`[data-testid=conversation-item][data-id="${id}"]`).hover();
  await page.locator(`[data-testid=conversation-item][data-id="${id}"] [data-testid=pin-conversation]`).click();
  await page.waitForFunction((i) => document.querySelector('[data-testid=conversation-item]')?.dataset.id === i, id, { timeout: T });
  await page.reload();
  await page.waitForFunction((i) => document.querySelector('[data-testid=conversation-item]')?.dataset.id === i, id, { timeout: T });
  assert.match(await items.first().innerText(), /Renamed by test/);
  // delete with confirmation
  await items.first().hover();
  await items.first().locator('[data-testid=delete-conversation]').click();
  await page.waitForSelector('[data-testid=confirm-dialog]');
  await page.locator('[data-testid=confirm-delete]').click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=conversation-item]').length === 1, null, { timeout: T });
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=conversation-item]').length === 1, null, { timeout: T });
  assert.doesNotMatch(await page.locator('[data-testid=conversation-list]').innerText(), /Renamed by test/);
});

test('refresh keeps the conversation', async (t) => {
  const page = await open(t);
  await send(page, 'keep me after refresh');
  await waitAssistantStatus(page, 'complete');
  const answer = await lastAssistantText(page);
  await page.reload();
  await waitAssistantStatus(page, 'complete');
  assert.equal(await lastAssistantText(page), answer);
  assert.match(await users(page).first().innerText(), /keep me after refresh/);
});

test('an answer keeps streaming through a page refresh and completes', async (t) => {
  const page = await open(t);
  const before = (await fake('/__stats')).cancelled;
  await send(page, 'SLOW and refresh');
  await page.waitForFunction(() => /word4/.test([...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop()?.textContent || ''), null, { timeout: T });
  await page.reload();
  // Sent with detach_on_disconnect: leaving the page does not stop the generation. The
  // page loads the conversation from the server, finds the answer STREAMING and
  // re-attaches from sequence 0, then follows it live.
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=message][data-role=user]').length === 1, null, { timeout: T });
  await page.waitForFunction(() => {
    const a = [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop();
    return a && a.dataset.status === 'streaming' && /word1 word2 word3 word4/.test(a.textContent);
  }, null, { timeout: T });
  const name = t.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  await page.screenshot({ path: path.join(OUT, `${name}-after-reload.png`) });
  // The live continuation after the reload: words not yet there before it, then the end.
  await page.waitForFunction(() => /word30/.test([...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop()?.textContent || ''), null, { timeout: T });
  await waitAssistantStatus(page, 'complete', 30_000);
  const text = await lastAssistantText(page);
  assert.match(text, /word1 word2 word3 word4/);
  assert.match(text, /word60/);
  assert.equal((text.match(/word1 /g) || []).length, 1, 'replayed text is not duplicated');
  assert.equal((text.match(/word60/g) || []).length, 1, 'no event applied twice');
  assert.match(await users(page).last().innerText(), /SLOW and refresh/);
  assert.equal((await fake('/__stats')).cancelled, before, 'the upstream call was not cancelled');
  // And it was stored complete: another refresh shows the whole answer.
  await page.reload();
  await waitAssistantStatus(page, 'complete');
  assert.equal(await lastAssistantText(page), text);
});

test('phone width: the sidebar is a drawer', async (t) => {
  const page = await open(t, { width: 390, height: 844 });
  const sidebar = page.locator('[data-testid=sidebar]');
  const box = await sidebar.boundingBox();
  assert.ok(box.x + box.width <= 1, `sidebar off-screen, got x=${box.x}`);
  await send(page, 'hi from a phone');
  await waitAssistantStatus(page, 'complete');
  await page.locator('[data-testid=drawer-toggle]').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=sidebar]').getBoundingClientRect().x >= 0, null, { timeout: 5000 });
  await page.waitForSelector('[data-testid=conversation-item]');
  await page.screenshot({ path: path.join(OUT, 'phone-drawer-open.png') });
  await page.locator('[data-testid=conversation-title]').first().click();
  await page.waitForFunction(() => document.querySelector('[data-testid=sidebar]').getBoundingClientRect().right <= 1, null, { timeout: 5000 });
  const composer = await page.locator('[data-testid=composer]').boundingBox();
  assert.ok(composer.width <= 390, 'composer fits the screen');
});

test('keyboard: Shift+Enter adds a newline, Enter sends', async (t) => {
  const page = await open(t);
  const input = page.locator('[data-testid=composer-input]');
  await input.click();
  await page.keyboard.type('line one');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('line two');
  assert.equal(await input.inputValue(), 'line one\nline two');
  assert.equal(await users(page).count(), 0);
  await page.keyboard.press('Enter');
  await waitAssistantStatus(page, 'complete');
  assert.match(await users(page).first().innerText(), /line one\s+line two/);
});

test('a failed model call shows a readable error and a retry button', async (t) => {
  const page = await open(t);
  await send(page, 'please FAIL now');
  await page.waitForSelector('[data-testid=message-error], [data-testid=error-banner]', { timeout: T });
  const errText = await page.locator('[data-testid=message-error], [data-testid=error-banner]').first().innerText();
  assert.match(errText, /model failed|went wrong|upstream|unavailable/i);
  const retry = page.locator('[data-testid=retry]');
  if (await retry.count()) assert.equal(await retry.isVisible(), true);
});

test('rate limited: the error says when to try again', async (t) => {
  const page = await open(t, { base: LIMITED });
  let seen = '';
  for (let i = 0; i < 4 && !seen; i++) {
    await send(page, `message number ${i}`);
    await page.waitForFunction(() => {
      const a = [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop();
      return document.querySelector('[data-testid=error-banner]') || (a && a.dataset.status !== 'streaming');
    }, null, { timeout: T });
    const banner = page.locator('[data-testid=error-banner], [data-testid=message-error]');
    if (await banner.count()) seen = await banner.first().innerText();
    await page.waitForSelector('[data-testid=send-button]', { timeout: T });
  }
  assert.match(seen, /try again in (\d+ s|a moment)/);
  if (await page.locator('[data-testid=error-banner]').count()) {
    // Refused before anything was stored: the text is back in the composer, not lost.
    assert.match(await page.locator('[data-testid=composer-input]').inputValue(), /message number/);
  }
});

test('model picker and per-conversation system prompt reach the model', async (t) => {
  const page = await open(t);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=model-picker] option').length > 0, null, { timeout: T });
  const models = await page.locator('[data-testid=model-picker] option').allInnerTexts();
  assert.ok(models.some((m) => /gpt-4o/.test(m)), `models: ${models}`);
  await page.locator('[data-testid=system-prompt-button]').click();
  await page.locator('[data-testid=system-prompt-input]').fill('You are a pirate. Always say arr.');
  await page.locator('[data-testid=system-prompt-save]').click();
  await send(page, 'hello with a system prompt');
  await waitAssistantStatus(page, 'complete');
  let body = await fake('/__last');
  assert.equal(body.model, 'gpt-4o');
  assert.match(JSON.stringify(body.messages[0]), /pirate/, 'system prompt sent first');
  // Change it for this (now existing) conversation; the next call uses the new one.
  await page.locator('[data-testid=system-prompt-button]').click();
  assert.match(await page.locator('[data-testid=system-prompt-input]').inputValue(), /pirate/);
  await page.locator('[data-testid=system-prompt-input]').fill('You are a poet.');
  await page.locator('[data-testid=system-prompt-save]').click();
  await page.waitForTimeout(300);
  await send(page, 'second message');
  await waitAssistantStatus(page, 'complete');
  body = await fake('/__last');
  assert.match(JSON.stringify(body.messages[0]), /poet/);
});

test('auto-scroll follows the stream and pauses when the user scrolls up', async (t) => {
  const page = await open(t, { width: 1000, height: 420 });
  await send(page, 'TABLE one');
  await waitAssistantStatus(page, 'complete');
  await send(page, 'SLOW long answer');
  await page.waitForFunction(() => /word3/.test([...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop()?.textContent || ''), null, { timeout: T });
  const atBottom = () => page.evaluate(() => {
    const m = document.getElementById('messages');
    return m.scrollHeight - m.scrollTop - m.clientHeight < 60;
  });
  assert.equal(await atBottom(), true, 'follows while streaming');
  await page.locator('[data-testid=messages]').hover();
  await page.mouse.wheel(0, -2000);
  await page.waitForSelector('[data-testid=jump-to-latest]', { timeout: 5000 });
  const top = await page.evaluate(() => document.getElementById('messages').scrollTop);
  await page.waitForTimeout(800); // more tokens arrive
  assert.equal(await page.evaluate(() => document.getElementById('messages').scrollTop), top, 'stays where the user scrolled');
  await page.locator('[data-testid=jump-to-latest]').click();
  await page.waitForTimeout(500);
  assert.equal(await atBottom(), true, 'follows again after "jump to latest"');
  await page.keyboard.press('Escape');
  await waitAssistantStatus(page, 'stopped');
});

test('sidebar: newest first with infinite scroll', async (t) => {
  const page = await open(t, { width: 1100, height: 600 });
  for (let i = 1; i <= 23; i++) {
    if (i > 1) await page.locator('[data-testid=new-chat]').click();
    await send(page, `QUICK conversation ${i}`);
    await waitAssistantStatus(page, 'complete');
  }
  await page.reload();
  const items = page.locator('[data-testid=conversation-item]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=conversation-item]').length === 20, null, { timeout: T });
  assert.match(await items.first().innerText(), /conversation 23/, 'newest first');
  // Scrolling to the end of the list loads the next page.
  await page.evaluate(() => {
    const l = document.getElementById('conv-list');
    l.scrollTop = l.scrollHeight;
    l.dispatchEvent(new Event('scroll'));
  });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=conversation-item]').length === 23, null, { timeout: T });
  assert.equal(await page.locator('[data-testid=load-more]').count(), 0, 'no more pages');
  assert.match(await items.last().innerText(), /conversation 1\b/, 'oldest last');
  const ids = await items.evaluateAll((els) => els.map((e) => e.dataset.id));
  assert.equal(new Set(ids).size, 23, 'no duplicates across pages');
});
