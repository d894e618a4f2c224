"""HTTP plumbing shared by the gateway and every service app.

A service declares its routes on a `Router`: method, path, who may call it (a policy), the pydantic models of
its query, body and reply. The same declarations mount the routes, enforce the policy, parse input into clear
field errors, and generate the OpenAPI document, so none of those can drift apart.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from . import idempotency, inputs
from .auth import Principal, verify_token
from .errors import DomainError, Forbidden, NotFound, RateLimited, Unauthorized, Unavailable, ValidationFailed
from .events import current_trace_id
from .ids import new_id
from .revocation import token_versions

if TYPE_CHECKING:
    from .runtime import ServiceRuntime
    from .settings import Settings

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
PUBLIC = "public"
AUTHENTICATED = "authenticated"
POLICY_FORBIDDEN = "role_required"  # the `reason` of a 403 given by a route's policy


@dataclass(frozen=True)
class Policy:
    """Who may call a route: anyone, any signed-in user, or holders of one of `roles`."""

    kind: str  # public | authenticated | roles
    roles: frozenset[str] = frozenset()

    def describe(self) -> str:
        return self.kind if self.kind != "roles" else "roles:" + ",".join(sorted(self.roles))

    def check(self, principal: Principal | None) -> None:
        if self.kind == PUBLIC:
            return
        if principal is None:
            raise Unauthorized(
                "sign in first: Authorization: Bearer <token>", reason="authentication_required"
            )
        if self.kind == "roles" and not principal.roles & self.roles:
            # `reason` tells a refusal by the route's policy from a handler's own (not yours, not verified, ...)
            raise Forbidden(f"needs one of the roles {sorted(self.roles)}", reason=POLICY_FORBIDDEN)


@dataclass
class Ctx:
    request: web.Request
    runtime: ServiceRuntime
    principal: Principal | None
    params: dict[str, str]
    body: Any = None
    query: Any = None

    @property
    def user(self) -> Principal:
        if self.principal is None:
            raise Unauthorized("sign in first")
        return self.principal

    # --- ownership: every service checks "is it yours?" the same way --------------------------------
    def require_owner(
        self, owner_user_id: str | None, *, what: str = "resource", admin_ok: bool = False
    ) -> Principal:
        """The caller, if they are `owner_user_id` (or an admin, when `admin_ok`); else Forbidden (403).

        Load the resource first and answer 404 for a missing one; call this before acting on it.
        """
        user = self.user
        if owner_user_id is not None and user.user_id == owner_user_id:
            return user
        if admin_ok and user.has("admin"):
            return user
        raise Forbidden(f"this {what} is not yours", reason="not_owner")

    def require_firm(self, firm_id: str | None, *as_: str, admin_ok: bool = False) -> Principal:
        """The caller, if they act for `firm_id` (token claims `firms`/`firm_roles`); else Forbidden (403).

        `as_` narrows how: "owner", "accountant", "collector" (any of them). Without it any tie to the firm counts.
        """
        user = self.user
        if firm_id is not None and user.acts_for(firm_id, *as_):
            return user
        if admin_ok and user.has("admin"):
            return user
        how = f" as {' or '.join(as_)}" if as_ else ""
        raise Forbidden(f"you do not act for firm {firm_id}{how}", reason="not_firm_member")

    def require_roles(self, *roles: str) -> Principal:
        """The caller, if they hold one of `roles` (for checks finer than the route's policy); else Forbidden."""
        user = self.user
        if not user.has(*roles):
            raise Forbidden(f"needs one of the roles {sorted(roles)}", reason="missing_role")
        return user

    async def run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run blocking work (database, bus) off the event loop, in the request's context: its trace id, and its
        Idempotency-Key for the first transaction that commits (services/kernel/idempotency.py)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kw)
        return await asyncio.get_running_loop().run_in_executor(None, call)


Handler = Callable[[Ctx], Awaitable[Any]]
# A route's reply rebuilt, reading only, for a keyed request whose own reply was lost after its commit
# (services/kernel/idempotency.py): from what the request made (`idempotency.made`; `Router.replay_of`) ...
ReplayHandler = Callable[[Ctx, str], Awaitable[Any]]
# ... or from the resource the path names, as it stands (an action on it: `Router.replays`)
ViewHandler = Callable[[Ctx], Awaitable[Any]]
# what a route keeps (`RouteDef.replay`): (ctx, what the key recorded, None if nothing) -> the reply rebuilt, or
# None when it cannot be (the retry is then told the reply was lost)
Rebuild = Callable[[Ctx, str | None], Awaitable[Any]]


@dataclass(frozen=True)
class Budget:
    """How often a route may be called at all, kept by the gateway (memory embedded, Redis distributed) on top of
    the per-IP and per-user rate limits: for a route whose every call costs money (an SMS), per client address or
    for the whole platform. `setting` names the Settings field holding the limit per `window_s`.

    A refused call gets 429 problem+json with Retry-After and `reason: <name>_budget`. A client over its own
    budget passes if the gateway's human check (captcha hook, gateway/captcha.py) vouches for it; the global
    budget is the cost ceiling and is never bypassed."""

    name: str
    per: str  # "client" | "global"
    setting: str
    window_s: int

    def __post_init__(self) -> None:
        if self.per not in ("client", "global"):
            raise ValueError(f"budget {self.name}: per must be 'client' or 'global'")


@dataclass
class RouteDef:
    method: str
    path: str
    handler: Handler
    policy: Policy
    service: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    summary: str = ""
    raw: bool = False  # the handler returns its own web.StreamResponse (SSE, WebSocket, files)
    extra_statuses: tuple[int, ...] = ()
    budgets: tuple[Budget, ...] = ()
    # security metadata (docs/security.md; the suite in tests/security/ reads it):
    owner: str | None = None  # the kind of record the path parameter names, which belongs to someone
    not_owned: str | None = None  # or: why the record a path parameter names is nobody's in particular
    example: dict[str, Any] | None = None  # a valid body (the OpenAPI example; the probes send it)
    query_example: dict[str, str] | None = None  # valid query parameters, likewise
    # other success statuses with the same reply body (200 when a POST finds what it would create already there)
    also: tuple[int, ...] = ()
    replay: Rebuild | None = None  # see `Router.replay_of` and `Router.replays`

    @property
    def operation_id(self) -> str:
        return f"{self.service}_{self.handler.__name__}"


class Router:
    def __init__(self, service: str):
        self.service = service
        self.routes: list[RouteDef] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        roles: set[str] | frozenset[str] | None = None,
        public: bool = False,
        authenticated: bool = False,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        summary: str = "",
        raw: bool = False,
        errors: tuple[int, ...] = (),
        budgets: tuple[Budget, ...] = (),
        owner: str | None = None,
        not_owned: str | None = None,
        example: dict[str, Any] | None = None,
        query_example: dict[str, str] | None = None,
        also: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Declare a route. Besides who may call it (exactly one of public / authenticated / roles), a route whose
        path has a parameter says whose record that is (docs/security.md, "Declaring a route"):

        - `owner="pickup"`: the parameter names a record that belongs to someone (a user, a firm's staff); the
          security suite makes one with the factory registered for "pickup" (tests/security/factories.py) and
          checks that someone else holding the same roles gets 403/404 (BOLA);
        - `not_owned="why"`: the parameter names something that is nobody's in particular (an admin's queue, a
          public lot, a job open to every collector).

        `example` / `query_example`: a valid body / valid query parameters (required with `owner` when the route
        takes a body / required query parameters: the probes must get past validation to reach the ownership
        check). `budgets`: see `Budget`. `also`: other success statuses the handler answers with the route's
        reply body (`Reply(out, 200)` for a repeat of a 201), so the OpenAPI document lists them.
        """
        # Every route declares who may call it; there is no default (the authorization matrix relies on it).
        if sum((bool(public), bool(roles), bool(authenticated))) != 1:
            raise ValueError(
                f"{method} {path}: declare exactly one of public=True, authenticated=True, roles={{...}}"
            )
        if owner and not_owned:
            raise ValueError(
                f"{method} {path}: a record is either owned (owner=) or not (not_owned=), not both"
            )
        policy = (
            Policy(PUBLIC)
            if public
            else Policy("roles", frozenset(roles))
            if roles
            else Policy(AUTHENTICATED)
        )

        def deco(fn: Handler) -> Handler:
            self.routes.append(
                RouteDef(
                    method.upper(),
                    path,
                    fn,
                    policy,
                    self.service,
                    body,
                    query,
                    response,
                    status,
                    summary or (fn.__doc__ or "").strip().split("\n")[0],
                    raw,
                    errors,
                    budgets,
                    owner,
                    not_owned,
                    example,
                    query_example,
                    also,
                )
            )
            return fn

        return deco

    def replay_of(self, handler: Handler) -> Callable[[ReplayHandler], ReplayHandler]:
        """Declare how `handler`'s reply is rebuilt from what its keyed request made (the id it recorded with
        `idempotency.made` in the transaction that made it), for a retry whose first reply was lost after the
        commit: read the resource and answer what `handler` answers (status, body as it stands). Read only."""

        def deco(fn: ReplayHandler) -> ReplayHandler:
            async def rebuild(ctx: Ctx, made: str | None) -> Any:
                return None if made is None else await fn(ctx, made)

            self._route_of(handler).replay = rebuild
            return fn

        return deco

    def replays(self, *handlers: Handler) -> Callable[[ViewHandler], ViewHandler]:
        """Declare how the reply of actions on an existing resource (`handlers`: cancel, ship, settle ..., and its
        updates: a PATCH, PUT or DELETE) is rebuilt for a retry whose first reply was lost after the commit: `fn(ctx)` answers what each of them answers, from
        the resource their path names as it stands now (its view; or the refusal the action gave, when its work
        was a refusal it committed). The key committed in the action's own transaction, so the action was done;
        `fn` only reads; it answers None when there is nothing to rebuild from (the retry is then told the reply
        was lost). One view serves every action whose reply is the resource's view. An action whose first
        write transaction is not the action itself, or whose reply says more than the resource does, records what
        it needs with `idempotency.made` and uses `replay_of` instead."""

        def deco(fn: ViewHandler) -> ViewHandler:
            async def rebuild(ctx: Ctx, made: str | None) -> Any:
                return await fn(ctx)

            for handler in handlers:
                self._route_of(handler).replay = rebuild
            return fn

        return deco

    def _route_of(self, handler: Handler) -> RouteDef:
        (route,) = [r for r in self.routes if r.handler is handler]
        if route.replay is not None:
            raise ValueError(f"{route.method} {route.path}: its replay is declared twice")
        return route

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)


# --- replies ------------------------------------------------------------------------------------


def _default(o: Any) -> Any:
    if isinstance(o, BaseModel):
        return o.model_dump(mode="json")
    from datetime import date, datetime
    from decimal import Decimal

    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(data: Any) -> str:
    if isinstance(data, BaseModel):
        return data.model_dump_json()
    return json.dumps(data, default=_default, ensure_ascii=False)


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json", headers=headers)


def problem_reply(problem: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(problem, ensure_ascii=False),
        status=problem["status"],
        content_type=PROBLEM,
        headers=headers,
    )


def problem_for(status: int, detail: str, title: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"https://recycle.example.cn/problems/http-{status}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }


_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "State conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Rule violated",
    429: "Too many requests",
    500: "Internal error",
    502: "Bad gateway",
    414: "URI too long",
    431: "Request header fields too large",
    503: "Service unavailable",
    504: "Gateway timeout",
}


# --- middlewares shared by the gateway and the service apps ------------------------------------


@web.middleware
async def request_context(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Request id and trace id on every request and reply; every error becomes problem+json."""
    rid = request.headers.get("X-Request-Id") or new_id("rq")
    if len(rid) > 100:
        rid = new_id("rq")
    request["request_id"] = rid
    token = current_trace_id.set(request.headers.get("X-Trace-Id") or rid)
    try:
        try:
            resp = await handler(request)
        except (DomainError, web.HTTPException) as exc:
            if isinstance(exc, web.HTTPException) and exc.status < 400:
                raise
            resp = error_response(request, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", request.method, request.path, rid)
            resp = internal_error_response(request)
        resp.headers["X-Request-Id"] = rid
        return resp
    finally:
        current_trace_id.reset(token)


def error_response(request: web.Request, exc: DomainError | web.HTTPException) -> web.Response:
    """The problem+json reply for a domain error or an aiohttp HTTP error (status >= 400).

    Shared by `request_context` and the gateway middlewares that must see the final reply (idempotency stores it).
    """
    if isinstance(exc, DomainError):
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="recycle"'
        problem = exc.problem()
        problem["detail"] = inputs.clip(str(problem["detail"]), 300)  # never echo a huge input back whole
        return problem_reply(problem | {"instance": inputs.clip(request.path, 200)}, headers or None)
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    if exc.status == 413:
        detail = "request body too large"
    return problem_reply(
        problem_for(exc.status, inputs.clip(detail, 300), instance=inputs.clip(request.path, 200)),
        {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")},
    )


def internal_error_response(request: web.Request) -> web.Response:
    """500 without a trace: the details stay in the log, under the request id the client can quote."""
    return problem_reply(
        problem_for(
            500,
            "an internal error occurred; quote the request id",
            instance=request.path,
            request_id=request.get("request_id", ""),
        )
    )


def principal_of(request: web.Request) -> Principal | None:
    """The verified caller of this request (None when anonymous); a bad or expired token raises Unauthorized.

    Verified once per request and cached on it (the gateway's rate limiter and idempotency use it too).
    """
    if "principal" not in request:
        header = request.headers.get("Authorization", "")
        principal = None
        if header:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("use Authorization: Bearer <token>", reason="token_invalid")
            principal = verify_token(request.app["settings"], token.strip())
        request["principal"] = principal
    return request["principal"]


async def authenticate(request: web.Request) -> Principal | None:
    """The caller, checked for access: a valid signature (`principal_of`) *and* not revoked since it was issued.

    The token's version must not be older than the user's current one (services/kernel/revocation.py): a role
    taken away, a suspension or a logout refuses the very next request (401 `token_revoked`). Every route and the
    distributed gateway's forwarders authorize with this; `principal_of` alone is for keys and logs.
    """
    principal = principal_of(request)
    if principal is None or request.get("principal_current"):
        return principal
    try:
        current = await token_versions(request.app["settings"]).acurrent(principal.user_id)
    except Exception as exc:  # noqa: BLE001 - redis-py raises its own error types; refuse rather than trust
        log.warning("token version store unavailable: %s", type(exc).__name__)
        raise Unavailable("cannot check the token right now; retry shortly") from exc
    if principal.token_version < current:
        raise Unauthorized(
            "this token was revoked (roles changed, account suspended or logged out): "
            "refresh it or log in again",
            reason="token_revoked",
        )
    request["principal_current"] = True
    return principal


def principal_or_none(request: web.Request) -> Principal | None:
    """Like `principal_of`, but a bad token counts as anonymous (for rate-limit keys and logs, never for access)."""
    try:
        return principal_of(request)
    except Unauthorized:
        return None


# --- mounting -----------------------------------------------------------------------------------


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        field_name = (prefix + loc) if loc else prefix.rstrip(".") or "body"
        out.append({"field": inputs.clip(field_name, 100), "message": msg})
    return out


async def parse_body(request: web.Request, model: type[BaseModel], *, optional: bool = False) -> BaseModel:
    """The request's JSON body as `model`, under the platform's input rules (services/kernel/inputs.py): JSON
    content type (415), depth limit before parsing, no control characters or bidi overrides, strict numbers,
    no undeclared fields. `optional`: an empty body is `model()` (for a handler that reads its own body)."""
    raw = await request.read()
    if optional and not raw.strip():
        return model()
    if not raw:
        raise ValidationFailed.field("body", "a JSON body is required")
    inputs.check_content_type(request.headers.get("Content-Type", ""))
    data = inputs.parse_json(raw)
    inputs.check_plain_decimals(model, data)
    try:
        # strict: an int is a JSON integer (not true, 2.0 or "21"), a float a JSON number (not true or "1");
        # extra="forbid" at every depth: a field the model does not declare (owner_user_id, roles, status,
        # verified, ...) is refused by name rather than ignored (mass assignment)
        return model.model_validate_json(raw, strict=True, extra="forbid")
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None


def make_aiohttp_handler(
    route: RouteDef, runtime: ServiceRuntime
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    retention_h = runtime.settings.idempotency_retention_hours
    in_progress_s = runtime.settings.idempotency_in_progress_s

    async def aio_handler(request: web.Request) -> web.StreamResponse:
        principal = await authenticate(request)
        route.policy.check(principal)
        params = dict(request.match_info)
        for name, value in params.items():
            if not inputs.PATH_PARAM.fullmatch(value):  # no handler sees (or echoes) a 100 KB "id"
                raise NotFound(f"no resource with {name} {inputs.clip(value)!r}")
        replay = None
        if route.replay is not None:
            replay = functools.partial(rebuild, request, principal, params)
        keyed = (
            None
            if route.raw
            else await idempotency.begin(request, runtime.db, principal, retention_h, in_progress_s, replay)
        )
        if isinstance(keyed, web.StreamResponse):
            return keyed  # the reply of the request that did the work
        if keyed is None:
            return await respond(request, principal, params)
        return await idempotency.run(request, keyed, lambda: respond(request, principal, params), replay)

    async def context(request: web.Request, principal: Any, params: dict[str, str]) -> Ctx:
        ctx = Ctx(request=request, runtime=runtime, principal=principal, params=params)
        if route.query is not None:
            query = inputs.single_query_values(request.query)
            inputs.check_strings(query)
            inputs.check_query_numbers(route.query, query)
            try:
                ctx.query = route.query.model_validate(query)
            except ValidationError as exc:
                raise ValidationFailed(validation_errors(exc)) from None
        if route.body is not None:
            ctx.body = await parse_body(request, route.body)
        return ctx

    def render(result: Any) -> web.StreamResponse:
        if route.raw or isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Reply):
            return json_reply(result.data, result.status, result.headers)
        return json_reply(result, route.status)

    async def respond(request: web.Request, principal: Any, params: dict[str, str]) -> web.StreamResponse:
        ctx = await context(request, principal, params)
        return render(await route.handler(ctx))

    async def rebuild(
        request: web.Request, principal: Any, params: dict[str, str], made: str | None
    ) -> web.StreamResponse | None:
        """The route's reply rebuilt for the keyed request (None: it cannot be); an error (the resource gone
        since) is raised, so never kept as the key's reply."""
        assert route.replay is not None
        ctx = await context(request, principal, params)
        result = await route.replay(ctx, made)
        return None if result is None else render(result)

    aio_handler.__name__ = route.handler.__name__
    return aio_handler


@dataclass
class Reply:
    """A reply whose status differs from the route's default (e.g. 200 for an idempotent replay)."""

    data: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def mount(app: web.Application, runtime: ServiceRuntime) -> None:
    router = runtime.spec.router
    if router is None:
        return
    for route in router.routes:
        app.router.add_route(
            route.method, route.path, make_aiohttp_handler(route, runtime), name=route.operation_id
        )


SERVER_BANNER = "recycle"  # never the framework and its version


async def _banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_BANNER


def settle_heap(app: web.Application) -> None:
    """Once the app has started (modules, routes, models, the platform loaded), move everything alive out of the
    garbage collector's sight (`gc.freeze`): a full collection walks every tracked object, and over the ~180,000
    of a started gateway it held the GIL for about 100 ms of CPU — a pause every request in flight waited for, and
    the largest part of the search benchmark's p99. Objects made later are collected as usual; stopping the app
    gives the frozen ones back (tests start many apps in one process). No collection first: it would cost those
    100 ms at every start (hundreds in the tests) to reclaim the ~2,500 objects of garbage a start leaves. Append
    it after the contexts that load."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gc.freeze()
        yield
        gc.unfreeze()

    app.cleanup_ctx.append(ctx)


def harden(app: web.Application) -> None:
    """What every app of the platform (gateway and service processes) does to every reply: no version banner,
    and problem+json without echo for requests the HTTP parser refuses (oversized headers → 431)."""
    app.on_response_prepare.append(_banner)
    _problem_for_parser_errors()


def _problem_for_parser_errors() -> None:
    """aiohttp answers a request it cannot parse (a header over 8 KB, a bad request line) itself, before any
    middleware, in text/plain echoing the offending bytes. Answer problem+json instead, naming nothing."""
    from aiohttp import http_exceptions, web_protocol

    handler_cls = web_protocol.RequestHandler
    if getattr(handler_cls, "_recycle_problem_errors", False):
        return
    original = handler_cls.handle_error

    def handle_error(
        self: Any,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> Any:
        if status == 500:
            return original(self, request, status, exc, message)
        if isinstance(exc, http_exceptions.LineTooLong):
            first = str(exc.args[0]) if exc.args else ""
            status, detail = (
                (414, "the request line is too long")
                if "status line" in first.lower() or "request line" in first.lower()
                else (431, "a request header field is too large")
            )
        else:
            detail = "malformed HTTP request"
        self.log_debug("refused a request the parser could not read: %s", type(exc).__name__)
        resp = web.Response(
            text=json.dumps(problem_for(status, detail, title=_TITLES.get(status))),
            status=status,
            content_type=PROBLEM,
            headers={"Server": SERVER_BANNER},
        )
        resp.force_close()
        return resp

    handler_cls.handle_error = handle_error  # type: ignore[method-assign]
    handler_cls._recycle_problem_errors = True  # type: ignore[attr-defined]


def service_app(settings: Settings, runtimes: list[ServiceRuntime]) -> web.Application:
    """The HTTP app of a service process in the distributed run (`recycle serve-service`): the services' routes
    behind the same request context, limits and hardening as the gateway's own."""
    app = web.Application(middlewares=[request_context], client_max_size=settings.max_body_bytes)
    app["settings"] = settings
    for rt in runtimes:
        mount(app, rt)
    harden(app)
    settle_heap(app)
    return app


def not_found(what: str, id_: str) -> NotFound:
    return NotFound(f"no {what} with id {id_}")
