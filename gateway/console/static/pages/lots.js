// 竞价大厅 (firms): open lots with their best bids kept live by the lots stream (GET /v1/lots/stream), bidding,
// listing a lot, the firm's own lots and its trades.
import { all, api, session, stream } from '../api.js';
import { dateTime, field, h, select, showError, toast, yuan } from '../ui.js';

const AUCTION = { ascending: '公开增价', sealed: '密封报价' };
const STATUS = { open: '竞价中', awarded: '已成交', unsold: '流拍', returned: '买方违约·退回' };
const BIDS_KEY = 'recycle.console.bid-lots';

export async function render(main) {
  const s = session.get();
  const mine = new Set(s.firm_ids);
  const categories = await api('/v1/categories');
  const catName = Object.fromEntries(categories.map(c => [c.code, c.name]));
  const live = h('span', { class: 'live', id: 'live-state', role: 'status' }, '实时：连接中…');
  const board = h('tbody');
  main.append(h('h1', {}, '竞价大厅'),
    h('section', { class: 'card', 'aria-labelledby': 'board-title' },
      h('h2', { id: 'board-title' }, '正在竞价的拍品 ', live),
      h('table', { id: 'lots-board' }, h('thead', {}, h('tr', {}, ...['拍品', '数量（吨）', '地区', '方式', '底价（元/吨）',
        '当前最高价（元/吨）', '出价数', '截止时间', '出价'].map(t => h('th', { scope: 'col' }, t)))), board)));

  const bidLots = () => JSON.parse(localStorage.getItem(`${BIDS_KEY}.${s.user_id}`) || '[]');
  const rememberBid = id => {
    const ids = [id, ...bidLots().filter(x => x !== id)].slice(0, 50);
    localStorage.setItem(`${BIDS_KEY}.${s.user_id}`, JSON.stringify(ids));
  };

  function bidCell(lot) {
    if (mine.has(lot.seller_firm_id)) return h('span', { class: 'muted' }, '本企业拍品');
    const min = lot.next_min_price_fen_per_t || lot.reserve_price_fen_per_t;
    const price = h('input', { type: 'number', name: 'price', min: 0.01, step: 0.01, size: 10, value: (min / 100).toFixed(2),
      'aria-label': `出价（元/吨）：${catName[lot.category] || lot.category} ${lot.grade}` });
    const form = h('form', { class: 'actions' }, price, h('button', { type: 'submit' }, '出价'));
    form.addEventListener('submit', async ev => {
      ev.preventDefault();
      const fen = Math.round(Number(price.value) * 100);
      try {
        await api(`/v1/lots/${encodeURIComponent(lot.id)}/bids`, { method: 'POST', body: { price_fen_per_t: fen } });
        rememberBid(lot.id);
        toast(`已出价 ${yuan(fen)} 元/吨`);
        loadMine();
      } catch (err) {
        const reason = err.problem?.reason;
        const why = { below_reserve: '低于底价', below_best_plus_increment: '低于当前最高价加最小加价', lot_closed: '拍品已截止',
          own_lot: '不能对本企业拍品出价', related_firm: '与卖方存在关联', related_party: '与卖方存在关联', deposit_required: '需先缴纳保证金' }[reason];
        showError(why ? { problem: { ...err.problem, title: `出价未被接受：${why}` } } : err, form);
      }
    });
    return form;
  }

  function rowFor(lot) {
    let tr = board.querySelector(`tr[data-id="${CSS.escape(lot.id)}"]`);
    if (!tr) { tr = h('tr', { dataset: { id: lot.id } }); board.prepend(tr); }
    const best = lot.auction === 'sealed' ? h('span', { class: 'muted' }, '密封') : yuan(lot.best_price_fen_per_t);
    const cells = [
      h('td', {}, `${catName[lot.category] || lot.category} · ${lot.grade}`),
      h('td', { class: 'num' }, lot.qty_t), h('td', {}, lot.city_code), h('td', {}, AUCTION[lot.auction] || lot.auction),
      h('td', { class: 'num' }, yuan(lot.reserve_price_fen_per_t)),
      h('td', { class: 'num best' }, best), h('td', { class: 'num bids' }, lot.bid_count == null ? '—' : String(lot.bid_count)),
      h('td', { class: 'ends' }, dateTime(lot.ends_at), lot.extensions ? h('span', { class: 'badge' }, `已延时 ${lot.extensions} 次`) : '')];
    const bid = tr.querySelector('td.bid');
    if (bid && bid.dataset.status === lot.status) {
      // a live update leaves the bid cell alone: a price being typed keeps its text and the focus
      cells.forEach((td, i) => tr.children[i].replaceWith(td));
      const price = bid.querySelector('input[name=price]');
      const min = lot.next_min_price_fen_per_t || lot.reserve_price_fen_per_t;
      if (price && document.activeElement !== price && Number(price.value) * 100 < min) price.value = (min / 100).toFixed(2);
    } else {
      tr.replaceChildren(...cells, h('td', { class: 'bid', dataset: { status: lot.status } },
        lot.status === 'open' ? bidCell(lot) : STATUS[lot.status]));
    }
    return tr;
  }

  const lots = new Map();
  for (const lot of await all('/v1/lots?status=open', 500)) { lots.set(lot.id, lot); }
  for (const lot of [...lots.values()].reverse()) rowFor(lot);

  const stop = stream('/v1/lots/stream', async (name, d) => {
    if (name === 'lot.listed') {
      try { const lot = await api(`/v1/lots/${encodeURIComponent(d.lot_id)}`); lots.set(lot.id, lot); rowFor(lot).classList.add('flash'); } catch { /* shown on reload */ }
    } else if (name === 'lot.best_bid') {
      const lot = lots.get(d.lot_id);
      if (!lot) return;
      Object.assign(lot, { best_price_fen_per_t: d.price_fen_per_t, bid_count: d.bid_count, ends_at: d.ends_at,
        extensions: lot.extensions + (d.extended ? 1 : 0) });
      try { Object.assign(lot, { next_min_price_fen_per_t: (await api(`/v1/lots/${encodeURIComponent(d.lot_id)}`)).next_min_price_fen_per_t }); } catch { /* keep the old minimum */ }
      const tr = rowFor(lot);
      tr.classList.remove('flash'); void tr.offsetWidth; tr.classList.add('flash');
    } else if (name === 'lot.closed') {
      const lot = lots.get(d.lot_id);
      if (!lot) return;
      Object.assign(lot, { status: d.status, bid_count: d.bid_count });
      rowFor(lot);
      loadMine();
    }
  }, state => { live.textContent = state === 'open' ? '实时：已连接' : '实时：重新连接中…'; live.dataset.state = state; });

  // listing a lot
  const cat = select('category', categories.filter(c => c.parent).map(c => [c.code, `${c.name}（${c.code}）`]), 'metal.steel');
  const grade = h('input', { name: 'grade', required: true, maxlength: 100, value: '一级' });
  const qty = h('input', { name: 'qty_t', required: true, inputmode: 'decimal', size: 8, value: '10' });
  const city = h('input', { name: 'city_code', required: true, inputmode: 'numeric', size: 8, maxlength: 6, value: '110105' });
  const auction = select('auction', [['ascending', '公开增价'], ['sealed', '密封报价']], 'ascending');
  const reserve = h('input', { name: 'reserve_price_fen_per_t', type: 'number', min: 0.01, step: 0.01, required: true, size: 10, value: '2000' });
  const increment = h('input', { name: 'min_increment_fen_per_t', type: 'number', min: 0.01, step: 0.01, size: 8, value: '10' });
  const ends = h('input', { name: 'ends_at', type: 'datetime-local', required: true,
    value: new Date(Date.now() + 3600e3 - new Date().getTimezoneOffset() * 60e3).toISOString().slice(0, 16) });
  const source = select('source', [['intake', '平台回收入库'], ['purchase', '平台外采购']], 'intake');
  const ref = h('input', { name: 'purchase_ref', maxlength: 200, placeholder: '采购合同或发票号' });
  const listForm = h('form', { class: 'card', 'aria-label': '挂牌拍品' },
    h('div', { class: 'row' }, field('品类', cat), field('等级', grade), field('数量（吨）', qty), field('城市代码', city),
      field('方式', auction), field('底价（元/吨）', reserve), field('最小加价（元/吨）', increment), field('截止时间', ends),
      field('来源', source), field('采购凭证', ref), h('button', { type: 'submit' }, '挂牌')));
  listForm.addEventListener('submit', async ev => {
    ev.preventDefault();
    const body = { category: cat.value, grade: grade.value.trim(), qty_t: qty.value.trim(), city_code: city.value.trim(),
      auction: auction.value, reserve_price_fen_per_t: Math.round(Number(reserve.value) * 100),
      ends_at: new Date(ends.value).toISOString(), source: source.value };
    if (increment.value) body.min_increment_fen_per_t = Math.round(Number(increment.value) * 100);
    if (source.value === 'purchase') body.purchase_ref = ref.value.trim();
    try {
      const lot = await api('/v1/lots', { method: 'POST', body });
      toast(`拍品已挂牌（${lot.id}）`);
      loadMine();
    } catch (err) { showError(err, listForm); }
  });

  // the firm's own lots, and the trades it sold or bought
  const myLots = h('div', { id: 'my-lots' });
  const myTrades = h('div', { id: 'my-trades' });
  main.append(h('h2', {}, '挂牌'), listForm, h('h2', {}, '我的拍品'), myLots, h('h2', {}, '我的成交与出价'), myTrades);

  async function loadMine() {
    try {
      const own = (await Promise.all([...mine].map(f => all(`/v1/lots?seller_firm_id=${encodeURIComponent(f)}`, 200)))).flat();
      myLots.replaceChildren(own.length ? h('table', {},
        h('thead', {}, h('tr', {}, ...['拍品', '数量（吨）', '方式', '状态', '出价数', '最高价（元/吨）', '截止时间', '成交'].map(t => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...own.map(l => h('tr', { dataset: { id: l.id } },
          h('td', {}, `${catName[l.category] || l.category} · ${l.grade}`), h('td', { class: 'num' }, l.qty_t),
          h('td', {}, AUCTION[l.auction]), h('td', {}, STATUS[l.status] || l.status), h('td', { class: 'num' }, l.bid_count == null ? '—' : String(l.bid_count)),
          h('td', { class: 'num' }, yuan(l.best_price_fen_per_t)), h('td', {}, dateTime(l.ends_at)), h('td', {}, l.trade_id || '—')))))
        : h('p', { class: 'muted' }, '本企业暂无拍品。'));
      const bidOn = await Promise.all(bidLots().map(id => api(`/v1/lots/${encodeURIComponent(id)}`).catch(() => null)));
      const tradeIds = [...own, ...bidOn.filter(Boolean)].map(l => l.trade_id).filter(Boolean);
      const trades = (await Promise.all([...new Set(tradeIds)].map(id => api(`/v1/trades/${encodeURIComponent(id)}`).catch(() => null)))).filter(Boolean);
      const rows = [
        ...trades.map(t => h('tr', { dataset: { trade: t.id } }, h('td', {}, mine.has(t.seller_firm_id) ? '卖出' : '买入'),
          h('td', {}, t.lot_id), h('td', { class: 'num' }, yuan(t.price_fen_per_t)), h('td', {}, t.status))),
        ...bidOn.filter(l => l && !l.trade_id).map(l => h('tr', { dataset: { lot: l.id } }, h('td', {}, '出价'),
          h('td', {}, `${catName[l.category] || l.category} · ${l.grade}`),
          h('td', { class: 'num' }, l.your_bids?.length ? yuan(Math.max(...l.your_bids.map(b => b.price_fen_per_t))) : '—'),
          h('td', {}, STATUS[l.status] || l.status))),
      ];
      myTrades.replaceChildren(rows.length ? h('table', {},
        h('thead', {}, h('tr', {}, ...['类别', '拍品', '价格（元/吨）', '状态'].map(t => h('th', { scope: 'col' }, t)))), h('tbody', {}, ...rows))
        : h('p', { class: 'muted' }, '暂无成交或出价。'));
    } catch (err) { showError(err); }
  }
  await loadMine();
  return stop;
}
