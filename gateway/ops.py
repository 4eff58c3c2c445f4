"""Operations endpoints under `/_gateway/`: health, readiness, metrics and the admin API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import (
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
)
from gateway.metrics import REGISTRY
from gateway.pipeline import error_response
from gateway.runtime import RUNTIME, Runtime, StartupError

ADMIN_SCOPE = "gateway:admin"

Endpoint = Callable[[web.Request, Runtime], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
    )


async def _require_admin(request: web.Request, runtime: Runtime) -> None:
    caller = await runtime.verifier.authenticate(request.headers.get("Authorization"))
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
    response = web.Response(body=generate_latest(REGISTRY))
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


ENDPOINTS: dict[str, tuple[str, Endpoint]] = {
    "health": ("GET", health),
    "ready": ("GET", ready),
    "metrics": ("GET", metrics),
    "contracts": ("GET", contracts),
    "reload": ("POST", reload),
}


async def handle_ops(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    name = request.raw_path.partition("?")[0].removeprefix("/_gateway/")
    try:
        entry = ENDPOINTS.get(name)
        if entry is None:
            raise NotFound(f"no operations endpoint /_gateway/{name}")
        method, endpoint = entry
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            raise MethodNotAllowed(f"/_gateway/{name} accepts {method}")
        return await endpoint(request, runtime)
    except GatewayError as error:
        return error_response(error, None)
