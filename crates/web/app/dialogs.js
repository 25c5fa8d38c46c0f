// Modal dialogs (native <dialog>: focus is trapped and Escape closes): new chat, chat
// settings, templates, presets, settings and usage.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { t } from './i18n.js';
import { showError, showInfo } from './notice.js';

let models = null;
let idCounter = 0;

/** The model catalogue (first 100 entries), fetched once per page. */
async function catalogue() {
  models ??= api.get('/models?limit=100').then((page) => page.items).catch(() => []);
  return models;
}

/** A text input suggesting the catalogue's models (any id can be typed). */
function modelInput(value) {
  const list = h('datalist', { id: `models-${++idCounter}` });
  catalogue().then((items) => {
    for (const m of items) list.append(h('option', { value: m.id }, m.name));
  });
  const input = h('input', { type: 'text', value: value || '', maxLength: 200, list: list.id, autocomplete: 'off' });
  input.setAttribute('list', list.id);
  return [input, list];
}

async function presetSelect(value) {
  const select = h('select', {}, h('option', { value: '' }, t('none')));
  try {
    const page = await api.get('/presets?limit=100');
    for (const p of page.items) select.append(h('option', { value: p.uuid, selected: p.uuid === value }, p.name));
  } catch {
    // presets are optional
  }
  return select;
}

function field(label, control) {
  const id = `field-${++idCounter}`;
  const input = Array.isArray(control) ? control[0] : control;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control);
}

/** Opens a modal with `title` and `content`; resolves when it closes. */
export function modal(title, ...content) {
  const dialog = h(
    'dialog',
    { class: 'dialog', 'aria-label': title },
    h('header', { class: 'dialog-header' },
      h('h2', {}, title),
      h('button', { type: 'button', class: 'icon-button', 'aria-label': t('close'), onclick: () => dialog.close() }, '×'),
    ),
    ...content,
  );
  document.body.append(dialog);
  dialog.addEventListener('close', () => dialog.remove());
  dialog.showModal();
  return dialog;
}

function actions(dialog, submitLabel) {
  return h('div', { class: 'dialog-actions' },
    h('button', { type: 'button', class: 'button', onclick: () => dialog.close() }, t('cancel')),
    h('button', { type: 'submit', class: 'button primary' }, submitLabel),
  );
}

export async function openNewChat(onCreated) {
  const title = h('input', { type: 'text', maxLength: 200 });
  const [model, list] = modelInput('');
  const preset = await presetSelect(null);
  const system = h('textarea', { rows: 4, maxLength: 8000 });
  const form = h('form', { class: 'dialog-form' });
  const dialog = modal(t('new_chat'), form);
  form.append(
    field(t('title_optional'), title),
    field(t('model'), [model, list]),
    field(t('preset'), preset),
    field(t('system_prompt'), system),
    actions(dialog, t('create')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {};
    if (title.value.trim()) body.title = title.value.trim();
    if (model.value.trim()) body.model_id = model.value.trim();
    if (preset.value) body.preset_id = preset.value;
    if (system.value.trim()) body.system_prompt = system.value;
    try {
      const chat = await api.post('/chats', body);
      dialog.close();
      onCreated(chat);
    } catch (error) {
      showError(error);
    }
  });
  title.focus();
}

export async function openChatSettings(view) {
  const chat = view.chat;
  const [model, list] = modelInput(chat.model_id);
  const preset = await presetSelect(chat.preset_id);
  const system = h('textarea', { rows: 4, maxLength: 8000, value: chat.system_prompt || '' });
  const form = h('form', { class: 'dialog-form' });
  const dialog = modal(t('chat_settings'), form);
  form.append(field(t('model'), [model, list]), field(t('preset'), preset), field(t('system_prompt'), system), actions(dialog, t('save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      view.chat = await api.patch(`/chats/${chat.uuid}`, {
        model_id: model.value.trim() || null,
        preset_id: preset.value || null,
        system_prompt: system.value.trim() ? system.value : null,
      });
      dialog.close();
      view.render();
    } catch (error) {
      showError(error);
    }
  });
}

export async function openTemplates(insert) {
  const body = h('div', { class: 'dialog-list' });
  const dialog = modal(t('templates'), body);
  const show = async () => {
    let page;
    try {
      page = await api.get('/templates?limit=100');
    } catch (error) {
      showError(error);
      return;
    }
    replace(
      body,
      page.items.length === 0 && h('p', { class: 'muted' }, t('no_templates')),
      h('ul', { class: 'plain-list' }, page.items.map((tpl) => h('li', {},
        h('button', { type: 'button', class: 'list-button', onclick: () => use(tpl) },
          h('strong', {}, tpl.name), tpl.description && h('span', { class: 'muted' }, ` — ${tpl.description}`)),
      ))),
      h('button', { type: 'button', class: 'button small', onclick: create }, t('new_template')),
    );
  };
  const use = (tpl) => {
    const inputs = Object.fromEntries(tpl.variables.map((v) => [v, h('input', { type: 'text', maxLength: 2000 })]));
    const form = h('form', { class: 'dialog-form' },
      h('p', { class: 'template-content' }, tpl.content),
      tpl.variables.length > 0 && h('h3', {}, t('variables')),
      Object.entries(inputs).map(([name, input]) => field(name, input)),
      actions(dialog, t('insert')),
    );
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const variables = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.value]));
      try {
        const rendered = await api.post(`/templates/${tpl.uuid}/render`, { variables });
        await api.post(`/templates/${tpl.uuid}/use`).catch(() => {});
        dialog.close();
        insert(rendered.content);
      } catch (error) {
        showError(error);
      }
    });
    replace(body, form);
    Object.values(inputs)[0]?.focus();
  };
  const create = () => {
    const name = h('input', { type: 'text', required: true, maxLength: 100 });
    const content = h('textarea', { rows: 5, required: true, maxLength: 20000, placeholder: '{{variable}}' });
    const isPublic = h('input', { type: 'checkbox' });
    const form = h('form', { class: 'dialog-form' },
      field(t('name'), name), field(t('content'), content),
      h('label', { class: 'check' }, isPublic, ` ${t('public')}`),
      actions(dialog, t('create')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        await api.post('/templates', { name: name.value, content: content.value, is_public: isPublic.checked });
        await show();
      } catch (error) {
        showError(error);
      }
    });
    replace(body, form);
    name.focus();
  };
  await show();
}

export async function openPresets() {
  const body = h('div', { class: 'dialog-list' });
  const dialog = modal(t('presets'), body);
  const show = async () => {
    let page;
    try {
      page = await api.get('/presets?limit=100');
    } catch (error) {
      showError(error);
      return;
    }
    replace(
      body,
      page.items.length === 0 && h('p', { class: 'muted' }, t('no_presets')),
      h('ul', { class: 'plain-list' }, page.items.map((p) => h('li', { class: 'row' },
        h('span', {}, h('strong', {}, p.name), ' ', h('span', { class: 'muted' }, [p.model_id, p.temperature != null && `T=${p.temperature}`].filter(Boolean).join(' · '))),
        h('button', { type: 'button', class: 'link-button danger', onclick: async () => {
          try { await api.del(`/presets/${p.uuid}`); await show(); } catch (error) { showError(error); }
        } }, t('delete')),
      ))),
      h('button', { type: 'button', class: 'button small', onclick: create }, t('new_preset')),
    );
  };
  const create = () => {
    const name = h('input', { type: 'text', required: true, maxLength: 100 });
    const [model, list] = modelInput('');
    const temperature = h('input', { type: 'number', min: 0, max: 2, step: 0.1 });
    const maxTokens = h('input', { type: 'number', min: 1, step: 1 });
    const system = h('textarea', { rows: 3, maxLength: 8000 });
    const form = h('form', { class: 'dialog-form' },
      field(t('name'), name), field(t('model'), [model, list]), field(t('temperature'), temperature),
      field(t('max_tokens'), maxTokens), field(t('system_prompt'), system), actions(dialog, t('create')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const preset = { name: name.value };
      if (model.value.trim()) preset.model_id = model.value.trim();
      if (temperature.value !== '') preset.temperature = Number(temperature.value);
      if (maxTokens.value !== '') preset.max_tokens = Number(maxTokens.value);
      if (system.value.trim()) preset.system_prompt = system.value;
      try {
        await api.post('/presets', preset);
        await show();
      } catch (error) {
        showError(error);
      }
    });
    replace(body, form);
    name.focus();
  };
  await show();
}

export async function openSettings() {
  let settings = { default_model_id: null };
  try {
    settings = await api.get('/users/me/settings');
  } catch (error) {
    showError(error);
  }
  const [model, list] = modelInput(settings.default_model_id);
  const form = h('form', { class: 'dialog-form' });
  const dialog = modal(t('settings'), form);
  form.append(field(t('default_model'), [model, list]), actions(dialog, t('save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await api.put('/users/me/settings', { default_model_id: model.value.trim() || null });
      dialog.close();
      showInfo(t('saved'));
    } catch (error) {
      showError(error);
    }
  });
}

export async function openUsage() {
  const body = h('div', { class: 'usage-view' });
  modal(t('usage'), body);
  try {
    const [quota, byModel] = await Promise.all([api.get('/users/me/usage'), api.get('/analytics/models?period=30d')]);
    const period = (label, p) => h('tr', {},
      h('th', { scope: 'row' }, label),
      h('td', {}, `$${p.cost_usd}`, Number(p.limit_usd) > 0 ? ` / $${p.limit_usd}` : ''),
      h('td', {}, String(p.tokens), p.limit_tokens > 0 ? ` / ${p.limit_tokens}` : ''));
    replace(body,
      h('table', { class: 'table' },
        h('thead', {}, h('tr', {}, h('th', {}), h('th', { scope: 'col' }, t('cost')), h('th', { scope: 'col' }, t('tokens')))),
        h('tbody', {}, period(t('today'), quota.day), period(t('this_month'), quota.month))),
      h('h3', {}, t('by_model')),
      h('table', { class: 'table' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('model')), h('th', { scope: 'col' }, t('requests')), h('th', { scope: 'col' }, t('tokens')), h('th', { scope: 'col' }, t('cost')))),
        h('tbody', {}, byModel.map((m) => h('tr', {},
          h('td', {}, m.model), h('td', {}, `${m.messages} (${m.share_percent}%)`), h('td', {}, String(m.total_tokens)), h('td', {}, `$${m.cost_usd}`))))));
  } catch (error) {
    showError(error);
  }
}
