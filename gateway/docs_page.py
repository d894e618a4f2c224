"""An API docs page that works offline: renders /openapi.json with a few lines of inline script."""
from __future__ import annotations

from aiohttp import web

PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>API 文档 · Recycling marketplace</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}code{background:#f3f3f3;padding:1px 4px}
.op{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.5em .8em}.m{font-weight:bold;display:inline-block;width:4em}
.GET{color:#1565c0}.POST{color:#2e7d32}.pol{color:#777;font-size:12px;margin-left:1em}pre{background:#fafafa;padding:.5em;overflow:auto;max-height:20em}
</style></head><body><h1>Recycling marketplace API</h1><p>Generated from <a href="/openapi.json">/openapi.json</a>.
Errors are <code>application/problem+json</code>.</p><div id="ops">loading…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{const out=[];const S=doc.components.schemas;
for(const [path,ops] of Object.entries(doc.paths)){for(const [m,op] of Object.entries(ops)){
let body='';if(op.requestBody){const ref=op.requestBody.content['application/json'].schema.$ref.split('/').pop();
body='<details><summary>body: '+ref+'</summary><pre>'+JSON.stringify(S[ref],null,2).replace(/</g,'&lt;')+'</pre></details>';}
out.push('<div class="op"><span class="m '+m.toUpperCase()+'">'+m.toUpperCase()+'</span><code>'+path+'</code>'+
'<span class="pol">'+(op['x-policy']||'')+'</span><div>'+(op.summary||'')+'</div>'+body+
'<div class="pol">responses: '+Object.keys(op.responses).join(', ')+'</div></div>');}}
document.getElementById('ops').innerHTML=out.join('');});
</script></body></html>"""


async def handler(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")
