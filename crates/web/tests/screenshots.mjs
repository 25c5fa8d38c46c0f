// Screenshots of the main views for the README (make screenshots): desktop and phone
// width, light and dark, English and Japanese. Usage: node screenshots.mjs OUT_DIR
// (tests/scripts/browser.sh screenshots starts the servers).

import { join } from 'node:path';
import { launch, openPage, register, newChat, send, idle, lastAnswer, username, MODELS } from './support.mjs';

const out = process.argv[2];
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(out, `${name}.png`) });

// Sign-in page.
let page = await openPage(browser);
await page.goto('/');
await page.locator('#auth-username').waitFor();
await shot(page, 'login');

// A chat with two answers to one question and the tree open.
const name = username('demo');
await register(page, name);
await newChat(page, MODELS.demo, 'Branching demo');
await send(page, 'How do I keep every branch?');
await idle(page);
await lastAnswer(page).getByRole('button', { name: 'Regenerate' }).click();
await idle(page);
await send(page, 'And a follow-up question');
await idle(page);
await page.getByRole('button', { name: 'Tree' }).click();
await shot(page, 'desktop-chat');
// Refresh tokens rotate: each context hands the current cookie on to the next.
let state = await page.context().storageState();
await page.context().close();

// The same chat in dark mode, in Japanese.
page = await openPage(browser, { locale: 'ja-JP', colorScheme: 'dark' });
await page.context().addCookies(state.cookies);
await page.goto('/');
await page.locator('.chat-link').first().click();
await page.locator('.message.assistant').first().waitFor();
await shot(page, 'desktop-dark-ja');
state = await page.context().storageState();
await page.context().close();

// Phone width: the chat, and the menu open.
page = await openPage(browser, { viewport: { width: 390, height: 844 } });
await page.context().addCookies(state.cookies);
await page.goto('/');
await page.getByRole('button', { name: 'Menu' }).click();
await page.locator('.chat-link').first().waitFor();
await page.waitForTimeout(300);
await shot(page, 'phone-menu');
await page.locator('.chat-link').first().click();
await page.locator('.message.assistant').first().waitFor();
await page.waitForTimeout(300);
await shot(page, 'phone-chat');
await browser.close();
console.log(`screenshots written to ${out}`);
