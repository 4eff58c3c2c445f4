"""Operations endpoints under `/_gateway/`: health, readiness, metrics and the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.bodies import read_capped
from gateway.consent import ConsentInputError, RegistryBusy, apply_json, grants_json
from gateway.errors import (
    Forbidden,
    GatewayError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    RegistryUnavailable,
)
from gateway.jsonbody import check_json_content_type, parse_json
from gateway.keys import keyed_hash
from gateway.metrics import REGISTRY
from gateway.pipeline import caller_of, error_response
from gateway.runtime import RUNTIME, Runtime, StartupError
from gateway.server import SERVER_NAME
from gateway.sharelog import review
from gateway.sharelog.commands import SQLITE_INT_MAX, UsageError, parse_time
from gateway.sharelog.record import DECISIONS

ADMIN_SCOPE = "gateway:admin"

Endpoint = Callable[[web.Request, Runtime], Awaitable[web.StreamResponse]]

log = structlog.get_logger("gateway")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
        headers={"Server": SERVER_NAME},
    )


async def _require_admin(request: web.Request, runtime: Runtime) -> None:
    caller = await caller_of(request, runtime)
    if ADMIN_SCOPE not in caller.scopes:
        raise Forbidden(f"the token lacks the {ADMIN_SCOPE} scope")


async def health(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    return _json({"status": "ok"})


async def ready(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    checks = {
        "contracts_loaded": bool(runtime.policy.partners),
        "share_log_writable": runtime.share_log.writable(),
    }
    ok = all(checks.values())
    return _json({"ready": ok, **checks}, status=200 if ok else 503)


async def metrics(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    response = web.Response(body=generate_latest(REGISTRY), headers={"Server": SERVER_NAME})
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def contracts(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    await _require_admin(request, runtime)
    listing = []
    now = datetime.now(runtime.policy.zone)
    for pid, partner in sorted(runtime.policy.partners.items()):
        info = partner.contract.contract
        listing.append(
            {
                "partner": pid,
                "name": partner.contract.partner.name,
                "kind": partner.contract.partner.kind,
                "relationship": partner.contract.partner.relationship,
                "contract_id": info.id,
                "version": info.version,
                "sha256": partner.loaded.sha256,
                "file": partner.loaded.file.name,
                "status": info.status,
                "effective": info.effective.isoformat(),
                "expires": info.expires.isoformat(),
                "in_force": partner.in_force(now),
                "upstream_location": partner.location,
                "purposes": sorted(partner.purposes),
                "routes": [f"{r.method} {r.path} ({r.purpose})" for r in partner.contract.routes],
            }
        )
    return _json({"contracts": listing})


async def reload(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    await _require_admin(request, runtime)
    try:
        policy = await runtime.reload()
    except StartupError as exc:
        return _json(
            {
                "error": {
                    "code": "invalid_contracts",
                    "message": "reload refused; the previous contract set stays in force",
                    "problems": exc.problems,
                }
            },
            status=422,
        )
    return _json(
        {
            "reloaded": True,
            "contracts": {
                pid: {"version": p.contract.contract.version, "sha256": p.loaded.sha256}
                for pid, p in sorted(policy.partners.items())
            },
        }
    )


SHARE_FILTERS = ("partner", "purpose", "decision", "reason", "caller")
SHARE_PARAMS = (*SHARE_FILTERS, "since", "until", "subject", "limit", "offset")
MAX_PAGE = 1000


async def shares(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    """The share log, with the filters of `logs query`; `subject` is hashed before the lookup."""
    await _require_admin(request, runtime)
    params = request.query
    unknown = set(params) - set(SHARE_PARAMS)
    if unknown:
        raise MalformedRequest(f"unknown filter: the filters are {', '.join(SHARE_PARAMS)}")
    zone = runtime.policy.zone
    now = datetime.now(zone)
    try:
        since = parse_time(params["since"], zone, now) if "since" in params else None
        until = (
            parse_time(params["until"], zone, now, end_of_day=True) if "until" in params else None
        )
        if since is not None and until is not None and until <= since:
            raise UsageError("until must be later than since")
        limit = _whole_number(params, "limit", 100, 1, MAX_PAGE)
        offset = _whole_number(params, "offset", 0, 0, SQLITE_INT_MAX)
    except (UsageError, ValueError) as exc:
        raise MalformedRequest(str(exc)) from exc
    repeated = sorted({name for name in params if len(params.getall(name)) > 1})
    if repeated:
        raise MalformedRequest(f"filter(s) given more than once: {', '.join(repeated)}")
    if "decision" in params and params["decision"] not in DECISIONS:
        # As the CLI refuses it: a misspelt decision would read as "none of those".
        raise MalformedRequest(f"decision must be one of {', '.join(sorted(DECISIONS))}")
    subject = params.get("subject")
    if subject is not None and not subject:
        # Dropped, an empty subject would list everyone's shares as one person's.
        raise MalformedRequest("subject must not be empty")
    rows = await asyncio.to_thread(
        review.query,
        runtime.settings.share_log.path,
        **{name: params[name] for name in SHARE_FILTERS if name in params},
        since=since,
        until=until,
        subject_ref=keyed_hash(runtime.subject_key, subject) if subject is not None else None,
        limit=limit,
        offset=offset,
    )
    return _json({"shares": rows, "limit": limit, "offset": offset})


def _whole_number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter; above `high` it is `high` (a page is at most MAX_PAGE rows)."""
    try:
        value = int(params.get(name, str(default)))
    except ValueError:
        raise UsageError(f"{name} must be a whole number") from None  # int()'s quotes the value
    if value < low:
        raise UsageError(f"{name} must be at least {low}")
    return min(value, high)


async def consent(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    await _require_admin(request, runtime)
    registry = runtime.terms.registry
    if registry is None:
        raise NotFound("no consent registry is configured")
    if request.method == "GET":
        if set(request.query) != {"subject"} or len(request.query.getall("subject")) != 1:
            # As /shares: a second subject, silently dropped, would show one person's grants
            # as an answer about two.
            raise MalformedRequest("GET /_gateway/consent takes exactly one ?subject=ID")
        subject = request.query["subject"]
        if not subject:
            raise MalformedRequest("GET /_gateway/consent needs ?subject=ID")
        grants = await asyncio.to_thread(grants_json, registry, subject)
        return _json({"subject_ref": registry.subject_ref(subject), "grants": grants})
    check_json_content_type(request.headers.get("Content-Type"))
    limits = runtime.settings.limits
    raw = await read_capped(
        request.content,
        declared_length=request.content_length,
        limit=limits.max_body_bytes,
        timeout_s=limits.body_read_timeout_s,
    )
    payload = parse_json(raw, max_depth=limits.max_json_depth)
    try:
        purposes = {pid: p.purposes for pid, p in runtime.policy.partners.items()}
        applied = await asyncio.to_thread(apply_json, registry, payload, purposes)
    except RegistryBusy as exc:
        raise RegistryUnavailable(
            "the consent registry is busy (another import?); try again"
        ) from exc
    except ConsentInputError as exc:
        return _json(
            {
                "error": {
                    "code": "invalid_consent",
                    "message": "nothing was applied",
                    "problems": exc.problems,
                }
            },
            status=422,
        )
    return _json(applied)


ENDPOINTS: dict[str, tuple[tuple[str, ...], Endpoint]] = {
    "health": (("GET", "HEAD"), health),
    "ready": (("GET", "HEAD"), ready),
    "metrics": (("GET",), metrics),
    "contracts": (("GET",), contracts),
    "reload": (("POST",), reload),
    "consent": (("GET", "POST"), consent),
    "shares": (("GET",), shares),
}


async def handle_ops(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    name = request.raw_path.partition("?")[0].removeprefix("/_gateway/")
    try:
        entry = ENDPOINTS.get(name)
        if entry is None:
            raise NotFound("no such operations endpoint")
        methods, endpoint = entry
        if request.method not in methods:
            raise MethodNotAllowed(f"/_gateway/{name} accepts {', '.join(methods)}")
        return await endpoint(request, runtime)
    except GatewayError as error:
        return error_response(error, None)
    except Exception:
        # A fault of the gateway: answered as the gateway, not by the server's error page.
        log.exception("operations_endpoint_failed", endpoint=name)
        return error_response(GatewayError("the gateway failed to process the request"), None)
