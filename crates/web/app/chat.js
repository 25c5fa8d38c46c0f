// The conversation view: the current branch of one chat, streaming answers, stop,
// regenerate, edit, branch navigation (‹ 2 / 3 ›), the tree panel and re-attach.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { t } from './i18n.js';
import { renderMarkdown } from './markdown.js';
import { showError, clear } from './notice.js';
import { Tree, plainLine } from './tree.js';
import { openChatSettings, openTemplates } from './dialogs.js';

export class ChatView {
  constructor(app, chatId) {
    this.app = app;
    this.id = chatId;
    this.tree = null;
    this.chat = null;
    this.busy = false; // a generation of ours runs in this chat
    this.live = null; // {messageId, text, note} of the answer being streamed
    this.controller = null;
    this.editing = null;
    this.treeOpen = false;
    this.messages = h('div', { class: 'messages', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions' });
    this.input = h('textarea', {
      class: 'composer-input',
      rows: 3,
      disabled: true, // until the chat is loaded
      maxLength: 32000,
      placeholder: t('message_placeholder'),
      'aria-label': t('message_placeholder'),
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.submit();
        }
      },
    });
    this.sendButton = h('button', { type: 'submit', class: 'button primary send' }, t('send'));
    this.stopButton = h('button', { type: 'button', class: 'button danger stop', hidden: true, onclick: () => this.stop() }, t('stop'));
    this.treePanel = h('nav', { class: 'tree-panel', hidden: true, 'aria-label': t('tree_title') });
    this.title = h('h2', { class: 'chat-heading' });
    this.header = h(
      'header',
      { class: 'chat-header' },
      this.title,
      h('div', { class: 'header-actions' },
        h('button', { type: 'button', class: 'button small', 'aria-expanded': 'false', onclick: (e) => this.toggleTree(e.currentTarget) }, t('tree')),
        h('button', { type: 'button', class: 'button small', onclick: () => this.rename() }, t('rename')),
        h('button', { type: 'button', class: 'button small', onclick: () => openChatSettings(this) }, t('chat_settings')),
        h('button', { type: 'button', class: 'button small danger', onclick: () => this.remove() }, t('delete')),
      ),
    );
    this.element = h(
      'section',
      { class: 'chat-view' },
      this.header,
      h('div', { class: 'chat-body' },
        h('div', { class: 'conversation' },
          this.messages,
          h('form', {
            class: 'composer',
            onsubmit: (event) => {
              event.preventDefault();
              this.submit();
            },
          },
          this.input,
          h('div', { class: 'composer-actions' },
            h('button', { type: 'button', class: 'button small', onclick: () => openTemplates((text) => this.insert(text)) }, t('templates')),
            this.stopButton,
            this.sendButton,
          )),
        ),
        this.treePanel,
      ),
    );
  }

  async load() {
    const response = await api.get(`/chats/${this.id}/tree`);
    this.chat = response.chat;
    this.tree = new Tree(response);
    this.render();
    this.input.disabled = false;
    this.input.focus();
    await this.reattach();
  }

  // ---- rendering ---------------------------------------------------------------------

  render() {
    replace(this.title, this.chat.title);
    document.title = `${this.chat.title} · Arbor`;
    const path = this.tree.path();
    const children = [];
    if (this.chat.system_prompt) {
      children.push(h('p', { class: 'system-prompt muted' }, `${t('system')}: ${this.chat.system_prompt}`));
    }
    for (const message of path) {
      if (message.role === 'system' && !message.content.trim()) continue;
      children.push(this.messageElement(message));
    }
    replace(this.messages, children);
    if (this.treeOpen) this.renderTree();
    this.setBusy(this.busy);
    this.messages.lastElementChild?.scrollIntoView({ block: 'end' });
  }

  messageElement(message) {
    const [index, count] = this.tree.position(message.uuid);
    const live = this.live?.messageId === message.uuid ? this.live : null;
    const body = h('div', { class: 'message-body' });
    if (this.editing === message.uuid) {
      return this.editor(message);
    }
    if (message.role === 'assistant') renderMarkdown(body, live ? live.text : message.content);
    else body.append(h('p', { class: 'plain' }, message.content));
    const nav = count > 1 && h(
      'div',
      { class: 'branch-nav', role: 'group', 'aria-label': t('branch_of', { i: index, n: count }) },
      h('button', { type: 'button', class: 'icon-button', 'aria-label': t('previous_branch'), disabled: this.busy, onclick: () => this.switchBranch(message.uuid, -1) }, '‹'),
      h('span', { class: 'branch-position' }, t('branch_of', { i: index, n: count })),
      h('button', { type: 'button', class: 'icon-button', 'aria-label': t('next_branch'), disabled: this.busy, onclick: () => this.switchBranch(message.uuid, 1) }, '›'),
    );
    const actions = h('div', { class: 'message-actions' });
    if (message.role === 'user') {
      actions.append(h('button', { type: 'button', class: 'link-button', disabled: this.busy, onclick: () => this.startEdit(message.uuid) }, t('edit')));
    } else if (message.role === 'assistant') {
      actions.append(
        h('button', { type: 'button', class: 'link-button', disabled: this.busy, onclick: () => this.regenerate(message.uuid) }, t('regenerate')),
        h('button', { type: 'button', class: 'link-button', onclick: () => navigator.clipboard?.writeText(message.content) }, t('copy')),
      );
    }
    const status = live ? live.note : statusNote(message);
    return h(
      'article',
      { class: `message ${message.role}`, dataset: { message: message.uuid, status: live ? 'streaming' : message.status } },
      h('header', { class: 'message-header' },
        h('span', { class: 'role' }, t(message.role === 'user' ? 'you' : message.role)),
        nav,
        actions,
      ),
      body,
      status && h('p', { class: 'message-status muted' }, status),
      message.generation && h('p', { class: 'usage muted', title: message.generation.model }, usageLine(message.generation)),
    );
  }

  editor(message) {
    const area = h('textarea', { class: 'edit-input', rows: 3, maxLength: 32000, value: message.content, 'aria-label': t('edit') });
    const form = h(
      'form',
      {
        class: 'message user editing',
        onsubmit: (event) => {
          event.preventDefault();
          const content = area.value;
          if (!content.trim()) return;
          this.editing = null;
          // An edit is a new sibling question (a new branch) with its own streamed answer.
          this.generate('PATCH', `/chats/${this.id}/messages/${message.uuid}/stream`, { content }, {
            content,
            parent: message.parent_uuid,
          });
        },
      },
      area,
      h('div', { class: 'composer-actions' },
        h('button', { type: 'button', class: 'button small', onclick: () => { this.editing = null; this.render(); } }, t('cancel')),
        h('button', { type: 'submit', class: 'button primary small' }, t('save_and_send')),
      ),
    );
    queueMicrotask(() => area.focus());
    return form;
  }

  renderTree() {
    const onPath = new Set(this.tree.path().map((m) => m.uuid));
    const node = (id) => {
      const entry = this.tree.nodes.get(id);
      if (!entry) return null;
      const m = entry.message;
      const visible = !(m.role === 'system' && !m.content.trim());
      const label = visible && h('button', {
        type: 'button',
        class: `tree-node ${m.role}`,
        'aria-current': id === this.tree.leaf ? 'true' : null,
        dataset: { message: id, onPath: onPath.has(id) ? 'true' : 'false' },
        disabled: this.busy,
        onclick: () => this.selectLeaf(this.tree.leafUnder(id)),
      }, `${t(m.role === 'user' ? 'you' : m.role)}: ${preview(m.content)}`);
      const kids = entry.children.map(node).filter(Boolean);
      if (!visible) return kids;
      return h('li', {}, label, kids.length > 0 && h('ul', {}, kids));
    };
    replace(this.treePanel, h('h3', {}, t('tree_title')), h('ul', { class: 'tree' }, node(this.tree.root)));
  }

  toggleTree(button) {
    this.treeOpen = !this.treeOpen;
    this.treePanel.hidden = !this.treeOpen;
    button.setAttribute('aria-expanded', String(this.treeOpen));
    if (this.treeOpen) this.renderTree();
  }

  setBusy(busy) {
    this.busy = busy;
    this.sendButton.hidden = busy;
    this.stopButton.hidden = !busy;
    if (busy) this.stopButton.focus({ preventScroll: true });
  }

  renderLive() {
    if (!this.live || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      const el = this.messages.querySelector(`[data-message="${CSS.escape(this.live?.messageId || '')}"] .message-body`);
      if (el && this.live) {
        renderMarkdown(el, this.live.text);
        el.closest('.message')?.scrollIntoView({ block: 'end' });
      }
    });
  }

  // ---- actions -----------------------------------------------------------------------

  insert(text) {
    const { selectionStart: start, selectionEnd: end, value } = this.input;
    this.input.value = value.slice(0, start) + text + value.slice(end);
    this.input.focus();
  }

  submit() {
    const content = this.input.value;
    if (this.busy || !this.tree || !content.trim()) return;
    const parent = this.tree.leaf;
    this.generate('POST', `/chats/${this.id}/messages/stream`, { content, parent_message_uuid: parent }, { content, parent });
    this.input.value = '';
  }

  regenerate(messageId) {
    const parent = this.tree.message(messageId)?.parent_uuid;
    this.generate('POST', `/chats/${this.id}/messages/${messageId}/retry/stream`, {}, { parent, existingQuestion: parent });
  }

  startEdit(messageId) {
    this.editing = messageId;
    this.render();
  }

  async switchBranch(messageId, step) {
    const sibling = this.tree.sibling(messageId, step);
    if (sibling) await this.selectLeaf(this.tree.leafUnder(sibling));
  }

  async selectLeaf(leaf) {
    if (this.busy || leaf === this.tree.leaf) return;
    try {
      await api.post(`/chats/${this.id}/select`, { message_uuid: leaf });
      this.tree.leaf = leaf;
      this.render();
    } catch (error) {
      showError(error, () => this.selectLeaf(leaf));
    }
  }

  async stop() {
    try {
      await api.post(`/chats/${this.id}/generation/cancel`);
    } catch (error) {
      // Already over: the stream ends on its own.
      if (error.status !== 404 && error.status !== 409) showError(error);
    }
  }

  async rename() {
    const title = prompt(t('rename'), this.chat.title);
    if (title === null || !title.trim()) return;
    try {
      this.chat = await api.patch(`/chats/${this.id}`, { title: title.trim() });
      this.app.chatList.retitle(this.id, this.chat.title);
      this.render();
    } catch (error) {
      showError(error);
    }
  }

  async remove() {
    if (!confirm(t('confirm_delete_chat'))) return;
    try {
      await api.del(`/chats/${this.id}`);
      location.hash = '#/';
      await this.app.chatList.reload();
    } catch (error) {
      showError(error);
    }
  }

  /**
   * Runs one streamed generation (send, edit or regenerate): the question and the answer
   * appear at `start`, text as it arrives, and the tree is read again at the end.
   */
  async generate(method, path, body, { content, parent, existingQuestion } = {}) {
    if (this.busy) return;
    clear();
    this.setBusy(true);
    this.render();
    this.controller = new AbortController();
    const onEvent = (event) => this.onEvent(event, { content, parent, existingQuestion });
    try {
      await api.stream(method, path, body, onEvent, this.controller.signal);
    } catch (error) {
      if (error.name !== 'AbortError') showError(error, () => this.generate(method, path, body, { content, parent, existingQuestion }));
    } finally {
      await this.finish();
    }
  }

  onEvent(event, { content, parent, existingQuestion }) {
    switch (event.type) {
      case 'start': {
        const question = event.user_message_uuid;
        if (!existingQuestion && !this.tree.nodes.has(question)) {
          this.addNode({ uuid: question, parent_uuid: parent, role: 'user', content, status: 'complete' });
        }
        this.addNode({ uuid: event.message_uuid, parent_uuid: question, role: 'assistant', content: '', status: 'streaming' });
        this.tree.leaf = event.message_uuid;
        this.live = { messageId: event.message_uuid, text: '', note: t('streaming') };
        this.render();
        break;
      }
      case 'chunk':
        if (this.live) {
          this.live.text += event.delta;
          this.renderLive();
        }
        break;
      case 'final':
        if (this.live) this.live.text = event.content;
        break;
      case 'error':
        if (this.live) this.live.note = event.message;
        if (event.error_type !== 'cancelled') {
          const failed = this.live?.messageId;
          showError({ message: event.message, retryAvailable: event.retry_available }, failed ? () => this.regenerate(failed) : null);
        }
        break;
      default:
        break;
    }
  }

  addNode(message) {
    this.tree.nodes.set(message.uuid, { message, children: [] });
    const parent = this.tree.nodes.get(message.parent_uuid);
    if (parent && !parent.children.includes(message.uuid)) parent.children.push(message.uuid);
  }

  /** After a stream: the server's tree is the truth (statuses, usage, titles). */
  async finish() {
    const hadFocus = document.activeElement === this.stopButton || document.activeElement === document.body;
    this.controller = null;
    this.live = null;
    this.busy = false;
    try {
      const response = await api.get(`/chats/${this.id}/tree`);
      const oldTitle = this.chat.title;
      this.chat = response.chat;
      this.tree = new Tree(response);
      this.render();
      if (oldTitle !== this.chat.title) this.app.chatList.retitle(this.id, this.chat.title);
      this.app.afterAnswer(this.id);
    } catch (error) {
      showError(error);
    }
    this.setBusy(false);
    // The Stop button just went away: keyboard users continue in the composer.
    if (hadFocus) this.input.focus({ preventScroll: true });
  }

  /** After a reload: follow a generation still running in this chat. */
  async reattach() {
    let status;
    try {
      status = await api.get(`/chats/${this.id}/generation`);
    } catch {
      return; // none (404)
    }
    if (!status.running || this.busy) return;
    this.setBusy(true);
    this.live = { messageId: status.message_uuid, text: '', note: t('reattached') };
    if (this.tree.nodes.has(status.message_uuid)) this.tree.leaf = status.message_uuid;
    this.render();
    this.controller = new AbortController();
    try {
      await api.stream('GET', `/chats/${this.id}/generation/stream`, undefined, (event) => {
        if (event.type === 'start') return;
        this.onEvent(event, {});
      }, this.controller.signal);
    } catch (error) {
      if (error.name !== 'AbortError' && error.status !== 404) showError(error);
    } finally {
      await this.finish();
    }
  }

  /** Leaving the view: stop following (the generation itself goes on on the server). */
  close() {
    this.controller?.abort();
  }
}

function preview(text) {
  const line = plainLine(text);
  return line.length > 40 ? `${line.slice(0, 40)}…` : line || '…';
}

function statusNote(message) {
  if (message.status === 'interrupted') return t('stopped');
  if (message.status === 'failed') return t('failed');
  if (message.status === 'streaming') return t('streaming');
  return null;
}

function usageLine(g) {
  // Scripted or very long model ids are shortened (the full id is in the tooltip).
  const model = g.model.length > 40 ? `${g.model.split('?')[0].slice(0, 40)}…` : g.model;
  const parts = [model];
  if (g.total_tokens) parts.push(t('tokens_short', { n: g.total_tokens }));
  if (g.cost_usd && Number(g.cost_usd) > 0) parts.push(`$${Number(g.cost_usd).toFixed(6).replace(/0+$/, '0')}`);
  if (g.latency_ms) parts.push(`${(g.latency_ms / 1000).toFixed(1)} s`);
  return parts.join(' · ');
}
