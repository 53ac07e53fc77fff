// Drives the link page in headless Chromium for tests/it/link_page.rs, over a line protocol:
// one JSON command a line on stdin, one JSON answer a line on stdout, in order.
//
//   (at start)                                   → {"ok":true,"ready":true,"browser":"150.…"}
//   {"open": url}                                → {"ok":true,"status":200}
//   {"wait_visible": selector, "timeout_ms": n}  → {"ok":true}
//   {"wait_image": selector, "timeout_ms": n}    → {"ok":true,"width":512,"height":512}
//   {"text": selector}                           → {"ok":true,"text":"…"}
//   {"attribute": selector, "name": name}        → {"ok":true,"value":"…"|null}
//   {"fill": selector, "value": v}               → {"ok":true}
//   {"click": selector}                          → {"ok":true}
//   {"screenshot": path}                         → {"ok":true,"path":"/abs/path.png"}
//   {"report": true}                             → {"ok":true,"requests":[…],"console_errors":[…],
//                                                   "page_errors":[…]}
//
// A command that fails answers {"ok":false,"error":"…"}. The end of stdin closes the browser.
// The browser is the system's (CHROMIUM, default /usr/bin/chromium); playwright-core downloads
// none. The page is a phone's: 390×844 CSS pixels at device scale 2.

import { createInterface } from 'node:readline';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const DEFAULT_TIMEOUT_MS = 10_000;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // The tests run as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox'],
});
const context = await browser.newContext({
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  locale: 'en-US',
});
const page = await context.newPage();

// What the page did, for `report`.
const requests = [];
const consoleErrors = [];
const pageErrors = [];
page.on('request', (request) => {
  requests.push({ method: request.method(), url: request.url(), type: request.resourceType() });
});
page.on('console', (message) => {
  if (message.type() === 'error') {
    consoleErrors.push({ text: message.text(), url: message.location().url });
  }
});
page.on('pageerror', (error) => pageErrors.push(String(error.stack || error)));

const timeout = (command) => command.timeout_ms ?? DEFAULT_TIMEOUT_MS;

async function run(command) {
  if ('open' in command) {
    const response = await page.goto(command.open, { waitUntil: 'load', timeout: timeout(command) });
    return { status: response ? response.status() : null };
  }
  if ('wait_visible' in command) {
    await page.locator(command.wait_visible).waitFor({ state: 'visible', timeout: timeout(command) });
    return {};
  }
  if ('wait_image' in command) {
    const image = page.locator(command.wait_image);
    await image.waitFor({ state: 'visible', timeout: timeout(command) });
    const size = await page.waitForFunction(
      (element) => element.complete && element.naturalWidth > 0
        && { width: element.naturalWidth, height: element.naturalHeight },
      await image.elementHandle(),
      { timeout: timeout(command) },
    );
    return await size.jsonValue();
  }
  if ('text' in command) {
    return { text: await page.locator(command.text).innerText({ timeout: timeout(command) }) };
  }
  if ('attribute' in command) {
    const value = await page.locator(command.attribute)
      .getAttribute(command.name, { timeout: timeout(command) });
    return { value };
  }
  if ('fill' in command) {
    await page.locator(command.fill).fill(command.value, { timeout: timeout(command) });
    return {};
  }
  if ('click' in command) {
    await page.locator(command.click).click({ timeout: timeout(command) });
    return {};
  }
  if ('screenshot' in command) {
    const path = resolve(command.screenshot);
    await page.screenshot({ path, fullPage: true });
    return { path };
  }
  if ('report' in command) {
    return { requests, console_errors: consoleErrors, page_errors: pageErrors };
  }
  throw new Error(`unknown command: ${JSON.stringify(command)}`);
}

const answer = (value) => process.stdout.write(JSON.stringify(value) + '\n');

answer({ ok: true, ready: true, browser: browser.version() });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) {
    continue;
  }
  try {
    answer({ ok: true, ...(await run(JSON.parse(line))) });
  } catch (error) {
    answer({ ok: false, error: String(error && error.message ? error.message : error) });
  }
}
await browser.close();
