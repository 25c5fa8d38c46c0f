// Log in and create an account.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { t } from './i18n.js';
import { showError, showInfo, clear } from './notice.js';

/** Renders the sign-in form into `root`; `done` runs once the user is signed in. */
export function renderAuth(root, done, mode = 'login') {
  const registering = mode === 'register';
  const username = h('input', { id: 'auth-username', name: 'username', autocomplete: 'username', required: true, minLength: 3, maxLength: 32 });
  const password = h('input', {
    id: 'auth-password', name: 'password', type: 'password', required: true, minLength: 8, maxLength: 128,
    autocomplete: registering ? 'new-password' : 'current-password',
  });
  const invite = h('input', { id: 'auth-invite', name: 'invite', autocomplete: 'off', maxLength: 256 });
  const submit = h('button', { type: 'submit', class: 'button primary' }, registering ? t('register') : t('login'));
  const form = h(
    'form',
    {
      class: 'auth-form',
      onsubmit: async (event) => {
        event.preventDefault();
        clear();
        submit.disabled = true;
        try {
          if (registering) {
            const user = await api.register(username.value, password.value, invite.value.trim());
            if (user.pending) {
              showInfo(t('registered_pending'));
              renderAuth(root, done, 'login');
              return;
            }
          }
          await api.login(username.value, password.value);
          done();
        } catch (error) {
          showError(error);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('h1', {}, t('app_name')),
    h('h2', {}, registering ? t('register') : t('login')),
    h('label', { for: 'auth-username' }, t('username')),
    username,
    h('label', { for: 'auth-password' }, t('password')),
    password,
    registering && [h('label', { for: 'auth-invite' }, t('invite_code')), invite],
    submit,
    h('button', {
      type: 'button',
      class: 'link-button',
      onclick: () => renderAuth(root, done, registering ? 'login' : 'register'),
    }, registering ? t('have_account') : t('no_account')),
  );
  replace(root, h('main', { class: 'auth-page' }, form));
  username.focus();
}
