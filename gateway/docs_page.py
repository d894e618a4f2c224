"""An API docs page that works offline: renders /openapi.json with a few lines of inline script (no CDN)."""

from __future__ import annotations

from aiohttp import web

PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>API 文档 · Recycling marketplace</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}code{background:#f3f3f3;padding:1px 4px}
.op{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.5em .8em}.m{font-weight:bold;display:inline-block;width:4em}
.GET{color:#1565c0}.POST{color:#2e7d32}.pol{color:#777;font-size:12px;margin-left:1em}pre{background:#fafafa;padding:.5em;overflow:auto;max-height:20em}
h2{margin-top:1.5em;border-bottom:1px solid #eee}input{padding:.3em;width:20em}
</style></head><body><h1>Recycling marketplace API</h1>
<p>Generated from <a href="/openapi.json">/openapi.json</a>. Errors are <code>application/problem+json</code>.
Sign in: <code>POST /v1/auth/otp</code> then <code>POST /v1/auth/token</code>, and send
<code>Authorization: Bearer &lt;access_token&gt;</code>. POSTs accept an <code>Idempotency-Key</code> header.</p>
<p><input id="q" placeholder="filter: path, tag or summary"></p><div id="ops">loading…</div>
<script>
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
let doc=null;
function schemaOf(s){if(!s)return null;if(s.$ref){const n=s.$ref.split('/').pop();return [n,doc.components.schemas[n]];}
 if(s.items&&s.items.$ref){const n=s.items.$ref.split('/').pop();return ['list of '+n,doc.components.schemas[n]];}return ['schema',s];}
function block(label,s){const x=schemaOf(s);if(!x)return '';
 return '<details><summary>'+esc(label)+': '+esc(x[0])+'</summary><pre>'+esc(JSON.stringify(x[1],null,2))+'</pre></details>';}
function render(){const f=document.getElementById('q').value.toLowerCase();const byTag={};
 for(const [path,ops] of Object.entries(doc.paths)){for(const [m,op] of Object.entries(ops)){
  const tag=(op.tags||['other'])[0];const hay=(path+' '+tag+' '+(op.summary||'')).toLowerCase();if(f&&!hay.includes(f))continue;
  let body='';if(op.requestBody){body=block('body',(op.requestBody.content['application/json']||{}).schema);}
  const ok=Object.keys(op.responses).find(s=>s.startsWith('2'));let reply='';
  if(ok&&op.responses[ok].content&&op.responses[ok].content['application/json']){reply=block('reply '+ok,op.responses[ok].content['application/json'].schema);}
  (byTag[tag]=byTag[tag]||[]).push('<div class="op"><span class="m '+m.toUpperCase()+'">'+m.toUpperCase()+'</span><code>'+esc(path)+'</code>'+
  '<span class="pol">'+esc(op['x-policy']||'')+'</span><div>'+esc(op.summary||'')+'</div>'+body+reply+
  '<div class="pol">responses: '+Object.keys(op.responses).join(', ')+'</div></div>');}}
 document.getElementById('ops').innerHTML=Object.entries(byTag).map(([t,o])=>'<h2>'+esc(t)+'</h2>'+o.join('')).join('')||'nothing matches';}
fetch('/openapi.json').then(r=>r.json()).then(d=>{doc=d;render();document.getElementById('q').oninput=render;});
</script></body></html>"""


async def handler(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")
