// 二手订单 (admins): every second-hand order by status (GET /v1/admin/orders), and the filter 付款失败
// (`payment_failed=true`): shipped orders whose buyer's payment was let go before it reached escrow. Nobody holds
// their money, they cannot complete until the buyer pays again, and the seller or an admin may cancel them (取消).
import { api } from '../api.js';
import { dateTime, field, h, select, showError, toast, yuan } from '../ui.js';

const STATUSES = [['', '全部'], ['pending_payment', '待付款'], ['paid', '已付款'], ['shipped', '已发货'],
  ['completed', '已完成'], ['cancelled', '已取消'], ['expired', '已过期']];
const STATUS_NAMES = Object.fromEntries(STATUSES);
const PAYMENT_NAMES = {
  requested: '等待支付单', requires_payment_method: '待买家付款', held: '已授权', declined: '被拒付',
  escrowed: '已入托管', captured: '已结算', cancelled: '已撤销', refunded: '已退款',
};
const FAILURE_NAMES = { authorisation_lapsed: '授权已失效', payment_cancelled: '付款被撤销' };
// an admin cancels before shipping (the hold is released) or after (a dispute decided for the buyer: refunded)
const CANCELLABLE = new Set(['pending_payment', 'paid', 'shipped']);

export async function render(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const status = select('status', STATUSES, params.get('status') || '');
  const failed = h('input', { type: 'checkbox', name: 'payment_failed', checked: params.get('payment_failed') === 'true' });
  const form = h('form', { class: 'card', 'aria-label': '筛选订单' },
    h('div', { class: 'row' }, field('订单状态', status), field('仅付款失败（已发货，资金未入托管）', failed),
      h('button', { type: 'submit' }, '查询')));
  const list = h('div', { id: 'orders' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, '加载更多');
  main.append(h('h1', {}, '二手订单'),
    h('p', { class: 'hint' }, '付款失败：卖家已发货，但买家的付款授权在资金进入托管前失效，平台未收到款项。订单无法完成，需买家重新付款；卖家或管理员可以取消订单。'),
    form, list, more);
  let cursor = null;
  let rows = null;

  function row(o) {
    const p = o.payment || {};
    return h('tr', { dataset: { id: o.id } },
      h('td', { class: 'id' }, o.id), h('td', { class: 'id' }, o.listing_id),
      h('td', { class: 'id' }, o.buyer_id), h('td', { class: 'id' }, o.seller_id),
      h('td', { class: 'num' }, yuan(o.amount_fen)),
      h('td', {}, STATUS_NAMES[o.status] || o.status),
      h('td', { class: 'nowrap' }, PAYMENT_NAMES[p.status] || p.status || '—', p.attempt > 1 ? [h('br'), h('span', { class: 'muted' }, `（第 ${p.attempt} 次）`)] : ''),
      h('td', {}, p.failure_reason
        ? [h('span', { class: 'badge bad nowrap' }, FAILURE_NAMES[p.failure_reason] || p.failure_reason), h('br'), h('span', { class: 'muted' }, dateTime(p.failed_at))]
        : '—'),
      h('td', {}, dateTime(o.created_at)), h('td', {}, dateTime(o.shipped_at)),
      h('td', {}, CANCELLABLE.has(o.status)
        ? h('button', { type: 'button', class: 'danger', 'aria-label': `取消订单 ${o.id}`, onclick: () => cancel(o) }, '取消')
        : '—'));
  }

  async function cancel(o) {
    const held = o.status === 'shipped' && o.payment?.failure_reason ? '平台未收到款项，无需退款。' : '已付款项将全额退回买家。';
    if (!confirm(`取消订单 ${o.id}？${held}`)) return;
    try {
      await api(`/v1/orders/${encodeURIComponent(o.id)}/cancel`, { method: 'POST' });
      toast(`订单 ${o.id} 已取消`);
      load();
    } catch (err) { showError(err); }
  }

  async function load(next = false) {
    const q = new URLSearchParams({ limit: '50' });
    if (failed.checked) q.set('payment_failed', 'true');
    else if (status.value) q.set('status', status.value);
    if (next && cursor) q.set('cursor', cursor);
    if (!next) {
      const shown = new URLSearchParams();
      if (failed.checked) shown.set('payment_failed', 'true'); else if (status.value) shown.set('status', status.value);
      history.replaceState(null, '', `#/orders${shown.toString() ? `?${shown}` : ''}`);
    }
    let page;
    try { page = await api(`/v1/admin/orders?${q}`); } catch (err) { showError(err, form); return; }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!next) {
      rows = h('tbody');
      list.replaceChildren(h('table', { id: 'order-table' },
        h('thead', {}, h('tr', {}, ...['订单号', '商品', '买家', '卖家', '金额（元）', '订单状态', '付款', '付款失败', '下单时间', '发货时间', '操作']
          .map(t => h('th', { scope: 'col' }, t)))),
        rows));
    }
    rows.append(...page.items.map(row));
    if (!rows.children.length) {
      list.replaceChildren(h('p', { class: 'muted' }, failed.checked ? '没有付款失败的订单。' : '没有符合条件的订单。'));
    }
  }
  // the payment_failed filter lists shipped orders only: the status filter does not apply with it
  const sync = () => { status.disabled = failed.checked; };
  sync();
  form.addEventListener('submit', ev => { ev.preventDefault(); load(); });
  status.addEventListener('change', () => load());
  failed.addEventListener('change', () => { sync(); load(); });
  more.addEventListener('click', () => load(true));
  await load();
}
