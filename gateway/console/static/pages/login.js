// 登录: phone + one-time code, the API's own login (POST /v1/auth/otp, /v1/auth/token).
import { api, session } from '../api.js';
import { field, h, showError, toast } from '../ui.js';

export async function render(main, { go, home }) {
  const phone = h('input', { name: 'phone', type: 'tel', inputmode: 'numeric', autocomplete: 'tel', required: true,
    maxlength: 20, placeholder: '例如 13812345678' });
  const code = h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', required: true,
    maxlength: 8, pattern: '[0-9]{4,8}' });
  const sendBtn = h('button', { type: 'button', class: 'secondary', id: 'send-code' }, '获取验证码');
  const status = h('p', { class: 'hint', role: 'status', id: 'otp-status' });
  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-title', novalidate: true },
    h('h1', { id: 'login-title' }, '登录'),
    field('手机号', phone),
    h('div', { class: 'actions' }, sendBtn),
    status,
    field('验证码', code),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, '登录')),
    h('p', { class: 'hint' }, '与手机应用同一账号；角色（会计、管理员、回收企业）由平台授予。'));
  main.append(form);

  sendBtn.addEventListener('click', async () => {
    sendBtn.disabled = true;
    try {
      const sent = await api('/v1/auth/otp', { method: 'POST', body: { phone: phone.value.trim() } });
      status.textContent = `验证码已发送至 ${sent.phone_masked}，${Math.round(sent.expires_in_s / 60)} 分钟内有效。`
        + (sent.dev_code ? `（开发环境验证码：${sent.dev_code}）` : '');
      code.focus();
    } catch (err) {
      showError(err, form);
      phone.focus();
    } finally {
      setTimeout(() => { sendBtn.disabled = false; }, 1500);
    }
  });

  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      const tokens = await api('/v1/auth/token', { method: 'POST', body: { phone: phone.value.trim(), code: code.value.trim() } });
      session.set(tokens);
      try {
        const me = await api('/v1/me');
        session.set({ ...tokens, phone_masked: me.phone_masked });
      } catch { /* the masked phone is only shown in the header */ }
      toast('登录成功');
      const next = sessionStorage.getItem('recycle.console.next');
      sessionStorage.removeItem('recycle.console.next');
      go(next || home());
    } catch (err) {
      showError(err, form);
      code.focus();
    }
  });
  phone.focus();
}
