// Drive Converse.js in Debian's chromium with playwright-core: log in, chat with a
// peer, optionally upload a file, take a screenshot. One JSON line per step on stdout;
// the Python test (tests/e2e/test_converse.py) plays the peer and reads these lines.
//
// Input (JSON in argv[2]): { page, httpsPort, domain, peer, send, expect, upload?,
//   history?, screenshot, room? }.  With `room`, the page enters that group chat on
//   login (see converse.html) and the steps happen there instead of in a 1:1 chat.
//   Every wait is bounded by STEP_MS.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const STEP_MS = 15000;
const cfg = JSON.parse(process.argv[2]);
const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));
const stdin = readline.createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
const waitFor = async (word) => {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error(`stdin closed before "${word}"`);
    if (value.trim() === word) return;
  }
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  // The test CA is not in chromium's store; the page itself is plain HTTP on loopback.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || process.env.KITH_BROWSER_LOG) say('console', { type: m.type(), text: m.text() }); });
  page.on('pageerror', (e) => say('pageerror', { text: String(e) }));
  // XEP-0156 discovery asks https://DOMAIN/.well-known/host-meta (port 443); the test
  // server listens on an ephemeral port, so forward exactly that request to it.
  await page.route(`https://${cfg.domain}/.well-known/**`, async (route) => {
    const url = new URL(route.request().url());
    url.port = String(cfg.httpsPort);
    const response = await route.fetch({ url: url.toString() });
    say('host-meta', { url: url.toString(), status: response.status() });
    await route.fulfill({ response });
  });
  await page.goto(cfg.page);
  try {
  await page.waitForFunction(() => window.kith && window.kith.connected, null, { timeout: STEP_MS });
  say('connected');

  let textarea;
  if (cfg.room) {
    // The page enters the room by itself (auto_join_rooms).
    textarea = page.locator('converse-muc textarea.chat-textarea').first();
    await textarea.waitFor({ timeout: STEP_MS });
    say('room-open');
  } else {
    // The peer is in the roster: open the chat the way a person does, by clicking.
    await page.getByText(cfg.peer, { exact: true }).first().click({ timeout: STEP_MS });
    textarea = page.locator('converse-chat textarea.chat-textarea').first();
    await textarea.waitFor({ timeout: STEP_MS });
    say('chat-open');
  }
  if (cfg.history) {
    await page.getByText(cfg.history).first().waitFor({ timeout: STEP_MS });
    say('history', { text: cfg.history });
  }
  await textarea.fill(cfg.send);
  await textarea.press('Enter');
  say('sent', { text: cfg.send });
  await page.getByText(cfg.expect).first().waitFor({ timeout: STEP_MS });
  say('received', { text: cfg.expect });

  if (cfg.upload) {
    const input = page.locator('converse-chat input.fileupload').first();
    await input.setInputFiles({
      name: cfg.upload.name,
      mimeType: cfg.upload.type,
      buffer: Buffer.from(cfg.upload.base64, 'base64'),
    });
    say('uploading', { name: cfg.upload.name });
    await waitFor('downloaded');
  }
  await page.screenshot({ path: cfg.screenshot, fullPage: true });
  say('screenshot', { path: cfg.screenshot });
  } catch (e) {
    // Keep a picture of where it got stuck, next to the expected screenshot.
    const failed = cfg.screenshot.replace(/\.png$/, '-failed.png');
    await page.screenshot({ path: failed, fullPage: true }).catch(() => {});
    say('failed', { error: String(e), screenshot: failed });
    throw e;
  }
} finally {
  await browser.close();
  stdin.close();
}
