// One place for errors and short confirmations: the API's user_message, with a Retry button
// when the API says a retry can succeed.

import { h, replace, $ } from './dom.js';
import { t } from './i18n.js';

let timer = null;

/** Shows `error` (an ApiError or any Error); `retry` is offered when the error allows it. */
export function showError(error, retry) {
  const text = error?.message || t('error');
  const canRetry = retry && (error?.retryAvailable ?? false);
  show(
    'error',
    h('span', { class: 'notice-text' }, text),
    canRetry &&
      h('button', {
        type: 'button',
        class: 'button small',
        onclick: () => {
          clear();
          retry();
        },
      }, t('retry')),
  );
}

export function showInfo(text) {
  show('info', h('span', { class: 'notice-text' }, text));
  timer = setTimeout(clear, 3000);
}

function show(kind, ...children) {
  clearTimeout(timer);
  const box = $('#notice');
  box.className = `notice ${kind}`;
  replace(
    box,
    ...children,
    h('button', { type: 'button', class: 'icon-button', 'aria-label': t('close'), onclick: clear }, '×'),
  );
  box.hidden = false;
}

export function clear() {
  clearTimeout(timer);
  const box = $('#notice');
  if (box) {
    box.hidden = true;
    box.replaceChildren();
  }
}
