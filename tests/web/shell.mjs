// The web shell in Debian's chromium, driven by playwright-core as a person would:
// by role and accessible name (a field labelled "Address", one labelled "Password", a
// button "Sign in"). One scenario per run; one JSON line per step on stdout, the last
// `{"step":"done"}`; any failure exits non-zero with the reason on stderr.
//
//   node shell.mjs SCENARIO '{"url":"https://localhost:PORT","user":"alice@localhost",
//                             "password":"…","profile":"/tmp/dir","shots":"/tmp/dir"}'
//
// Scenarios: sign-in-out, wrong-password, remember, everywhere, language, keyboard,
// screenshots. Every wait is bounded by STEP_MS.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const STEP_MS = 15000;
const [scenario, cfgText] = process.argv.slice(2);
const cfg = JSON.parse(cfgText);
const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));
const fail = (why) => { throw new Error(why); };
const launchArgs = {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu'],
};
// The test CA is not in chromium's store: accept the box's certificate, as a household
// member does once for a self-signed box.
const contextArgs = (extra = {}) => ({ ignoreHTTPSErrors: true, locale: 'en-GB', ...extra });

/** Watch a page for script errors and CSP violations: each fails the scenario. */
function guard(page, problems) {
  page.on('pageerror', (e) => problems.push(`pageerror: ${e}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
}

async function signIn(page, { remember = false, user = cfg.user, password = cfg.password } = {}) {
  await page.goto(cfg.url + '/');
  await page.getByLabel('Address').fill(user);
  await page.getByLabel('Password', { exact: true }).fill(password);
  if (remember) await page.getByLabel('Remember this browser').check();
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function expectHome(page) {
  await page.getByRole('heading', { name: 'Home' }).waitFor({ timeout: STEP_MS });
  const text = await page.locator('main').innerText();
  if (!text.includes(cfg.user)) fail(`home page does not name ${cfg.user}: ${text}`);
}

async function expectSignIn(page) {
  await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: STEP_MS });
}

const scenarios = {
  // Sign in, see the home page over HTTP/2 with the script running under the CSP,
  // sign out.
  async 'sign-in-out'(browser) {
    const context = await browser.newContext(contextArgs());
    const page = await context.newPage();
    const problems = [];
    guard(page, problems);
    await signIn(page);
    await expectHome(page);
    const protocol = await page.evaluate(
      () => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    say('signed-in', { protocol });
    if (protocol !== 'h2') fail(`the page came over ${protocol}, not h2`);
    // The bundled script ran (htmx loaded as an ES module from /assets/).
    await page.waitForFunction(() => window.htmx && window.htmx.version, null, { timeout: STEP_MS });
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '__Host-kith-session');
    if (!session) fail('no session cookie');
    say('cookie', { httpOnly: session.httpOnly, secure: session.secure, sameSite: session.sameSite,
                    expires: session.expires });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expectSignIn(page);
    await page.getByText('You are signed out.').waitFor({ timeout: STEP_MS });
    say('signed-out');
    if (problems.length) fail(problems.join('\n'));
  },

  // Wrong passwords are refused with words next to the form; after the login limit,
  // even the right password waits (the same limit as XMPP logins).
  async 'wrong-password'(browser) {
    const context = await browser.newContext(contextArgs());
    const page = await context.newPage();
    const seen = [];
    for (let i = 0; i < cfg.attempts; i++) {
      await signIn(page, { password: 'not the password' });
      const alert = page.getByRole('alert');
      await alert.waitFor({ timeout: STEP_MS });
      seen.push(await alert.innerText());
    }
    say('wrong', { seen });
    await signIn(page);
    const alert = page.getByRole('alert');
    await alert.waitFor({ timeout: STEP_MS });
    say('right-after-limit', { text: await alert.innerText() });
  },

  // "Remember this browser" survives a browser restart; without it, a restart signs out.
  async remember() {
    const run = async (dir, remember) => {
      let ctx = await chromium.launchPersistentContext(dir, { ...launchArgs, ...contextArgs() });
      let page = ctx.pages()[0] || await ctx.newPage();
      await signIn(page, { remember });
      await expectHome(page);
      await ctx.close();
      ctx = await chromium.launchPersistentContext(dir, { ...launchArgs, ...contextArgs() });
      page = ctx.pages()[0] || await ctx.newPage();
      await page.goto(cfg.url + '/');
      const home = await page.getByRole('heading', { name: 'Home' }).isVisible()
        || await page.getByRole('heading', { name: 'Home' })
          .waitFor({ timeout: 2000 }).then(() => true, () => false);
      await ctx.close();
      return home;
    };
    const remembered = await run(cfg.profile + '/remembered', true);
    const forgotten = await run(cfg.profile + '/forgotten', false);
    say('restarted', { remembered, forgotten });
    if (!remembered) fail('a remembered browser was signed out by a restart');
    if (forgotten) fail('a browser that was not remembered stayed signed in after a restart');
  },

  // Browser A watches its list of browsers; B signs in (A's list grows, live, over the
  // event stream) and signs out everywhere (A is sent to the sign-in page, live).
  async everywhere(browser) {
    const a = await (await browser.newContext(contextArgs())).newPage();
    const problems = [];
    guard(a, problems);
    await signIn(a);
    await expectHome(a);
    await a.getByRole('link', { name: 'Your browsers' }).first().click();
    await a.getByRole('heading', { name: 'Your browsers' }).waitFor({ timeout: STEP_MS });
    const rowsA = () => a.locator('#browsers-list > li').count();
    const before = await rowsA();
    say('a-list', { rows: before });
    // A's event stream is open before B signs in.
    await a.waitForFunction(() => document.documentElement.dataset.live === 'open', null,
      { timeout: STEP_MS });
    const b = await (await browser.newContext(contextArgs({ viewport: { width: 400, height: 800 } }))).newPage();
    await signIn(b);
    await expectHome(b);
    await a.waitForFunction((n) => document.querySelectorAll('#browsers-list > li').length === n,
      before + 1, { timeout: STEP_MS });
    say('a-list-live', { rows: await rowsA() });
    await b.getByRole('link', { name: 'Your browsers' }).first().click();
    await b.getByRole('button', { name: 'Sign out everywhere' }).click();
    await expectSignIn(b);
    await b.getByText('You are signed out on every browser.').waitFor({ timeout: STEP_MS });
    say('b-signed-out-everywhere');
    // A follows by itself (the `signed-out` event), and a reload stays signed out.
    await expectSignIn(a);
    say('a-sent-to-sign-in', { url: a.url() });
    await a.goto(cfg.url + '/browsers');
    await expectSignIn(a);
    say('a-signed-out');
    if (problems.length) fail(problems.join('\n'));
  },

  // The second language: picked from the menu by its label, or the browser's own.
  async language(browser) {
    const page = await (await browser.newContext(contextArgs())).newPage();
    await page.goto(cfg.url + '/');
    await page.getByLabel('Language').selectOption('de');
    await page.getByRole('button', { name: 'Change' }).click();
    await page.getByRole('heading', { name: 'Anmelden' }).waitFor({ timeout: STEP_MS });
    await page.getByLabel('Adresse').fill(cfg.user);
    await page.getByLabel('Passwort', { exact: true }).fill(cfg.password);
    await page.getByRole('button', { name: 'Anmelden' }).click();
    await page.getByRole('heading', { name: 'Start' }).waitFor({ timeout: STEP_MS });
    const lang = await page.locator('html').getAttribute('lang');
    say('german', { lang });
    if (lang !== 'de') fail(`html lang is ${lang}`);
    const de = await (await browser.newContext(contextArgs({ locale: 'de-DE' }))).newPage();
    await de.goto(cfg.url + '/');
    await de.getByRole('heading', { name: 'Anmelden' }).waitFor({ timeout: STEP_MS });
    say('accept-language');
  },

  // Sign in with the keyboard alone: Tab to each control, focus always visible.
  async keyboard(browser) {
    const page = await (await browser.newContext(contextArgs())).newPage();
    await page.goto(cfg.url + '/');
    const focused = () => page.evaluate(() => {
      const el = document.activeElement;
      const style = getComputedStyle(el);
      return { id: el.id, tag: el.tagName, text: (el.innerText || '').trim(),
               outline: style.outlineStyle, width: style.outlineWidth };
    });
    const order = [];
    const tabTo = async (want) => {
      for (let i = 0; i < 12; i++) {
        await page.keyboard.press('Tab');
        const f = await focused();
        order.push(f.id || f.text || f.tag);
        if (f.outline === 'none' || f.width === '0px') fail(`no visible focus on ${JSON.stringify(f)}`);
        if (want(f)) return f;
      }
      fail(`never reached the control; focus went ${order.join(' → ')}`);
    };
    await tabTo((f) => f.id === 'address');
    await page.keyboard.type(cfg.user);
    await tabTo((f) => f.id === 'password');
    await page.keyboard.type(cfg.password);
    await tabTo((f) => f.id === 'remember');
    await page.keyboard.press('Space');
    await tabTo((f) => f.tag === 'BUTTON' && f.text === 'Sign in');
    await page.keyboard.press('Enter');
    await expectHome(page);
    say('signed-in', { order });
  },

  // Phone and desktop, light and dark: the sign-in page, an error, the home page and
  // the browsers list.
  async screenshots(browser) {
    mkdirSync(cfg.shots, { recursive: true });
    const sizes = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 800 } };
    for (const [size, viewport] of Object.entries(sizes)) {
      for (const colorScheme of ['light', 'dark']) {
        const ctx = await browser.newContext(contextArgs({
          viewport, colorScheme, isMobile: size === 'phone', hasTouch: size === 'phone',
          deviceScaleFactor: size === 'phone' ? 2 : 1 }));
        const page = await ctx.newPage();
        const shot = async (name) => {
          const path = `${cfg.shots}/${name}-${size}-${colorScheme}.png`;
          await page.screenshot({ path, fullPage: true });
          say('shot', { path });
        };
        await page.goto(cfg.url + '/');
        await shot('sign-in');
        await signIn(page, { password: 'not the password' });
        await page.getByRole('alert').waitFor({ timeout: STEP_MS });
        await shot('sign-in-error');
        await signIn(page);
        await expectHome(page);
        await page.getByRole('link', { name: 'Your browsers' }).first().click();
        await page.getByRole('heading', { name: 'Your browsers' }).waitFor({ timeout: STEP_MS });
        await shot('browsers');
        await ctx.close();
      }
    }
  },
};

const run = scenarios[scenario] || fail(`no scenario ${scenario}`);
const browser = scenario === 'remember' ? null : await chromium.launch(launchArgs);
try {
  await run(browser);
  say('done');
} catch (e) {
  console.error(String(e && e.stack || e));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
