// The client of Arbor's public /api/v1 API.
//
// Tokens: the access token lives only in memory (this module's variable), so nothing a
// script could read survives the page. The refresh token never reaches JavaScript at all:
// login and refresh run in "cookie mode" (X-Arbor-Refresh-Cookie: 1), where the server sets
// it as an HttpOnly, SameSite=Strict cookie scoped to /api/v1/auth. A reload therefore
// starts with no access token and asks /auth/refresh for one; the cookie answers.

import { EventSourceParserStream } from 'eventsource-parser/stream';
import { lang } from './i18n.js';

const BASE = '/api/v1';
const COOKIE_MODE = { 'X-Arbor-Refresh-Cookie': '1' };

let accessToken = null;
let refreshing = null;
let onSignedOut = () => {};

/** An error envelope from the API ({error_type, user_message, retry_available, …}). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.user_message || `HTTP ${status}`);
    this.status = status;
    this.type = body?.error_type || 'http_error';
    this.retryAvailable = Boolean(body?.retry_available);
    this.detail = body?.detail;
  }
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function signedIn() {
  return accessToken !== null;
}

function headers(extra = {}) {
  const h = { 'Accept-Language': lang(), ...extra };
  if (accessToken) h.Authorization = `Bearer ${accessToken}`;
  return h;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new ApiError(response.status, body);
}

/** Exchanges the refresh cookie for a new access token; false when there is no session. */
export function refresh() {
  refreshing ??= (async () => {
    try {
      const response = await fetch(`${BASE}/auth/refresh`, {
        method: 'POST',
        headers: headers({ ...COOKIE_MODE, 'Content-Type': 'application/json' }),
        body: '{}',
        credentials: 'same-origin',
      });
      if (!response.ok) {
        accessToken = null;
        return false;
      }
      accessToken = (await response.json()).access_token;
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** fetch with the bearer token; one refresh and one retry on a 401. */
async function authorised(path, init) {
  const send = () => fetch(BASE + path, { ...init, headers: headers(init.headers) });
  let response = await send();
  if (response.status === 401 && accessToken !== null) {
    if (await refresh()) response = await send();
    if (response.status === 401) {
      accessToken = null;
      onSignedOut();
    }
  }
  return response;
}

/** A JSON request; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await authorised(path, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);
export const patch = (path, body) => request('PATCH', path, body);
export const put = (path, body) => request('PUT', path, body);
export const del = (path) => request('DELETE', path);

export async function login(username, password) {
  const response = await fetch(`${BASE}/auth/login`, {
    method: 'POST',
    headers: headers({ ...COOKIE_MODE, 'Content-Type': 'application/json' }),
    body: JSON.stringify({ username, password }),
    credentials: 'same-origin',
  });
  if (!response.ok) throw await failure(response);
  accessToken = (await response.json()).access_token;
}

export async function register(username, password, inviteCode) {
  const body = { username, password };
  if (inviteCode) body.invite_code = inviteCode;
  const response = await fetch(`${BASE}/users`, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

export async function logout() {
  try {
    await fetch(`${BASE}/auth/logout`, {
      method: 'POST',
      headers: headers({ ...COOKIE_MODE, 'Content-Type': 'application/json' }),
      body: '{}',
      credentials: 'same-origin',
    });
  } finally {
    accessToken = null;
  }
}

/**
 * Follows a text/event-stream response (a streamed send, retry or re-attach): calls
 * `onEvent` with each event's parsed JSON and its id. Resolves when the stream ends
 * (`[DONE]` or the connection closing); rejects with ApiError when the request is refused.
 */
export async function stream(method, path, body, onEvent, signal) {
  const init = { method, headers: { Accept: 'text/event-stream' }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await authorised(path, init);
  if (!response.ok) throw await failure(response);
  const events = response.body
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(new EventSourceParserStream());
  const reader = events.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || value.data === '[DONE]') return;
      onEvent(JSON.parse(value.data), value.id);
    }
  } finally {
    reader.releaseLock();
  }
}
