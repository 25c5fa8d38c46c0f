// Arbor's web client: boot, the shell (sidebar + main) and hash routes
// (#/ = start, #/c/<uuid> = a chat).

import * as api from './api.js';
import { renderAuth } from './auth.js';
import { ChatView } from './chat.js';
import { openNewChat, openPresets, openSettings, openUsage } from './dialogs.js';
import { h, replace, $ } from './dom.js';
import { lang, setLang, t } from './i18n.js';
import { showError } from './notice.js';
import { ChatList } from './sidebar.js';

const THEME_KEY = 'arbor.theme';
const root = $('#app');

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function currentTheme() {
  return document.documentElement.dataset.theme
    || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
}

applyTheme(localStorage.getItem(THEME_KEY));

class App {
  constructor() {
    this.view = null;
    this.chatList = null;
  }

  async start() {
    api.whenSignedOut(() => this.signIn());
    if (await api.refresh()) this.shell();
    else this.signIn();
  }

  signIn() {
    this.view?.close();
    this.view = null;
    renderAuth(root, () => this.shell());
  }

  shell() {
    this.chatList = new ChatList(() => document.body.classList.remove('menu-open'));
    const sidebar = h(
      'aside',
      { class: 'sidebar', id: 'sidebar', 'aria-label': t('menu') },
      h('div', { class: 'brand' }, h('img', { src: '/assets/icon.svg', alt: '', width: 24, height: 24 }), h('span', {}, t('app_name'))),
      h('button', { type: 'button', class: 'button primary new-chat', onclick: () => this.newChat() }, `+ ${t('new_chat')}`),
      this.chatList.element,
      h('nav', { class: 'sidebar-footer', 'aria-label': t('settings') },
        h('button', { type: 'button', class: 'link-button', onclick: () => openPresets() }, t('presets')),
        h('button', { type: 'button', class: 'link-button', onclick: () => openSettings() }, t('settings')),
        h('button', { type: 'button', class: 'link-button', onclick: () => openUsage() }, t('usage')),
        h('button', { type: 'button', class: 'link-button', lang: lang() === 'ja' ? 'en' : 'ja', onclick: () => this.switchLanguage() }, t('language')),
        h('button', { type: 'button', class: 'link-button', onclick: () => this.switchTheme() },
          currentTheme() === 'dark' ? t('theme_light') : t('theme_dark')),
        h('button', { type: 'button', class: 'link-button', onclick: () => this.logout() }, t('logout')),
      ),
    );
    this.main = h('main', { class: 'main', id: 'main' });
    replace(
      root,
      h('div', { class: 'shell' },
        h('button', {
          type: 'button',
          class: 'button small menu-toggle',
          'aria-controls': 'sidebar',
          onclick: () => document.body.classList.toggle('menu-open'),
        }, t('menu')),
        sidebar,
        this.main,
      ),
    );
    this.chatList.reload();
    this.route();
  }

  async route() {
    if (!this.main) return;
    this.view?.close();
    this.view = null;
    const match = /^#\/c\/([0-9a-f-]{36})$/.exec(location.hash);
    if (!match) {
      document.title = 'Arbor';
      this.chatList.select(null);
      replace(this.main, h('div', { class: 'placeholder' }, h('p', { class: 'muted' }, t('select_chat'))));
      return;
    }
    const view = new ChatView(this, match[1]);
    this.view = view;
    this.chatList.select(match[1]);
    replace(this.main, view.element);
    try {
      await view.load();
    } catch (error) {
      if (this.view === view) showError(error, () => this.route());
    }
  }

  newChat() {
    openNewChat((chat) => {
      this.chatList.reload();
      location.hash = `#/c/${chat.uuid}`;
      document.body.classList.remove('menu-open');
    });
  }

  /** An answer ended: the list's order and the automatic title may have changed. */
  afterAnswer(chatId) {
    this.chatList.reload().then(() => this.chatList.select(chatId));
    // The automatic title arrives a moment after the first answer.
    setTimeout(async () => {
      try {
        const chat = await api.get(`/chats/${chatId}`);
        this.chatList.retitle(chatId, chat.title);
        if (this.view?.id === chatId && this.view.chat) {
          this.view.chat.title = chat.title;
          replace(this.view.title, chat.title);
        }
      } catch {
        // the chat may be gone
      }
    }, 3000);
  }

  switchLanguage() {
    setLang(lang() === 'ja' ? 'en' : 'ja');
    this.shell();
  }

  switchTheme() {
    const next = currentTheme() === 'dark' ? 'light' : 'dark';
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
    this.shell();
  }

  async logout() {
    await api.logout();
    this.main = null;
    this.signIn();
  }
}

const app = new App();
window.addEventListener('hashchange', () => app.route());
app.start();
