// Test support for the browser tests: Debian's Chromium through playwright-core, and the
// steps every scenario takes through the UI (never through the API behind its back).

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

/** Scripted fake-provider models the tests pick; tests/scripts/browser.sh adds them to its catalogue. */
export const MODELS = JSON.parse(readFileSync(new URL('./models.json', import.meta.url), 'utf8'));

export const BASE = process.env.ARBOR_URL;
assert.ok(BASE, 'ARBOR_URL must point at a running Arbor (tests/scripts/browser.sh starts one)');

/** A headless Chromium; closed by `browser.close()`. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // The machine's network is closed: no background connections, no component updates.
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

let counter = 0;
/** A fresh user name for this run. */
export function username(prefix = 'web') {
  counter += 1;
  return `${prefix}${Date.now().toString(36)}${counter}`;
}

/** A page in a fresh context; page errors fail the test. */
export async function openPage(browser, { locale = 'en-US', viewport = { width: 1280, height: 860 }, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ locale, viewport, colorScheme, baseURL: BASE });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  page.errors = errors;
  return page;
}

export async function register(page, name, password = 'correct-horse-9') {
  await page.goto('/');
  await page.getByRole('button', { name: /New here|初めての方/ }).click();
  await page.locator('#auth-username').fill(name);
  await page.locator('#auth-password').fill(password);
  await page.locator('.auth-form button[type=submit]').click();
  await page.locator('.sidebar').waitFor();
}

export async function login(page, name, password = 'correct-horse-9') {
  await page.goto('/');
  await page.locator('#auth-username').fill(name);
  await page.locator('#auth-password').fill(password);
  await page.locator('.auth-form button[type=submit]').click();
}

/** New chat from the sidebar with `model`; resolves to the chat's uuid. */
export async function newChat(page, model, title) {
  await page.locator('.new-chat').click();
  const dialog = page.locator('dialog[open]');
  if (title) await dialog.locator('input').first().fill(title);
  await dialog.locator('input[list]').fill(model);
  await dialog.locator('button[type=submit]').click();
  await page.waitForURL(/#\/c\/[0-9a-f-]{36}$/);
  await page.locator('.composer-input').waitFor();
  return page.url().split('/c/')[1];
}

/** Types `text` in the composer and sends it with Enter. */
export async function send(page, text) {
  await page.locator('.composer-input').fill(text);
  await page.locator('.composer-input').press('Enter');
}

/** Waits until no generation runs in the open chat (the Send button is back). */
export async function idle(page, timeout = 20_000) {
  await page.locator('.composer .send').waitFor({ state: 'visible', timeout });
  await page.locator('.message[data-status="streaming"]').waitFor({ state: 'detached', timeout });
}

export function lastAnswer(page) {
  return page.locator('.message.assistant').last();
}
