// 审核与运维 (admin): the verification queue, dead letters per consumer group with replay, and the wipe tools.
import { api } from '../api.js';
import { ask, dateTime, field, h, select, showError, toast } from '../ui.js';

const KINDS = [['', '全部'], ['firm', '回收企业'], ['qualification', '企业资质'], ['collector', '回收员']];
const STATUSES = [['pending', '待审核'], ['verified', '已通过'], ['rejected', '已驳回']];
const KIND_NAMES = Object.fromEntries(KINDS);
const STATUS_NAMES = Object.fromEntries(STATUSES);

export async function render(main) {
  const tabs = [['queue', '审核队列', verificationQueue], ['dead', '死信', deadLetters], ['wipe', '清除工具', wipeTools]];
  const which = new URLSearchParams(location.hash.split('?')[1] || '').get('tab') || 'queue';
  const body = h('div');
  const nav = h('div', { class: 'actions', role: 'tablist', 'aria-label': '运维功能' });
  let leave = null;
  async function open(id) {
    if (leave) { leave(); leave = null; }
    for (const b of nav.children) b.setAttribute('aria-selected', String(b.dataset.tab === id));
    history.replaceState(null, '', `#/admin?tab=${id}`);
    body.replaceChildren();
    leave = (await tabs.find(t => t[0] === id)[2](body)) || null;
  }
  for (const [id, title] of tabs) {
    nav.append(h('button', { type: 'button', role: 'tab', class: 'secondary', dataset: { tab: id }, onclick: () => open(id) }, title));
  }
  main.append(h('h1', {}, '审核与运维'), nav, body);
  await open(tabs.some(t => t[0] === which) ? which : 'queue');
  return () => { if (leave) leave(); };
}

async function verificationQueue(box) {
  const kind = select('kind', KINDS, '');
  const status = select('status', STATUSES, 'pending');
  const form = h('form', { class: 'card', 'aria-label': '筛选审核' },
    h('div', { class: 'row' }, field('类型', kind), field('状态', status), h('button', { type: 'submit' }, '刷新')));
  const list = h('div', { id: 'verifications' });
  box.append(h('h2', {}, '审核队列'), form, list);

  async function decide(item, action) {
    let body;
    if (action === 'reject') {
      const reason = await ask(`驳回${KIND_NAMES[item.kind]}`, '驳回原因', { confirm: '驳回', danger: true });
      if (reason === null) return;
      body = { reason };
    }
    try {
      await api(`/v1/admin/verifications/${item.kind}/${encodeURIComponent(item.id)}/${action}`, { method: 'POST', body });
      toast(`${item.summary}：${action === 'approve' ? '已通过' : '已驳回'}`);
      load();
    } catch (err) { showError(err); }
  }

  async function load() {
    const q = new URLSearchParams({ status: status.value, limit: '100' });
    if (kind.value) q.set('kind', kind.value);
    let page;
    try { page = await api(`/v1/admin/verifications?${q}`); } catch (err) { showError(err, form); return; }
    list.replaceChildren(page.items.length ? h('table', {},
      h('thead', {}, h('tr', {}, ...['类型', '申请', '企业', '提交时间', '状态', '操作'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...page.items.map(it => h('tr', { dataset: { id: it.id } },
        h('td', {}, KIND_NAMES[it.kind]), h('td', {}, it.summary), h('td', {}, it.firm_id),
        h('td', {}, dateTime(it.created_at)), h('td', {}, STATUS_NAMES[it.status]),
        h('td', { class: 'actions' }, it.status === 'pending' ? [
          h('button', { type: 'button', onclick: () => decide(it, 'approve'), 'aria-label': `通过：${it.summary}` }, '通过'),
          h('button', { type: 'button', class: 'danger', onclick: () => decide(it, 'reject'), 'aria-label': `驳回：${it.summary}` }, '驳回'),
        ] : '—')))))
      : h('p', { class: 'muted' }, '没有符合条件的申请。'));
  }
  form.addEventListener('submit', ev => { ev.preventDefault(); load(); });
  kind.addEventListener('change', load);
  status.addEventListener('change', load);
  await load();
}

async function deadLetters(box) {
  const groups = h('div', { id: 'dead-letter-groups' });
  const detail = h('div', { id: 'dead-letter-records' });
  box.append(h('h2', {}, '死信（按消费组）'),
    h('p', { class: 'hint' }, '消费者多次处理失败的事件会被搁置在死信中。修复原因后重放：事件回到原主题，收件箱保证已处理过的不会重复处理。'),
    groups, detail);

  async function show(group) {
    let page;
    try { page = await api(`/v1/admin/dead-letters/${encodeURIComponent(group)}`); } catch (err) { showError(err); return; }
    detail.replaceChildren(h('h2', {}, `消费组 ${group}`), page.items.length ? h('table', {},
      h('thead', {}, h('tr', {}, ...['位置', '事件类型', '原主题', '尝试次数', '错误'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...page.items.map(r => h('tr', {},
        h('td', {}, r.id), h('td', {}, r.type || '—'), h('td', {}, r.original),
        h('td', { class: 'num' }, String(r.attempts)), h('td', {}, h('code', {}, r.error))))))
      : h('p', { class: 'muted' }, '没有死信。'));
  }

  async function replay(group, parked) {
    try {
      const out = await api(`/v1/admin/dead-letters/${encodeURIComponent(group)}/replay`, { method: 'POST', body: {} });
      toast(`${group}：已重放 ${out.replayed} 条（共 ${parked} 条）`);
      load();
    } catch (err) { showError(err); }
  }

  async function load() {
    let page;
    try { page = await api('/v1/admin/dead-letters'); } catch (err) { showError(err); return; }
    groups.replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ...['消费组', '死信数', '操作'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...page.items.map(g => h('tr', { dataset: { group: g.group } },
        h('td', {}, g.group),
        h('td', { class: 'num' }, g.parked ? h('span', { class: 'badge bad' }, String(g.parked)) : '0'),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', onclick: () => show(g.group), 'aria-label': `查看 ${g.group} 的死信` }, '查看'),
          h('button', { type: 'button', disabled: !g.parked, onclick: () => replay(g.group, g.parked), 'aria-label': `重放 ${g.group} 的死信` }, '重放')))))));
  }
  await load();
}

async function wipeTools(box) {
  const name = h('input', { name: 'name', required: true, maxlength: 200 });
  const key = h('input', { name: 'public_key', required: true, size: 48, maxlength: 64 });
  const addForm = h('form', { class: 'card', 'aria-label': '登记清除工具' },
    h('div', { class: 'row' }, field('工具名称', name), field('公钥（Ed25519，Base64）', key), h('button', { type: 'submit' }, '登记')));
  const list = h('div', { id: 'wipe-tools' });
  const imei = h('input', { name: 'imei', required: true, inputmode: 'numeric', maxlength: 20 });
  const blockForm = h('form', { class: 'card', 'aria-label': '挂失设备' },
    h('div', { class: 'row' }, field('IMEI（丢失或被盗的设备）', imei), h('button', { type: 'submit', class: 'danger' }, '加入黑名单')));
  const cert = h('input', { name: 'certificate_id', required: true, maxlength: 40 });
  const certForm = h('form', { class: 'card', 'aria-label': '撤销清除证书' },
    h('div', { class: 'row' }, field('证书编号', cert), h('button', { type: 'submit', class: 'danger' }, '撤销证书')));
  box.append(h('h2', {}, '清除工具'), addForm, list, h('h2', {}, '设备黑名单'), blockForm, h('h2', {}, '撤销证书'), certForm);

  async function load() {
    let page;
    try { page = await api('/v1/wipe/tools'); } catch (err) { showError(err); return; }
    list.replaceChildren(page.items.length ? h('table', {},
      h('thead', {}, h('tr', {}, ...['名称', '指纹', '登记时间', '状态', '操作'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...page.items.map(t => h('tr', { dataset: { id: t.id } },
        h('td', {}, t.name), h('td', {}, h('code', {}, t.fingerprint.slice(0, 16) + '…')), h('td', {}, dateTime(t.created_at)),
        h('td', {}, t.status === 'active' ? h('span', { class: 'badge ok' }, '有效') : h('span', { class: 'badge bad' }, `已吊销 ${dateTime(t.revoked_at)}`)),
        h('td', {}, t.status === 'active' ? h('button', { type: 'button', class: 'danger', 'aria-label': `吊销工具 ${t.name}`, onclick: async () => {
          if (!confirm(`吊销工具“${t.name}”？它签发的证书将一并失效。`)) return;
          try {
            const out = await api(`/v1/wipe/tools/${encodeURIComponent(t.id)}/revoke`, { method: 'POST' });
            toast(`已吊销，${out.certificates_revoked} 张证书随之失效`);
            load();
          } catch (err) { showError(err); }
        } }, '吊销') : '—')))))
      : h('p', { class: 'muted' }, '尚未登记清除工具。'));
  }
  addForm.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      await api('/v1/wipe/tools', { method: 'POST', body: { name: name.value.trim(), public_key: key.value.trim() } });
      toast(`已登记工具“${name.value.trim()}”`);
      addForm.reset();
      load();
    } catch (err) { showError(err, addForm); }
  });
  blockForm.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      const out = await api('/v1/admin/devices/blocklist', { method: 'POST', body: { imei: imei.value.trim() } });
      toast(`${out.imei_masked} 已加入黑名单，撤销证书 ${out.certificates_revoked} 张`);
      blockForm.reset();
    } catch (err) { showError(err, blockForm); }
  });
  certForm.addEventListener('submit', async ev => {
    ev.preventDefault();
    const reason = await ask('撤销清除证书', '撤销原因', { confirm: '撤销', danger: true });
    if (reason === null) return;
    try {
      await api(`/v1/wipe/certificates/${encodeURIComponent(cert.value.trim())}/revoke`, { method: 'POST', body: { reason } });
      toast('证书已撤销');
      certForm.reset();
    } catch (err) { showError(err, certForm); }
  });
  await load();
}
