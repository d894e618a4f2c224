// The console's only way to the platform: the public API, with the same bearer tokens as any client.
const KEY = 'recycle.console.session';

export const session = {
  get() {
    try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
  },
  set(tokens) {
    sessionStorage.setItem(KEY, JSON.stringify({
      access_token: tokens.access_token, refresh_token: tokens.refresh_token, user_id: tokens.user_id,
      roles: tokens.roles || [], firm_ids: tokens.firm_ids || [], phone_masked: tokens.phone_masked || '',
    }));
  },
  clear() { sessionStorage.removeItem(KEY); },
  has(...roles) {
    const s = this.get();
    return !!s && roles.some(r => s.roles.includes(r));
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// crypto.randomUUID needs a secure context; getRandomValues works everywhere.
function idempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), b => b.toString(16).padStart(2, '0')).join('');
}

let refreshing = null;

async function refresh() {
  const s = session.get();
  if (!s || !s.refresh_token) return false;
  refreshing = refreshing || (async () => {
    const r = await fetch('/v1/auth/refresh', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: s.refresh_token }),
    });
    if (!r.ok) { session.clear(); return false; }
    const t = await r.json();
    session.set({ ...t, phone_masked: s.phone_masked });
    return true;
  })().finally(() => { refreshing = null; });
  return refreshing;
}

function fileName(resp, fallback) {
  const cd = resp.headers.get('Content-Disposition') || '';
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  return m ? decodeURIComponent(m[1]) : fallback;
}

/**
 * Call the API. `as`: 'json' (default), 'text' or 'blob' ({blob, name}). POSTs carry an Idempotency-Key, the
 * same one when the call is retried after refreshing an expired access token. Errors throw ApiError with the
 * problem+json body.
 */
export async function api(path, { method = 'GET', body, as = 'json', accept } = {}) {
  const key = method === 'POST' ? idempotencyKey() : null;
  const send = () => {
    const headers = { Accept: accept || (as === 'json' ? 'application/json' : '*/*') };
    const s = session.get();
    if (s) headers.Authorization = `Bearer ${s.access_token}`;
    if (key) headers['Idempotency-Key'] = key;
    let payload;
    if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
    return fetch(path, { method, headers, body: payload });
  };
  let r = await send();
  if (r.status === 401 && session.get() && await refresh()) r = await send();
  if (!r.ok) {
    let problem;
    try { problem = await r.json(); } catch { problem = { title: r.statusText, status: r.status }; }
    if (r.status === 401) session.clear();
    throw new ApiError(r.status, problem);
  }
  if (as === 'blob') return { blob: await r.blob(), name: fileName(r, 'download') };
  if (as === 'text') return r.text();
  return r.status === 204 ? null : r.json();
}

/** Every page of a list endpoint ({items, next_cursor}), up to `max` items. */
export async function all(path, max = 2000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/**
 * Follow a text/event-stream with the bearer token (EventSource cannot send one): `onEvent(name, data)` for each
 * event, `onState('open'|'retrying')` as the connection comes and goes; reconnects after `retry` ms (the server's
 * `retry:` field wins). Returns a function that stops it.
 */
export function stream(path, onEvent, onState = () => {}) {
  let stopped = false;
  let ctrl = null;
  let retry = 3000;
  async function connect() {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const s = session.get();
        const r = await fetch(path, {
          headers: { Accept: 'text/event-stream', ...(s ? { Authorization: `Bearer ${s.access_token}` } : {}) },
          signal: ctrl.signal, cache: 'no-store',
        });
        if (r.status === 401 && await refresh()) continue;
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        onState('open');
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let name = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) name = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
              else if (line.startsWith('retry:')) retry = Number(line.slice(6)) || retry;
            }
            if (data.length) {
              try { onEvent(name, JSON.parse(data.join('\n'))); } catch (err) { console.warn('bad event', err); }
            }
          }
        }
      } catch (err) {
        if (stopped) return;
      }
      if (stopped) return;
      onState('retrying');
      await new Promise(res => setTimeout(res, retry));
    }
  }
  connect();
  return () => { stopped = true; if (ctrl) ctrl.abort(); };
}
