// The chat list: search by title and infinite scroll over the list API's cursor.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { t } from './i18n.js';
import { showError } from './notice.js';
import { plainLine } from './tree.js';

const PAGE = 30;

export class ChatList {
  constructor(onOpen) {
    this.onOpen = onOpen;
    this.query = '';
    this.cursor = '';
    this.loading = false;
    this.selected = null;
    this.list = h('ul', { class: 'chat-list', 'aria-label': t('app_name') });
    this.more = h('button', { type: 'button', class: 'link-button load-more', hidden: true, onclick: () => this.next() }, t('load_more'));
    this.empty = h('p', { class: 'muted empty', hidden: true }, t('no_chats'));
    let debounce = null;
    this.search = h('input', {
      type: 'search',
      class: 'search',
      placeholder: t('search_chats'),
      'aria-label': t('search_chats'),
      maxLength: 200,
      oninput: () => {
        clearTimeout(debounce);
        debounce = setTimeout(() => this.reload(), 250);
      },
    });
    this.element = h('div', { class: 'chat-list-box' }, this.search, this.list, this.empty, this.more);
    // Infinite scroll: the "load more" button coming into view loads the next page.
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.next();
    });
    this.observer.observe(this.more);
  }

  async reload() {
    const q = this.search.value.trim();
    this.query = q.length >= 2 ? q : '';
    this.cursor = '';
    this.list.replaceChildren();
    await this.next();
  }

  async next() {
    if (this.loading || this.cursor === null) return;
    this.loading = true;
    try {
      const params = new URLSearchParams({ limit: String(PAGE), cursor: this.cursor });
      if (this.query) params.set('q', this.query);
      const page = await api.get(`/chats?${params}`);
      for (const chat of page.items) this.list.append(this.item(chat));
      this.cursor = page.next_cursor;
      this.more.hidden = this.cursor === null;
      this.empty.hidden = this.list.children.length > 0;
    } catch (error) {
      showError(error, () => this.next());
    } finally {
      this.loading = false;
    }
  }

  item(chat) {
    return h(
      'li',
      {},
      h(
        'a',
        {
          href: `#/c/${chat.uuid}`,
          class: 'chat-link',
          dataset: { chat: chat.uuid },
          'aria-current': chat.uuid === this.selected ? 'page' : null,
          onclick: () => this.onOpen?.(),
        },
        h('span', { class: 'chat-title' }, chat.title),
        h('span', { class: 'chat-preview muted' }, plainLine(chat.preview)),
      ),
    );
  }

  /** Marks `id` as the open chat. */
  select(id) {
    this.selected = id;
    for (const link of this.list.querySelectorAll('.chat-link')) {
      if (link.dataset.chat === id) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  /** Updates one chat's title in place (after a rename or an automatic title). */
  retitle(id, title) {
    const link = this.list.querySelector(`.chat-link[data-chat="${CSS.escape(id)}"] .chat-title`);
    if (link) replace(link, title);
  }
}
