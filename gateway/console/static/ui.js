// Small DOM helpers shared by the pages: element builder, labelled fields, messages, formatting, downloads.

/** h('button', {class: 'x', onclick: f}, 'text', child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'for') el.htmlFor = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let seq = 0;
/** A visible label tied to its control (for screen readers and clicking). */
export function field(label, control, hint) {
  if (!control.id) control.id = `f${++seq}`;
  const hintEl = hint ? h('span', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

export function select(name, options, value) {
  const el = h('select', { name });
  for (const [v, text] of options) el.append(h('option', { value: v, selected: v === value }, text));
  return el;
}

export function toast(message, kind = 'info') {
  const box = document.getElementById('toast');
  const item = h('div', { class: kind === 'error' ? 'error' : '' }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

/** Show an API error: the problem's detail, and each named field marked invalid in `form`. */
export function showError(err, form) {
  const p = err.problem || {};
  const fields = (p.errors || []).map(e => `${e.field}: ${e.message}`);
  toast([p.title || '出错了', p.detail, ...fields].filter(Boolean).join(' — '), 'error');
  if (form) {
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    for (const e of p.errors || []) {
      const el = form.querySelector(`[name="${CSS.escape(e.field)}"]`);
      if (el) el.setAttribute('aria-invalid', 'true');
    }
  }
}

export const yuan = fen => (fen === null || fen === undefined ? '—' : (Number(fen) / 100).toFixed(2));

export function dateTime(s) {
  if (!s) return '—';
  // the platform keeps UTC; a time written without an offset is read as UTC, not as the browser's local time
  const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`);
  return d.toLocaleString('zh-CN', { hour12: false, timeZone: 'Asia/Shanghai' });
}

/** 'YYYY-MM-DD' of a Date in Shanghai time. */
export function isoDay(d) {
  return new Intl.DateTimeFormat('sv-SE', { timeZone: 'Asia/Shanghai' }).format(d);
}

export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** A modal dialog asking for one text (e.g. a reason); resolves to the text, or null when cancelled. */
export function ask(title, label, { confirm = '确定', danger = false } = {}) {
  return new Promise(resolve => {
    const input = h('textarea', { name: 'reason', required: true, rows: 3, cols: 40 });
    const form = h('form', { method: 'dialog' },
      h('h2', {}, title), field(label, input),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', value: 'ok', class: danger ? 'danger' : '' }, confirm),
        h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close('cancel') }, '取消')));
    const dlg = h('dialog', { 'aria-label': title }, form);
    form.addEventListener('submit', ev => {
      if (!input.value.trim()) { ev.preventDefault(); input.setAttribute('aria-invalid', 'true'); input.focus(); }
    });
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve(dlg.returnValue === 'ok' ? input.value.trim() : null);
    });
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
  });
}

export const ROLE_NAMES = {
  resident: '居民', collector: '回收员', firm: '回收企业', erasure_operator: '清除操作员',
  accountant: '会计', admin: '管理员', regulator: '监管部门',
};
