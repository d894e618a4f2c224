"""A fake Elasticsearch for the tests: the REST subset the listings search adapter (services/listings/search/
elastic.py) uses, served over HTTP so the official client talks to it exactly as to a real node.

No Elasticsearch can be installed on the test machines (none ships on PyPI, Debian or npm), so the contract suite
runs the adapter against this fake, and against a real node when ELASTICSEARCH_URL is set (compose starts one).
The fake is faithful for what it implements and refuses the rest: any query clause, parameter, mapping feature,
setting or analysis component it does not model is a 400 in Elasticsearch's error shape with the type
`fake_not_implemented_exception`, so the adapter cannot drift into something the fake would silently ignore.

Modules: `analysis` (the analysis chain), `index` (documents, versions, refresh, queries, BM25, sort, aggregations),
this one (cluster state: indices and aliases; the REST routes; the server).

References for the REST shapes (Elasticsearch reference, REST APIs):
- create index (settings, mappings, aliases with is_write_index): https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-indices-create
- aliases (exists, get, atomic `_aliases` actions): https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-indices-update-aliases
- delete index (ignore_unavailable; an alias is refused): https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-indices-delete
- refresh: https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-indices-refresh
- bulk (NDJSON; per-item status and error; `errors`): https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk
- index, get (`_source`, `_source_includes`, real-time), count, search:
  https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-index
  https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-get
  https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-count
  https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-search
- every reply carries `X-Elastic-Product: Elasticsearch` (the official clients refuse a 2xx without it) and answers
  a `compatible-with=N` media type in kind: https://www.elastic.co/docs/reference/elasticsearch/rest-apis/compatibility
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import EsError, not_implemented
from .index import Index

_COMPAT = re.compile(r"compatible-with=(\d+)")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class Cluster:
    """Indices and aliases of one node. Every call runs under the server's lock, one at a time."""

    def __init__(self) -> None:
        self.indices: dict[str, Index] = {}
        self.aliases: dict[str, dict[str, bool | None]] = {}  # alias → index → is_write_index

    # --- resolution -------------------------------------------------------------------------------------------
    @staticmethod
    def _missing(name: str) -> EsError:
        return EsError(
            404,
            "index_not_found_exception",
            f"no such index [{name}]",
            **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name},
        )

    def _resolve(self, target: str) -> list[Index]:
        if "," in target or "*" in target or target.startswith("_all"):
            not_implemented(f"multi-target expressions ([{target}])")
        if target in self.indices:
            return [self.indices[target]]
        if target in self.aliases:
            return [self.indices[i] for i in sorted(self.aliases[target])]
        raise self._missing(target)

    def read_one(self, target: str, single_doc: bool = False) -> Index:
        found = self._resolve(target)
        if len(found) > 1:
            if single_doc:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"alias [{target}] has more than one index associated with it "
                    f"[{', '.join(i.name for i in found)}], can't execute a single index op",
                )
            not_implemented("searching several indices at once (statistics are per shard)")
        return found[0]

    def write_index(self, target: str) -> Index:
        if target in self.indices:
            return self.indices[target]
        if target not in self.aliases:
            not_implemented(f"creating index [{target}] on first write (automatic index creation)")
        members = self.aliases[target]
        writers = [i for i, w in members.items() if w] or (
            list(members) if len(members) == 1 and next(iter(members.values())) is not False else []
        )
        if len(writers) != 1:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"no write index is defined for alias [{target}]. The write index may be explicitly disabled using "
                "is_write_index=false or the alias points to multiple indices without one being designated as a "
                "write index",
            )
        return self.indices[writers[0]]

    # --- indices and aliases ----------------------------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if not _NAME.match(name) or name.startswith(("-", "_", "+")):
            raise EsError(
                400, "invalid_index_name_exception", f"Invalid index name [{name}], must be lowercase"
            )
        if name in self.indices:
            raise EsError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/{self.indices[name].uuid}] already exists",
            )
        if name in self.aliases:
            raise EsError(
                400, "invalid_index_name_exception", f"Invalid index name [{name}], already exists as alias"
            )
        extra = set(body) - {"settings", "mappings", "aliases"}
        if extra:
            not_implemented(f"create index options {sorted(extra)}")
        aliases = body.get("aliases", {})
        for alias, opts in aliases.items():
            if set(opts) - {"is_write_index"}:
                not_implemented(f"alias options {sorted(set(opts) - {'is_write_index'})}")
            if alias in self.indices or alias == name:
                raise EsError(
                    400,
                    "invalid_alias_name_exception",
                    f"Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias",
                )
        index = Index(name, body.get("settings", {}), body.get("mappings", {}))
        new_aliases = {
            a: {**self.aliases.get(a, {}), name: opts.get("is_write_index")} for a, opts in aliases.items()
        }
        self._check_write_indices(new_aliases)
        self.indices[name] = index
        self.aliases.update(new_aliases)
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete(self, name: str, ignore_unavailable: bool) -> dict[str, Any]:
        if name in self.aliases:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"The provided expression [{name}] matches an alias, specify the corresponding concrete indices instead.",
            )
        if name not in self.indices:
            if ignore_unavailable:
                return {"acknowledged": True}
            raise self._missing(name)
        del self.indices[name]
        for alias in list(self.aliases):
            self.aliases[alias].pop(name, None)
            if not self.aliases[alias]:
                del self.aliases[alias]
        return {"acknowledged": True}

    def get_alias(self, name: str) -> tuple[int, dict[str, Any]]:
        if name not in self.aliases:
            return 404, {"error": f"alias [{name}] missing", "status": 404}
        out = {}
        for index, w in sorted(self.aliases[name].items()):
            out[index] = {"aliases": {name: {} if w is None else {"is_write_index": w}}}
        return 200, out

    @staticmethod
    def _check_write_indices(aliases: dict[str, dict[str, bool | None]]) -> None:
        for alias, members in aliases.items():
            writers = sorted(i for i, w in members.items() if w)
            if len(writers) > 1:
                raise EsError(
                    400,
                    "illegal_state_exception",
                    f"alias [{alias}] has more than one write index [{','.join(writers)}]",
                )

    def update_aliases(self, body: dict[str, Any]) -> dict[str, Any]:
        """All actions or none: they are checked against a copy, which replaces the state at the end."""
        if set(body) != {"actions"}:
            not_implemented(f"_aliases body {sorted(body)}")
        state = {a: dict(m) for a, m in self.aliases.items()}
        for action in body["actions"]:
            if not isinstance(action, dict) or len(action) != 1:
                raise EsError(400, "parsing_exception", "[aliases] failed to parse field [actions]")
            kind, opts = next(iter(action.items()))
            if kind not in ("add", "remove"):
                not_implemented(f"alias action [{kind}]")
            if set(opts) - {"index", "alias", "is_write_index"} or (
                kind == "remove" and "is_write_index" in opts
            ):
                not_implemented(f"alias action options {sorted(opts)}")
            index, alias = opts.get("index"), opts.get("alias")
            if index not in self.indices:
                raise self._missing(str(index))
            if kind == "add":
                if alias in self.indices:
                    raise EsError(
                        400,
                        "invalid_alias_name_exception",
                        f"Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias",
                    )
                state.setdefault(alias, {})[index] = opts.get("is_write_index")
            else:
                if index not in state.get(alias, {}):
                    raise EsError(
                        404,
                        "aliases_not_found_exception",
                        f"aliases [{alias}] missing",
                        **{"resource.type": "aliases", "resource.id": alias},
                    )
                del state[alias][index]
                if not state[alias]:
                    del state[alias]
        self._check_write_indices(state)
        self.aliases = state
        return {"acknowledged": True, "errors": False}

    # --- documents --------------------------------------------------------------------------------------------
    def bulk(self, default_index: str | None, lines: list[Any]) -> dict[str, Any]:
        items = []
        i = 0
        while i < len(lines):
            action = lines[i]
            if not isinstance(action, dict) or len(action) != 1:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"Malformed action/metadata line [{i + 1}], expected START_OBJECT",
                )
            op, meta = next(iter(action.items()))
            if op not in ("index", "create", "update", "delete"):
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, index, update] but found [{op}]",
                )
            if op != "index":
                not_implemented(f"the bulk [{op}] action")
            extra = set(meta) - {"_index", "_id", "version", "version_type"}
            if extra:
                not_implemented(f"bulk action parameters {sorted(extra)}")
            if i + 1 >= len(lines):
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    "The bulk request must be terminated by a newline [\\n]",
                )
            target = meta.get("_index", default_index)
            if target is None:
                raise EsError(
                    400, "action_request_validation_exception", "Validation Failed: 1: index is missing;"
                )
            if "_id" not in meta:
                not_implemented("documents without an _id (generated ids)")
            try:
                index = self.write_index(target)
                res = index.write(
                    str(meta["_id"]), lines[i + 1], meta.get("version"), meta.get("version_type")
                )
                item = {**res, "status": 201 if res["result"] == "created" else 200}
            except EsError as e:
                if e.type == "fake_not_implemented_exception":
                    raise
                item = {
                    "_index": target,
                    "_id": str(meta["_id"]),
                    "status": e.status,
                    "error": e.item_error(),
                }
            items.append({"index": item})
            i += 2
        return {"errors": any("error" in it["index"] for it in items), "took": 1, "items": items}


# --- REST -------------------------------------------------------------------------------------------------------
def _flag(v: str) -> bool:
    if v in ("", "true"):
        return True
    if v == "false":
        return False
    raise EsError(
        400,
        "illegal_argument_exception",
        f"Failed to parse value [{v}] as only [true] or [false] are allowed.",
    )


def _source_param(params: dict[str, str]) -> bool | list[str]:
    if "_source" in params:
        return _flag(params["_source"])
    if "_source_includes" in params:
        fields = params["_source_includes"].split(",")
        if any("*" in f or "." in f for f in fields):
            not_implemented("wildcards or paths in _source_includes")
        return fields
    return True


def _check_params(params: dict[str, str], allowed: set[str], path: str) -> None:
    extra = set(params) - allowed
    if extra:
        not_implemented(f"the parameters {sorted(extra)} of [{path}]")


def route(cluster: Cluster, method: str, path: str, params: dict[str, str], body: Any) -> tuple[int, Any]:
    """One request → (status, reply body); raises EsError for Elasticsearch's error replies."""
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if not parts and method in ("GET", "HEAD"):
        return 200, {
            "name": "fake",
            "cluster_name": "fake-elasticsearch",
            "version": {"number": "9.1.5", "build_flavor": "default", "lucene_version": "10.2.2"},
            "tagline": "You Know, for Search",
        }
    if parts[:1] == ["_alias"] and len(parts) == 2 and method in ("GET", "HEAD"):
        _check_params(params, set(), path)
        return cluster.get_alias(parts[1])
    if parts == ["_aliases"] and method in ("POST", "PUT"):
        _check_params(params, set(), path)
        return 200, cluster.update_aliases(body or {})
    if parts and parts[-1] == "_bulk" and len(parts) <= 2 and method in ("POST", "PUT"):
        _check_params(params, set(), path)
        return 200, cluster.bulk(parts[0] if len(parts) == 2 else None, body)
    if len(parts) == 1 and not parts[0].startswith("_"):
        if method == "PUT":
            _check_params(params, set(), path)
            return 200, cluster.create(parts[0], body or {})
        if method == "DELETE":
            _check_params(params, {"ignore_unavailable"}, path)
            return 200, cluster.delete(parts[0], _flag(params.get("ignore_unavailable", "false")))
    if len(parts) == 2 and parts[1] == "_refresh" and method in ("POST", "GET"):
        _check_params(params, set(), path)
        for index in cluster._resolve(parts[0]):
            index.refresh()
        return 200, {"_shards": {"total": 2, "successful": 1, "failed": 0}}
    if len(parts) == 3 and parts[1] == "_doc":
        if method in ("PUT", "POST"):
            _check_params(params, {"version", "version_type"}, path)
            index = cluster.write_index(parts[0])
            version = int(params["version"]) if "version" in params else None
            res = index.write(parts[2], body, version, params.get("version_type"))
            return (201 if res["result"] == "created" else 200), res
        if method == "GET":
            _check_params(params, {"_source", "_source_includes"}, path)
            index = cluster.read_one(parts[0], single_doc=True)
            doc = index.docs.get(parts[2])  # real-time: the latest write, refreshed or not
            if doc is None:
                return 404, {"_index": index.name, "_id": parts[2], "found": False}
            out: dict[str, Any] = {
                "_index": index.name,
                "_id": doc.id,
                "_version": doc.version,
                "_seq_no": doc.seq_no,
                "_primary_term": 1,
                "found": True,
            }
            src = _source_param(params)
            if src is not False:
                from .index import filter_source

                out["_source"] = filter_source(doc.source, src)
            return 200, out
    if len(parts) == 2 and parts[1] == "_count" and method in ("POST", "GET"):
        _check_params(params, set(), path)
        index = cluster.read_one(parts[0])
        n = index.count(body or {})
        return 200, {"count": n, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
    if len(parts) == 2 and parts[1] == "_search" and method in ("POST", "GET"):
        _check_params(params, {"_source", "_source_includes"}, path)
        index = cluster.read_one(parts[0])
        return 200, index.search(body or {}, _source_param(params))
    not_implemented(f"{method} {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request) ...
    disable_nagle_algorithm = True  # ... and at once: no 40 ms delayed-ACK stall per reply
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _reply(self, status: int, body: Any, compat: str | None) -> None:
        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        ctype = (
            f"application/vnd.elasticsearch+json;compatible-with={compat}" if compat else "application/json"
        )
        self.send_header("Content-Type", ctype)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        compat = None
        m = _COMPAT.search(self.headers.get("Accept", "") + self.headers.get("Content-Type", ""))
        if m:
            compat = m.group(1)
            if compat not in ("8", "9"):
                err = EsError(
                    400,
                    "media_type_header_exception",
                    "Invalid media-type value on headers [Accept, Content-Type]",
                )
                return self._reply(400, err.body(), None)
        try:
            body: Any = None
            if raw:
                ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
                if url.path.rstrip("/").endswith("_bulk"):
                    if ctype not in (
                        "application/x-ndjson",
                        "application/vnd.elasticsearch+x-ndjson",
                        "application/json",
                    ):
                        return self._reply(
                            406,
                            {"error": f"Content-Type header [{ctype}] is not supported", "status": 406},
                            compat,
                        )
                    body = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
                else:
                    if ctype not in ("application/json", "application/vnd.elasticsearch+json"):
                        return self._reply(
                            406,
                            {"error": f"Content-Type header [{ctype}] is not supported", "status": 406},
                            compat,
                        )
                    body = json.loads(raw)
            with self.server.lock:
                status, reply = route(self.server.cluster, self.command, url.path, params, body)
        except EsError as e:
            status, reply = e.status, e.body()
        except json.JSONDecodeError as e:
            status, reply = (
                400,
                EsError(400, "x_content_parse_exception", f"Failed to parse the request body: {e}").body(),
            )
        self._reply(status, reply, compat)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cluster = Cluster()
        self.lock = threading.Lock()


@contextmanager
def fake_elasticsearch() -> Iterator[str]:
    """`with fake_elasticsearch() as url:` a fake node on a free loopback port, stopped on exit."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, name="fake-elasticsearch", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
