// 价格指数: a category's daily price in a region and the family indices, with stale and restated points marked;
// correction notices, the methodology and a CSV download. Public data: no sign-in needed.
import * as echarts from '../vendor/echarts.esm.min.mjs';
import { all, api } from '../api.js';
import { dateTime, field, h, isoDay, select, showError } from '../ui.js';

// the fallback chain's levels (methodology `fallback.chain`) as the page names them
const LEVEL_NAMES = { city: '城市', county: '区县', province: '省份', national: '全国' };

const NATIONAL = '000000';
const DAY_MS = 86400000;
const DEFAULT_CATEGORY = 'paper.cardboard'; // 黄纸板: the most traded grade, shown first

let regionsCache = null;
async function regions() {
  regionsCache = regionsCache || fetch('/console/regions.json').then(r => r.json());
  return regionsCache;
}

const num = v => (v === null || v === undefined ? null : Number(v));

/** One chart point; stale and restated points carry their own symbol so they stand out. */
function point(item, scale) {
  const restated = item.version > 1;
  const value = item.value === null ? null : num(item.value) / scale;
  const p = { value: [item.date, value], item };
  if (restated) {
    p.symbol = 'diamond'; p.symbolSize = 12; p.itemStyle = { color: '#c62828' };
  } else if (item.stale) {
    p.symbol = 'emptyCircle'; p.symbolSize = 10; p.itemStyle = { color: '#7b8794' };
  }
  return p;
}

function tooltip(params, names) {
  const lines = [params[0] ? params[0].value[0] : ''];
  for (const p of params) {
    const it = p.data.item;
    const flags = [it.stale ? '陈旧' : '', it.version > 1 ? `已更正（第 ${it.version} 版）` : '',
      it.status === 'fallback' && it.source_region ? `取自${names.get(it.source_region) || it.source_region}` : ''].filter(Boolean).join('，');
    const v = p.value[1] === null ? '数据不足' : p.value[1];
    lines.push(`${p.marker}${p.seriesName}：${v}${flags ? `（${flags}）` : ''}`);
  }
  return lines.join('<br>');
}

export async function render(main) {
  const [method, regionRows] = await Promise.all([
    api('/v1/prices/methodology', { accept: 'application/json' }), regions()]);
  const categories = Object.entries(method.categories);
  const families = Object.entries(method.families);
  const names = new Map(regionRows);
  names.set(NATIONAL, '全国');
  const provinces = regionRows.filter(([c]) => c.endsWith('0000'));

  const today = new Date();
  const state = { category: method.categories[DEFAULT_CATEGORY] ? DEFAULT_CATEGORY : categories[0][0], province: NATIONAL, local: '', from: isoDay(new Date(today - 30 * DAY_MS)), to: isoDay(today) };
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  for (const k of Object.keys(state)) if (params.get(k)) state[k] = params.get(k);

  const catSel = select('category', categories.map(([c, v]) => [c, `${v.name}（${c}）`]), state.category);
  const provSel = select('province', [[NATIONAL, '全国'], ...provinces], state.province);
  const localSel = select('local', [], '');
  const from = h('input', { type: 'date', name: 'from', value: state.from });
  const to = h('input', { type: 'date', name: 'to', value: state.to });
  const csv = h('a', { id: 'csv-link', download: true }, '下载 CSV');
  const form = h('form', { class: 'card', 'aria-label': '选择品类与地区' },
    h('div', { class: 'row' },
      field('品类', catSel), field('省份', provSel), field('城市 / 区县', localSel),
      field('开始日期', from), field('结束日期', to),
      h('button', { type: 'submit' }, '查询'), csv));

  function fillLocal() {
    const p = provSel.value;
    const opts = p === NATIONAL ? [['', '—']]
      : [['', '全省（市）'], ...regionRows.filter(([c]) => c !== p && c.startsWith(p.slice(0, 2)))
        .map(([c, n]) => [c, c.endsWith('00') ? n : `　${n}`])];
    localSel.replaceChildren(...opts.map(([v, t]) => h('option', { value: v, selected: v === state.local }, t)));
    localSel.disabled = p === NATIONAL;
  }
  fillLocal();

  const chartBox = h('div', { class: 'chart', id: 'price-chart', role: 'img' });
  const summary = h('p', { class: 'hint', id: 'chart-summary', 'aria-live': 'polite' });
  const tableBox = h('div');
  const noticesBox = h('div', { id: 'notices' });
  const methodBox = h('div');
  main.append(
    h('h1', {}, '再生资源价格指数'), form,
    h('section', { class: 'card', 'aria-labelledby': 'chart-title' },
      h('h2', { id: 'chart-title' }, '日度价格与品类指数'), chartBox,
      h('p', { class: 'legend-note' },
        h('span', { class: 'badge stale' }, '○ 陈旧'), ' 本地区样本不足，沿用上级地区数值；',
        h('span', { class: 'badge restated' }, '◆ 已更正'), ' 该日数值已重述（见更正公告）。左轴：元/单位；右轴：指数（',
        method.composite.base_date, ' = ', String(method.composite.base_value), '）。'),
      summary,
      h('details', {}, h('summary', {}, '数据表'), tableBox)),
    h('section', { class: 'card', 'aria-labelledby': 'notices-title' },
      h('h2', { id: 'notices-title' }, '更正公告'), noticesBox),
    h('section', { class: 'card', 'aria-labelledby': 'method-title' },
      h('h2', { id: 'method-title' }, `编制方法（${method.version}）`), methodBox));

  methodBox.append(
    h('p', {}, `${method.title}。每日 ${method.specification.publication_time}（${method.specification.timezone}）发布前一日数据；`
      + `剔除中位数 ± ${method.outliers.k}·MAD 之外的报价；每个序列至少 ${method.quorum.min_observations} 笔成交、`
      + `${method.quorum.min_counterparties} 个交易对手，不足时依次回退：${method.fallback.chain.map(l => LEVEL_NAMES[l] || l).join(' → ')}。`
      + `迟到数据 ${method.restatement.late_data_days} 天内可重述并发布更正公告。`),
    // the methodology document is English; the page summarises its rules in Chinese (方法全文 has the original)
    h('p', { id: 'confidentiality' }, '数据保密：居民、回收员和回收企业的身份从不公开，发布的数值只附带笔数。'));
  const full = h('details', {}, h('summary', {}, '方法全文'), h('pre', { class: 'doc', id: 'methodology-text' }, '加载中…'));
  full.addEventListener('toggle', async () => {
    if (full.open && full.dataset.loaded !== '1') {
      full.dataset.loaded = '1';
      full.querySelector('pre').textContent = await api('/v1/prices/methodology', { as: 'text', accept: 'text/markdown' });
    }
  }, { once: false });
  methodBox.append(full);

  const chart = echarts.init(chartBox, null, { locale: 'ZH', renderer: 'canvas' });
  const resize = () => chart.resize();
  window.addEventListener('resize', resize);

  let loads = 0; // answers to an older selection that arrive late are dropped
  async function load() {
    const mine = ++loads;
    const region = localSel.value || provSel.value;
    Object.assign(state, { category: catSel.value, province: provSel.value, local: localSel.value, from: from.value, to: to.value });
    history.replaceState(null, '', `#/prices?${new URLSearchParams(state)}`);
    const range = new URLSearchParams({ from: from.value, to: to.value });
    csv.href = `/v1/prices/indices.csv?${new URLSearchParams({ code: catSel.value, region })}&${range}`;
    const cat = method.categories[catSel.value];
    const inFamily = families.filter(([, f]) => f.components.includes(catSel.value)).map(([c]) => c);
    let series, fam, notices;
    try {
      [series, fam, notices] = await Promise.all([
        all(`/v1/prices/indices?${new URLSearchParams({ code: catSel.value, region })}&${range}`),
        Promise.all(families.map(([code]) => all(`/v1/prices/indices?code=${code}&region=${NATIONAL}&${range}`))),
        api(`/v1/prices/notices?${new URLSearchParams({ code: catSel.value, region })}&${range}&limit=50`),
      ]);
    } catch (err) { if (mine === loads) showError(err, form); return; }
    if (mine !== loads) return;
    const label = `${cat.name} · ${names.get(region) || region}`;
    const unit = cat.unit === 'kg' ? '元/千克' : '元/件';
    chart.setOption({
      animation: false,
      tooltip: { trigger: 'axis', formatter: params => tooltip(params, names) },
      legend: {
        top: 0, type: 'scroll',
        selected: Object.fromEntries(families.map(([c, f]) => [`${f.name}指数`, inFamily.includes(c) || c === 'all'])),
      },
      grid: { left: 64, right: 64, top: 48, bottom: 72 },
      xAxis: { type: 'time' },
      yAxis: [{ type: 'value', name: unit, scale: true }, { type: 'value', name: '指数', scale: true, splitLine: { show: false } }],
      dataZoom: [{ type: 'inside' }, { type: 'slider', bottom: 12 }],
      series: [
        { name: label, type: 'line', yAxisIndex: 0, showAllSymbol: true, symbolSize: 6, connectNulls: false,
          data: series.map(i => point(i, 100)) },
        ...families.map(([code, f], k) => ({
          name: `${f.name}指数`, type: 'line', yAxisIndex: 1, showAllSymbol: true, symbolSize: 5,
          lineStyle: { type: 'dashed' }, data: fam[k].map(i => point(i, 1)),
        })),
      ],
    }, { notMerge: true });
    const stale = series.filter(i => i.stale).length;
    const restated = series.filter(i => i.version > 1).length;
    const valued = series.filter(i => i.value !== null).length;
    Object.assign(chartBox.dataset, { points: String(series.length), valued: String(valued), stale: String(stale),
      restated: String(restated), indexPoints: String(fam.reduce((n, f) => n + f.filter(i => i.value !== null).length, 0)) });
    chartBox.setAttribute('aria-label', `${label}：${series.length} 个交易日，其中陈旧 ${stale} 个、已更正 ${restated} 个`);
    summary.textContent = series.length
      ? `${label}：${series.length} 个交易日，${valued} 个有数值，陈旧 ${stale} 个，已更正 ${restated} 个。`
      : `${label} 在所选期间没有发布数据。`;

    tableBox.replaceChildren(h('table', { id: 'series-table' },
      h('caption', { class: 'muted' }, label),
      h('thead', {}, h('tr', {}, ...['日期', `价格（${unit}）`, '版本', '状态', '样本数', '标记'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...series.map(i => h('tr', {},
        h('td', {}, i.date), h('td', { class: 'num' }, i.value === null ? '—' : (num(i.value) / 100).toFixed(2)),
        h('td', { class: 'num' }, String(i.version)), h('td', {}, i.status), h('td', { class: 'num' }, String(i.n_obs)),
        h('td', {}, i.stale ? h('span', { class: 'badge stale' }, '陈旧') : '',
          i.version > 1 ? h('span', { class: 'badge restated' }, '已更正') : ''))))));

    noticesBox.replaceChildren(notices.items.length
      ? h('table', { id: 'notices-table' },
        h('thead', {}, h('tr', {}, ...['日期', '地区', '版本', '原值', '新值', '原因', '发布时间'].map(t => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...notices.items.map(n => h('tr', {},
          h('td', {}, n.date), h('td', {}, names.get(n.region) || n.region),
          h('td', { class: 'num' }, `${n.old_version} → ${n.new_version}`),
          h('td', { class: 'num' }, n.old_value === null ? '—' : (num(n.old_value) / 100).toFixed(2)),
          h('td', { class: 'num' }, n.new_value === null ? '—' : (num(n.new_value) / 100).toFixed(2)),
          h('td', {}, n.reason), h('td', {}, dateTime(n.published_at))))))
      : h('p', { class: 'muted' }, '所选期间没有更正。'));
  }

  provSel.addEventListener('change', () => { state.local = ''; fillLocal(); load(); });
  for (const el of [catSel, localSel]) el.addEventListener('change', load);
  form.addEventListener('submit', ev => { ev.preventDefault(); load(); });
  await load();
  return () => { window.removeEventListener('resize', resize); chart.dispose(); };
}
