// English and Japanese. The language follows the browser until the user picks one.

const en = {
  app_name: 'Arbor',
  login: 'Log in', register: 'Create account', logout: 'Log out',
  username: 'Username', password: 'Password', invite_code: 'Invite code (if you have one)',
  have_account: 'Already have an account? Log in', no_account: 'New here? Create an account',
  registered_pending: 'Your account waits for an administrator’s approval.',
  new_chat: 'New chat', search_chats: 'Search chats', no_chats: 'No chats yet.',
  load_more: 'Load more',
  title: 'Title', title_optional: 'Title (optional)', model: 'Model', preset: 'Preset', none: 'None',
  system_prompt: 'System prompt', create: 'Create', cancel: 'Cancel', save: 'Save',
  delete: 'Delete', rename: 'Rename', close: 'Close', retry: 'Retry', insert: 'Insert',
  confirm_delete_chat: 'Delete this chat and every branch in it?',
  message_placeholder: 'Write a message… (Enter sends, Shift+Enter adds a line)',
  send: 'Send', stop: 'Stop', regenerate: 'Regenerate', edit: 'Edit', copy: 'Copy',
  save_and_send: 'Save & send', previous_branch: 'Previous branch', next_branch: 'Next branch',
  branch_of: '{i} / {n}', tree: 'Tree', tree_title: 'Conversation tree',
  you: 'You', assistant: 'Assistant', system: 'System',
  stopped: 'Stopped — the partial answer was kept.', failed: 'The answer failed.',
  streaming: 'Answering…', reattached: 'Still answering — re-attached.',
  templates: 'Templates', presets: 'Presets', settings: 'Settings', usage: 'Usage',
  language: '日本語', theme_dark: 'Dark', theme_light: 'Light',
  default_model: 'Default model', saved: 'Saved.',
  variables: 'Variables', no_templates: 'No templates yet.', new_template: 'New template',
  name: 'Name', content: 'Content', public: 'Public',
  no_presets: 'No presets yet.', new_preset: 'New preset', temperature: 'Temperature',
  max_tokens: 'Max tokens',
  today: 'Today', this_month: 'This month', tokens: 'tokens', cost: 'cost', limit: 'limit',
  no_limit: 'no limit', requests: 'requests', by_model: 'By model (30 days)',
  select_chat: 'Pick a chat or start a new one.', menu: 'Menu',
  tokens_short: '{n} tok', chat_settings: 'Chat settings', error: 'Something went wrong.',
};

const ja = {
  app_name: 'Arbor',
  login: 'ログイン', register: 'アカウント作成', logout: 'ログアウト',
  username: 'ユーザー名', password: 'パスワード', invite_code: '招待コード（お持ちの場合）',
  have_account: 'アカウントをお持ちの方はログイン', no_account: '初めての方はアカウント作成',
  registered_pending: '管理者の承認をお待ちください。',
  new_chat: '新しいチャット', search_chats: 'チャットを検索', no_chats: 'チャットはまだありません。',
  load_more: 'さらに読み込む',
  title: 'タイトル', title_optional: 'タイトル（任意）', model: 'モデル', preset: 'プリセット', none: 'なし',
  system_prompt: 'システムプロンプト', create: '作成', cancel: 'キャンセル', save: '保存',
  delete: '削除', rename: '名前を変更', close: '閉じる', retry: '再試行', insert: '挿入',
  confirm_delete_chat: 'このチャットとすべての分岐を削除しますか？',
  message_placeholder: 'メッセージを入力…（Enterで送信、Shift+Enterで改行）',
  send: '送信', stop: '停止', regenerate: '再生成', edit: '編集', copy: 'コピー',
  save_and_send: '保存して送信', previous_branch: '前の分岐', next_branch: '次の分岐',
  branch_of: '{i} / {n}', tree: 'ツリー', tree_title: '会話ツリー',
  you: 'あなた', assistant: 'アシスタント', system: 'システム',
  stopped: '停止しました。途中までの回答は保存されています。', failed: '回答に失敗しました。',
  streaming: '回答中…', reattached: '回答中です（再接続しました）。',
  templates: 'テンプレート', presets: 'プリセット', settings: '設定', usage: '使用量',
  language: 'English', theme_dark: 'ダーク', theme_light: 'ライト',
  default_model: '既定のモデル', saved: '保存しました。',
  variables: '変数', no_templates: 'テンプレートはまだありません。', new_template: '新しいテンプレート',
  name: '名前', content: '内容', public: '公開',
  no_presets: 'プリセットはまだありません。', new_preset: '新しいプリセット', temperature: '温度',
  max_tokens: '最大トークン数',
  today: '今日', this_month: '今月', tokens: 'トークン', cost: '費用', limit: '上限',
  no_limit: '上限なし', requests: 'リクエスト', by_model: 'モデル別（30日）',
  select_chat: 'チャットを選ぶか、新しく始めてください。', menu: 'メニュー',
  tokens_short: '{n} トークン', chat_settings: 'チャットの設定', error: 'エラーが発生しました。',
};

const dictionaries = { en, ja };
const STORAGE_KEY = 'arbor.lang';

function initial() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && dictionaries[saved]) return saved;
  const preferred = navigator.languages?.[0] || navigator.language || 'en';
  return preferred.toLowerCase().startsWith('ja') ? 'ja' : 'en';
}

let current = initial();

export function lang() {
  return current;
}

export function setLang(code) {
  current = dictionaries[code] ? code : 'en';
  localStorage.setItem(STORAGE_KEY, current);
  document.documentElement.lang = current;
}

/** The text for `key` in the current language, with `{name}` placeholders filled. */
export function t(key, vars = {}) {
  const text = dictionaries[current][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

document.documentElement.lang = current;
