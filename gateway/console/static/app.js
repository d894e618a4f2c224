// The console's shell: hash routes, the navigation a user's roles allow, sign-in state.
import { session, api } from './api.js';
import { h, ROLE_NAMES, toast } from './ui.js';

// roles: who sees the page (null: everyone, signed in or not).
const PAGES = [
  { path: 'prices', title: '价格指数', roles: null, load: () => import('./pages/prices.js') },
  { path: 'lots', title: '竞价大厅', roles: ['firm'], load: () => import('./pages/lots.js') },
  { path: 'invoices', title: '发票与报税', roles: ['accountant'], load: () => import('./pages/invoices.js') },
  { path: 'admin', title: '审核与运维', roles: ['admin'], load: () => import('./pages/admin.js') },
  { path: 'orders', title: '二手订单', roles: ['admin'], load: () => import('./pages/orders.js') },
];
const LOGIN = { path: 'login', title: '登录', roles: null, load: () => import('./pages/login.js') };

let leave = null; // the current page's clean-up (timers, event streams, charts)

const allowed = page => !page.roles || session.has(...page.roles);

export function home() {
  const first = PAGES.find(p => p.roles && allowed(p));
  return first ? first.path : 'prices';
}

export function go(path) {
  if (location.hash === `#/${path}`) route(); else location.hash = `#/${path}`;
}

function renderChrome(current) {
  const nav = document.getElementById('nav');
  nav.replaceChildren(...PAGES.filter(allowed).map(p => h('a', {
    href: `#/${p.path}`, 'aria-current': p.path === current ? 'page' : undefined,
  }, p.title)));
  const who = document.getElementById('who');
  const s = session.get();
  if (s) {
    const roles = s.roles.map(r => ROLE_NAMES[r] || r).join('、');
    who.replaceChildren(h('span', {}, `${s.phone_masked || s.user_id}（${roles}）`),
      h('button', { type: 'button', onclick: logout }, '退出'));
  } else {
    who.replaceChildren(h('a', { href: '#/login', style: 'color:#fff' }, '登录'));
  }
}

function logout() {
  session.clear();
  toast('已退出登录');
  go('login');
}

async function route() {
  const path = (location.hash.replace(/^#\/?/, '') || '').split('?')[0];
  let page = path === 'login' ? LOGIN : PAGES.find(p => p.path === path);
  if (!page) { go(session.get() ? home() : 'prices'); return; }
  if (!allowed(page)) {
    if (!session.get()) { sessionStorage.setItem('recycle.console.next', page.path); go('login'); return; }
    toast(`“${page.title}”需要${page.roles.map(r => ROLE_NAMES[r]).join('或')}角色`, 'error');
    go(home());
    return;
  }
  if (leave) { try { leave(); } catch { /* a page's clean-up must not block navigation */ } leave = null; }
  document.title = `${page.title} · 再生资源平台管理控制台`;
  renderChrome(page.path);
  const main = document.getElementById('main');
  main.replaceChildren(h('p', { class: 'muted' }, '加载中…'));
  try {
    const mod = await page.load();
    main.replaceChildren();
    leave = (await mod.render(main, { go, home })) || null;
  } catch (err) {
    main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `页面加载失败：${err.message}`));
    if (err.status === 401) go('login');
    return;
  }
  const heading = main.querySelector('h1');
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  const s = session.get();
  if (s && !s.phone_masked) {
    try { const me = await api('/v1/me'); session.set({ ...s, phone_masked: me.phone_masked }); } catch { /* shown on use */ }
  }
  route();
});
