// The web client end to end in headless Chromium: the acceptance path of issue 18 and the
// page budget. Each test registers its own user.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, openPage, register, login, newChat, send, idle, lastAnswer, username, BASE, MODELS,
} from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('first load fits the budget: ≤ 300 KB transferred, interactive in ≤ 1 s', async () => {
  const page = await openPage(browser);
  const client = await page.context().newCDPSession(page);
  await client.send('Network.enable');
  let transferred = 0;
  client.on('Network.loadingFinished', (event) => {
    transferred += event.encodedDataLength;
  });
  await page.goto('/');
  await page.locator('#auth-username').waitFor();
  const interactive = await page.evaluate(() => performance.now());
  await page.waitForLoadState('networkidle');
  console.log(`first load: ${(transferred / 1024).toFixed(1)} KB transferred, interactive after ${interactive.toFixed(0)} ms`);
  assert.ok(transferred > 10_000, `only ${transferred} bytes: the page did not load its assets`);
  assert.ok(transferred <= 300 * 1024, `${transferred} bytes transferred`);
  assert.ok(interactive <= 1000, `interactive after ${interactive} ms`);
  const encoding = await page.evaluate(async () => {
    const entry = performance.getEntriesByType('resource').find((e) => e.name.includes('/assets/app.js'));
    return entry.encodedBodySize < entry.decodedBodySize;
  });
  assert.ok(encoding, 'app.js came compressed');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('register, stream, regenerate, switch branches, edit, reload, stop', async () => {
  const page = await openPage(browser);
  await register(page, username());
  // Tokens: the access token is never stored; the refresh token is an HttpOnly cookie.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + document.cookie);
  assert.ok(!/eyJ|art_/.test(stored), `a token is readable by scripts: ${stored}`);
  const cookies = await page.context().cookies();
  const refresh = cookies.find((c) => c.name === 'arbor_refresh');
  assert.ok(refresh?.httpOnly && refresh.sameSite === 'Strict' && refresh.path === '/api/v1/auth');

  await newChat(page, MODELS.slow, 'Branches');

  // A streamed answer appears incrementally: its text is seen growing several times.
  await send(page, 'first question');
  const answer = lastAnswer(page);
  await answer.locator('.message-body').filter({ hasText: 'word0' }).waitFor();
  const seen = new Set();
  for (let i = 0; i < 60 && !(await page.locator('.composer .send').isVisible()); i += 1) {
    seen.add((await answer.locator('.message-body').innerText()).length);
    await page.waitForTimeout(25);
  }
  await idle(page);
  const full = (await answer.locator('.message-body').innerText()).trim();
  assert.ok(seen.size >= 4, `only ${seen.size} distinct partial lengths seen`);
  assert.ok([...seen].every((n) => n <= full.length));
  assert.match(full, /^word0 word1 .* word39$/s);
  const firstAnswer = await answer.getAttribute('data-message');
  assert.match(await answer.locator('.usage').innerText(), /fake\/slow.*tok/);

  // Regenerate: a second answer, `2 / 2`.
  await answer.getByRole('button', { name: 'Regenerate' }).click();
  await idle(page);
  const second = await lastAnswer(page).getAttribute('data-message');
  assert.notEqual(second, firstAnswer);
  assert.equal(await lastAnswer(page).locator('.branch-position').innerText(), '2 / 2');

  // ‹ switches the visible branch back to the first answer, › forward again.
  await lastAnswer(page).getByRole('button', { name: 'Previous branch' }).click();
  await page.locator(`.message[data-message="${firstAnswer}"]`).waitFor();
  assert.equal(await lastAnswer(page).locator('.branch-position').innerText(), '1 / 2');
  await lastAnswer(page).getByRole('button', { name: 'Next branch' }).click();
  await page.locator(`.message[data-message="${second}"]`).waitFor();

  // Edit the question: a new sibling question with its own answer.
  const question = page.locator('.message.user').last();
  await question.getByRole('button', { name: 'Edit' }).click();
  await page.locator('.edit-input').fill('edited question');
  await page.getByRole('button', { name: 'Save & send' }).click();
  await idle(page);
  const edited = page.locator('.message.user').last();
  assert.equal(await edited.locator('.message-body').innerText(), 'edited question');
  assert.equal(await edited.locator('.branch-position').innerText(), '2 / 2');
  const editedAnswer = await lastAnswer(page).getAttribute('data-message');

  // The tree shows every branch: 2 questions, 3 answers.
  await page.getByRole('button', { name: 'Tree' }).click();
  assert.equal(await page.locator('.tree-node.user').count(), 2);
  assert.equal(await page.locator('.tree-node.assistant').count(), 3);

  // Reload keeps the selected branch.
  await page.reload();
  await page.locator(`.message[data-message="${editedAnswer}"]`).waitFor();
  assert.equal(await page.locator('.message.user').last().locator('.message-body').innerText(), 'edited question');

  // Jump through the tree to the first answer's branch.
  await page.getByRole('button', { name: 'Tree' }).click();
  await page.locator(`.tree-node[data-message="${firstAnswer}"]`).click();
  await page.locator(`.message[data-message="${firstAnswer}"]`).waitFor();
  assert.equal(await page.locator('.message.user').last().locator('.message-body').innerText(), 'first question');

  // Stop mid-stream keeps the partial answer, also after a reload.
  await newChat(page, MODELS.long, 'Stop');
  await send(page, 'a long one');
  await lastAnswer(page).locator('.message-body').filter({ hasText: 'word5' }).waitFor();
  await page.getByRole('button', { name: 'Stop' }).click();
  await idle(page);
  const stopped = lastAnswer(page);
  assert.equal(await stopped.getAttribute('data-status'), 'interrupted');
  assert.match(await stopped.locator('.message-status').innerText(), /Stopped/);
  const partial = (await stopped.locator('.message-body').innerText()).trim();
  assert.match(partial, /^word0 word1 word2 word3 word4 word5/);
  assert.ok(!partial.includes('word399'));
  await page.reload();
  assert.equal((await lastAnswer(page).locator('.message-body').innerText()).trim(), partial);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a reload during an answer re-attaches to it and sees it finish', async () => {
  const page = await openPage(browser);
  await register(page, username());
  await newChat(page, MODELS.reattach);
  await send(page, 'keep going');
  await lastAnswer(page).locator('.message-body').filter({ hasText: 'word3' }).waitFor();
  await page.reload();
  await page.getByText('Still answering — re-attached.').waitFor();
  await idle(page);
  const text = (await lastAnswer(page).locator('.message-body').innerText()).trim();
  assert.match(text, /^word0 word1 .* word79$/s);
  assert.equal(await lastAnswer(page).getAttribute('data-status'), 'complete');
  await page.context().close();
});

test('Markdown is rendered, code highlighted, and HTML in an answer is shown as text', async () => {
  const page = await openPage(browser);
  await register(page, username());
  await newChat(page, MODELS.markdown);
  await send(page, 'show me');
  await idle(page);
  const body = lastAnswer(page).locator('.message-body');
  assert.equal(await body.locator('strong').innerText(), 'bold');
  assert.equal(await body.locator('script, img').count(), 0);
  assert.match(await body.innerText(), /<script>pwned=1<\/script> <img src=x onerror=pwned=2>/);
  assert.ok((await body.locator('pre code.hljs .hljs-keyword').count()) >= 1, 'the code block is highlighted');
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  await page.context().close();
});

test('errors show the API user_message, with Retry when a retry can help', async () => {
  const page = await openPage(browser);
  const name = username();
  await register(page, name);
  await newChat(page, MODELS.down);
  await send(page, 'hello?');
  const notice = page.locator('#notice');
  await notice.waitFor();
  assert.match(await notice.innerText(), /provider|unavailable/i);
  await notice.getByRole('button', { name: 'Retry' }).waitFor();

  // A wrong password: the envelope's message, and no retry offered.
  await page.getByRole('button', { name: 'Log out' }).click();
  await login(page, name, 'wrong-password-1');
  await page.locator('#notice').filter({ hasText: 'incorrect username or password' }).waitFor();
  assert.equal(await page.locator('#notice').getByRole('button', { name: 'Retry' }).count(), 0);
  await page.context().close();
});

test('a Japanese browser gets the Japanese UI and Japanese error messages; the language can be switched', async () => {
  const page = await openPage(browser, { locale: 'ja-JP' });
  const name = username('ja');
  await page.goto('/');
  await page.getByRole('heading', { name: 'ログイン' }).waitFor();
  await register(page, name);
  await page.getByRole('button', { name: '+ 新しいチャット' }).waitFor();
  await newChat(page, 'fake/small');
  await send(page, 'こんにちは');
  await idle(page);
  await lastAnswer(page).getByRole('button', { name: '再生成' }).waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'ja');

  await page.getByRole('button', { name: 'ログアウト' }).click();
  await login(page, name, 'wrong-password-1');
  await page.locator('#notice').filter({ hasText: 'ユーザー名またはパスワード' }).waitFor();

  await login(page, name);
  await page.getByRole('button', { name: 'English' }).click();
  await page.getByRole('button', { name: '+ New chat' }).waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
  await page.context().close();
});

test('phone width: the chat list opens from the menu, and everything works by keyboard', async () => {
  const page = await openPage(browser, { viewport: { width: 390, height: 800 } });
  await register(page, username());
  const sidebar = page.locator('.sidebar');
  assert.ok(!(await sidebar.evaluate((el) => el.getBoundingClientRect().right > 0)), 'the list is off screen');
  await page.getByRole('button', { name: 'Menu' }).click();
  await page.waitForFunction(() => document.querySelector('.sidebar').getBoundingClientRect().left >= 0);

  // Keyboard only: Tab to "New chat", Enter, fill the dialog, Enter; type and Enter sends.
  await page.locator('.new-chat').focus();
  await page.keyboard.press('Enter');
  await page.locator('dialog[open] input[list]').fill('fake/small');
  await page.keyboard.press('Enter');
  await page.waitForURL(/#\/c\//);
  await page.locator('.composer-input').focus();
  await page.keyboard.type('typed by keyboard');
  await page.keyboard.press('Enter');
  await idle(page);
  assert.match(await lastAnswer(page).locator('.message-body').innerText(), /word0/);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  await page.context().close();
});

test('the chat list searches titles and scrolls to more pages', async () => {
  const page = await openPage(browser);
  await register(page, username());
  // 35 chats (more than one page of 30), made through the UI's own API with its token.
  await page.evaluate(async () => {
    const token = await fetch('/api/v1/auth/refresh', {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Arbor-Refresh-Cookie': '1' }, body: '{}',
    }).then((r) => r.json());
    for (let i = 0; i < 35; i += 1) {
      await fetch('/api/v1/chats', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token.access_token}` },
        body: JSON.stringify({ title: i === 7 ? 'Needle in the list' : `Chat number ${i}` }),
      });
    }
  });
  await page.reload();
  await page.locator('.chat-link').first().waitFor();
  assert.equal(await page.locator('.chat-link').count(), 30, 'one page first');
  await page.locator('.chat-list-box').evaluate((box) => box.scrollTo(0, box.scrollHeight));
  await page.waitForFunction(() => document.querySelectorAll('.chat-link').length === 35);
  await page.locator('.load-more').waitFor({ state: 'hidden' });
  await page.locator('.search').fill('needle');
  await page.waitForFunction(() => document.querySelectorAll('.chat-link').length === 1);
  assert.equal(await page.locator('.chat-title').innerText(), 'Needle in the list');
  assert.ok(BASE.startsWith('http://127.0.0.1:'));
  await page.context().close();
});

test('templates fill their variables into the composer; presets, settings and usage dialogs work', async () => {
  const page = await openPage(browser);
  await register(page, username());
  await newChat(page, 'fake/small');

  // A template with a variable, made and used from the composer's Templates dialog.
  await page.getByRole('button', { name: 'Templates' }).click();
  const dialog = page.locator('dialog[open]');
  await dialog.getByRole('button', { name: 'New template' }).click();
  await dialog.getByLabel('Name').fill('Translate');
  await dialog.getByLabel('Content').fill('Translate into {{language}}: ');
  await dialog.getByRole('button', { name: 'Create' }).click();
  await dialog.getByRole('button', { name: /Translate/ }).click();
  await dialog.getByLabel('language').fill('Japanese');
  await dialog.getByRole('button', { name: 'Insert' }).click();
  await page.locator('dialog[open]').waitFor({ state: 'detached' });
  assert.equal(await page.locator('.composer-input').inputValue(), 'Translate into Japanese: ');
  await page.locator('.composer-input').press('Enter');
  await idle(page);

  // A preset, listed after it is made.
  await page.getByRole('button', { name: 'Presets', exact: true }).click();
  await dialog.getByRole('button', { name: 'New preset' }).click();
  await dialog.getByLabel('Name').fill('Careful');
  await dialog.getByLabel('Temperature').fill('0.2');
  await dialog.getByRole('button', { name: 'Create' }).click();
  await dialog.getByText('Careful').waitFor();
  assert.match(await dialog.innerText(), /T=0\.2/);
  await page.keyboard.press('Escape');

  // The default model is saved.
  await page.getByRole('button', { name: 'Settings', exact: true }).click();
  await dialog.getByLabel('Default model').fill('fake/large');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await page.locator('#notice').filter({ hasText: 'Saved.' }).waitFor();
  await page.getByRole('button', { name: 'Settings', exact: true }).click();
  assert.equal(await dialog.getByLabel('Default model').inputValue(), 'fake/large');
  await page.keyboard.press('Escape');

  // Usage counts the one answer.
  await page.getByRole('button', { name: 'Usage', exact: true }).click();
  const row = dialog.locator('tbody tr').filter({ hasText: 'fake/small' });
  await row.waitFor();
  assert.match(await row.innerText(), /^fake\/small\s+1 \(100\.00%\)/);
  await page.context().close();
});
