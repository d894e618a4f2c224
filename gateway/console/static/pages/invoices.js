// 发票与报税 (accountants): the firm's reverse invoices with filters and the red-letter action; the monthly tax
// reports (代办税费明细/汇总) generated in the background with a progress bar, downloaded when done.
import { api, session } from '../api.js';
import { ask, dateTime, download, field, h, isoDay, select, showError, toast, yuan } from '../ui.js';

const KIND = { blue: '蓝字', red: '红字' };
const STATUS = { issued: '已开具', blocked: '已阻止' };
const EXPORTS_KEY = 'recycle.console.exports';

export async function render(main) {
  const month = isoDay(new Date()).slice(0, 7);
  main.append(h('h1', {}, '发票与报税'));
  const stopInvoices = invoices(main, month);
  const stopExports = exports(main, month);
  await stopInvoices.ready;
  return () => { stopExports(); };
}

function invoices(main, month) {
  const period = h('input', { type: 'month', name: 'period', value: month });
  const seller = h('input', { name: 'seller_id', placeholder: '全部卖方', maxlength: 64 });
  const status = select('status', [['', '全部'], ['issued', '已开具'], ['blocked', '已阻止']], '');
  const kind = select('kind', [['', '全部'], ['blue', '蓝字'], ['red', '红字']], '');
  const form = h('form', { class: 'card', 'aria-label': '筛选发票' },
    h('div', { class: 'row' }, field('所属月份', period), field('卖方编号', seller), field('状态', status), field('类型', kind),
      h('button', { type: 'submit' }, '查询')));
  const list = h('div', { id: 'invoices' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, '加载更多');
  main.append(h('h2', {}, '反向开票发票'), form, list, more);
  let cursor = null;
  let rows = null;
  const numbers = new Map(); // invoice id → number, to name the blue invoice a red one offsets

  async function redLetter(inv) {
    const reason = await ask(`红冲发票 ${inv.number || inv.id}`, '红冲原因（如：开票有误、销货退回）', { confirm: '开具红字发票', danger: true });
    if (reason === null) return;
    try {
      const red = await api(`/v1/invoices/${encodeURIComponent(inv.id)}/red-letter`, { method: 'POST', body: { reason } });
      toast(`已开具红字发票 ${red.number || red.id}`);
      load();
    } catch (err) { showError(err); }
  }

  function row(inv) {
    const canRed = inv.kind === 'blue' && inv.status === 'issued' && !inv.red_letter_id;
    return h('tr', { dataset: { id: inv.id } },
      h('td', {}, inv.number || '—'), h('td', {}, dateTime(inv.issued_at)),
      h('td', {}, inv.seller?.name_masked || '—', h('br'), h('span', { class: 'muted' }, inv.seller?.id_number_masked || '')),
      h('td', {}, KIND[inv.kind] + (inv.red_letter_of ? `（冲 ${numbers.get(inv.red_letter_of) || inv.red_letter_of}）` : '')),
      h('td', {}, inv.status === 'blocked' ? h('span', { class: 'badge bad', title: inv.blocked_detail || '' }, `已阻止：${inv.blocked_reason}`)
        : h('span', { class: 'badge ok' }, STATUS[inv.status]), inv.red_letter_id ? h('span', { class: 'badge restated' }, '已红冲') : ''),
      h('td', { class: 'num' }, yuan(inv.total_fen)), h('td', { class: 'num' }, yuan(inv.withheld_fen)),
      h('td', {}, canRed ? h('button', { type: 'button', class: 'danger', 'aria-label': `红冲 ${inv.number || inv.id}`, onclick: () => redLetter(inv) }, '红冲') : '—'));
  }

  async function load(next = false) {
    const q = new URLSearchParams({ limit: '50' });
    if (period.value) q.set('period', period.value);
    for (const el of [seller, status, kind]) if (el.value.trim()) q.set(el.name, el.value.trim());
    if (next && cursor) q.set('cursor', cursor);
    let page;
    try { page = await api(`/v1/invoices?${q}`); } catch (err) { showError(err, form); return; }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!next) {
      rows = h('tbody');
      list.replaceChildren(h('table', { id: 'invoice-table' },
        h('thead', {}, h('tr', {}, ...['发票号码', '开具时间', '卖方', '类型', '状态', '价税合计（元）', '代扣税费（元）', '操作'].map(t => h('th', { scope: 'col' }, t)))),
        rows));
    }
    for (const inv of page.items) numbers.set(inv.id, inv.number);
    rows.append(...page.items.map(row));
    if (!rows.children.length) list.replaceChildren(h('p', { class: 'muted' }, '没有符合条件的发票。'));
  }
  form.addEventListener('submit', ev => { ev.preventDefault(); load(); });
  more.addEventListener('click', () => load(true));
  return { ready: load() };
}

function exports(main, month) {
  const s = session.get();
  const period = h('input', { type: 'month', name: 'period', value: month, required: true });
  const kind = select('kind', [['detail', '代办税费明细表'], ['summary', '代办税费汇总表']], 'detail');
  const format = select('format', [['xlsx', 'Excel（xlsx）'], ['csv', 'CSV']], 'xlsx');
  const firms = s?.firm_ids || [];
  const firm = select('firm_id', firms.map(f => [f, f]), firms[0]);
  const form = h('form', { class: 'card', 'aria-label': '生成报税报表' },
    h('div', { class: 'row' }, field('所属期', period), field('报表', kind), field('格式', format),
      firms.length > 1 ? field('企业', firm) : null, h('button', { type: 'submit' }, '生成报表')));
  const list = h('tbody');
  main.append(h('h2', {}, '月度报税导出'), form,
    h('table', { id: 'export-table' },
      h('thead', {}, h('tr', {}, ...['所属期', '报表', '格式', '进度', '状态', '下载'].map(t => h('th', { scope: 'col' }, t)))), list));
  const timers = new Map();
  const known = JSON.parse(sessionStorage.getItem(EXPORTS_KEY) || '[]');

  function remember(id) {
    if (!known.includes(id)) { known.unshift(id); sessionStorage.setItem(EXPORTS_KEY, JSON.stringify(known.slice(0, 20))); }
  }

  function rowFor(job) {
    let tr = list.querySelector(`tr[data-id="${CSS.escape(job.id)}"]`);
    if (!tr) { tr = h('tr', { dataset: { id: job.id } }); list.prepend(tr); }
    const pct = Math.round((job.progress || 0) * 100);
    const label = { queued: '排队中', running: '生成中', done: '已完成', failed: '失败' }[job.status] || job.status;
    tr.dataset.status = job.status;
    tr.replaceChildren(
      h('td', {}, job.period), h('td', {}, job.kind === 'summary' ? '汇总表' : job.kind === 'annual' ? '年度表' : '明细表'),
      h('td', {}, job.format),
      h('td', {}, h('progress', { max: 100, value: pct, 'aria-label': `导出进度 ${job.period}` }), ` ${pct}%`,
        job.rows_total != null ? h('span', { class: 'muted' }, `（${job.rows_done}/${job.rows_total} 行）`) : ''),
      h('td', {}, job.error ? h('span', { class: 'error' }, `${label}：${job.error}`) : label),
      h('td', {}, job.status === 'done' ? h('button', { type: 'button', onclick: () => fetchFile(job) }, '下载') : '—'));
  }

  async function fetchFile(job) {
    try {
      const { blob, name } = await api(job.download_url, { as: 'blob' });
      download(blob, name);
    } catch (err) { showError(err); }
  }

  function watch(id) {
    const tick = async () => {
      try {
        const job = await api(`/v1/tax/exports/${encodeURIComponent(id)}`);
        rowFor(job);
        if (job.status === 'done' || job.status === 'failed') { timers.delete(id); return; }
      } catch (err) { showError(err); timers.delete(id); return; }
      timers.set(id, setTimeout(tick, 500));
    };
    tick();
  }

  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const body = { period: period.value, format: format.value, kind: kind.value };
    if (firms.length > 1) body.firm_id = firm.value;
    try {
      const job = await api('/v1/tax/exports', { method: 'POST', body });
      remember(job.id);
      rowFor({ period: body.period, kind: body.kind, format: body.format, progress: 0, ...job });
      watch(job.id);
      toast('报表已开始生成');
    } catch (err) { showError(err, form); }
  });
  for (const id of known.slice().reverse()) watch(id);
  return () => { for (const t of timers.values()) clearTimeout(t); timers.clear(); };
}
