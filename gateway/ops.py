"""Operations endpoints under `/_gateway/`: health, readiness, metrics and the admin API."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.auth import Caller
from gateway.bodies import awaits_continue, read_capped, send_continue
from gateway.caps import caps_view
from gateway.consent import (
    ConsentInputError,
    RegistryBusy,
    RegistryReplaced,
    apply_json,
    grants_json,
)
from gateway.contractset import DATED_PATHS, dated_warnings
from gateway.errors import (
    BodyTooLarge,
    ConsentRegistryUnavailable,
    Forbidden,
    GatewayError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    RegistryUnavailable,
    ShareLogChanged,
    ShareLogUnavailable,
    StartupError,
)
from gateway.jsonbody import JSONValue
from gateway.keys import canonical_subject_id, shares_cursor_key, subject_ref
from gateway.metrics import REGISTRY
from gateway.partnertls import PartnerTls
from gateway.pipeline import (
    caller_of,
    error_response,
    json_body_coding,
    parse_json_body,
    refuse_transfer_codings,
)
from gateway.policy import Policy
from gateway.runtime import RUNTIME, Runtime
from gateway.server import SERVER_NAME
from gateway.sharelog import cursor, review
from gateway.sharelog.commands import UsageError, parse_time
from gateway.sharelog.record import DECISIONS
from gateway.sharelog.schema import SchemaError
from gateway.wallclock import UnclearWallTime

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


async def _require_admin(request: web.Request, runtime: Runtime) -> Caller:
    caller = await caller_of(request, runtime)
    if ADMIN_SCOPE not in caller.scopes:
        raise Forbidden(f"the token lacks the {ADMIN_SCOPE} scope")
    return caller


def _audit(caller: Caller, request: web.Request, **details: object) -> None:
    """One `admin_action` line per admin write and per lookup of one subject: who changed the
    contracts or the consent registry, or read what is known about a person, and how much.

    `details` are counts, outcomes and keyed subject references, never a raw subject id: the
    line goes to the same log pipeline as every other.
    """
    log.info(
        "admin_action",
        caller=caller.subject,
        method=request.method,
        endpoint=request.path,
        **details,
    )


async def health(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    return _json({"status": "ok"})


async def ready(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    registry = runtime.terms.registry
    checks = {
        "contracts_loaded": bool(runtime.policy.partners),
        "share_log_writable": runtime.share_log.writable(),
        # Its file replaced or removed, no share needing consent can go until a reload has
        # opened the one in its place.
        "consent_registry_readable": registry is None or registry.readable(),
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
                # As agreed, and this gateway's part of them (`cap_shares`).
                "caps": caps_view(partner.caps),
                "tls": _tls_view(partner.tls),
                "warnings": _warnings_today(runtime.policy, pid, now),
            }
        )
    return _json({"contracts": listing})


def _tls_view(tls: PartnerTls | None) -> dict[str, object] | None:
    """The certificates a partner's shares go out with, as read at load: what an operator
    compares with the partner's; the key is never shown."""
    if tls is None:
        return None
    ours = tls.client_certificate
    return {
        # None: the system's trust store, as for a partner without `ca_file`.
        "ca": None if tls.ca_file is None else [ca.subject for ca in tls.ca],
        "client_certificate": None if ours is None else ours.as_json(),
    }


def _warnings_today(policy: Policy, partner_id: str, now: datetime) -> list[dict[str, str]]:
    """The partner's warnings from the load, those of its contract's dates and its certificates
    judged again as of `now`: a gateway runs for weeks, and what the load counted goes stale."""
    kept = [
        w.as_json()
        for w in policy.warnings
        if w.partner == partner_id and w.path not in DATED_PATHS
    ]
    loaded = policy.partners[partner_id].loaded
    for where, message in dated_warnings(loaded, now, policy.zone):
        kept.append({"partner": partner_id, "path": where, "message": message})
    return kept


def _refused(
    caller: Caller, request: web.Request, code: str, message: str, problems: list[str]
) -> web.Response:
    """An admin write refused for what it asked (422), every problem listed, and on record."""
    _audit(caller, request, result="refused", problems=len(problems))
    body = {"error": {"code": code, "message": message, "problems": problems}}
    return _json(body, status=422)


async def reload(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    caller = await _require_admin(request, runtime)
    try:
        policy = await runtime.reload()
    except StartupError as exc:
        return _refused(
            caller,
            request,
            "invalid_contracts",
            "reload refused; the contracts and keys in use stay in force",
            exc.problems,
        )
    except Exception:
        # A fault of the gateway (answered 500): the attempt is still on record.
        _audit(caller, request, result="failed")
        raise
    _audit(caller, request, result="reloaded", partners=len(policy.partners))
    return _json(
        {
            "reloaded": True,
            "contracts": {
                pid: {"version": p.contract.contract.version, "sha256": p.loaded.sha256}
                for pid, p in sorted(policy.partners.items())
            },
            "warnings": [w.as_json() for w in policy.warnings],
        }
    )


# As `logs query` takes them: `share_id` finds the one share whose answer carried that X-Share-Id.
SHARE_FILTERS = ("partner", "purpose", "decision", "reason", "caller", "share_id")
SHARE_PARAMS = (*SHARE_FILTERS, "since", "until", "subject", "limit", "cursor")
MAX_PAGE = 1000


async def shares(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    """The share log, with the filters of `logs query`; `subject` is hashed before the lookup.

    Paged by cursor: each answer's `next` continues after its last row (see `sharelog.cursor`).
    """
    caller = await _require_admin(request, runtime)
    params = request.query
    if "offset" in params:
        # Counted rows shift when a prune removes older ones: a second page by offset skips
        # rows without a word, and each one scans all the rows before it.
        raise MalformedRequest("offset is not supported: continue with cursor=<next of the page>")
    unknown = set(params) - set(SHARE_PARAMS)
    if unknown:
        raise MalformedRequest(f"unknown filter: the filters are {', '.join(SHARE_PARAMS)}")
    zone = runtime.policy.zone
    now = datetime.now(zone)
    since = _time(params, "since", zone, now)
    until = _time(params, "until", zone, now, end_of_day=True)
    if since is not None and until is not None and until <= since:
        raise MalformedRequest("until must be later than since")
    limit = _whole_number(params, "limit", 100, 1, MAX_PAGE)
    repeated = sorted({name for name in params if len(params.getall(name)) > 1})
    if repeated:
        raise MalformedRequest(f"filter(s) given more than once: {', '.join(repeated)}")
    if "decision" in params and params["decision"] not in DECISIONS:
        # As the CLI refuses it: a misspelt decision would read as "none of those".
        raise MalformedRequest(f"decision must be one of {', '.join(sorted(DECISIONS))}")
    subject = params.get("subject")
    if subject is not None:
        _refuse_undecodable(subject)
    if subject is not None and not canonical_subject_id(subject):
        # Dropped, an empty subject would list everyone's shares as one person's.
        raise MalformedRequest("subject must not be empty")
    ref = subject_ref(runtime.subject_key, subject) if subject is not None else None
    filters = {name: params[name] for name in SHARE_FILTERS if name in params}
    key = shares_cursor_key(runtime.master_key)
    bound = _cursor_binding(params, ref)
    after = None
    if "cursor" in params:
        after, since, until = _read_cursor(key, bound, params["cursor"])
    try:
        rows, position = await asyncio.to_thread(
            review.page,
            runtime.settings.share_log.path,
            **filters,
            since=since,
            until=until,
            subject_ref=ref,
            limit=limit,
            after=after,
        )
    except review.LogChanged as exc:
        raise ShareLogChanged(
            "the share log was pruned since the first page, and rows not read yet may be "
            "gone: start again from the first page"
        ) from exc
    except (SchemaError, sqlite3.Error, OSError, review.UnreadableEntry) as exc:
        # The file was removed or replaced under the running gateway, the disk failed, or an
        # entry was damaged: a condition of the service, not a fault of the request.
        log.error(
            "share_log_unreadable",
            endpoint="shares",
            path=str(runtime.settings.share_log.path),
            error=str(exc),
        )
        raise ShareLogUnavailable("the share log cannot be read") from exc
    following = None if position is None else cursor.write(key, bound, position, since, until)
    if ref is not None:
        _audit(caller, request, subject_ref=ref, rows=len(rows), continued=after is not None)
    return _json({"shares": rows, "limit": limit, "next": following})


def _refuse_undecodable(subject: str) -> None:
    if "\ufffd" in subject:
        # What any byte that is not UTF-8 decodes to: `%FF` and `%FE` would be looked up as one
        # subject, and an answer about one person given for another.
        raise MalformedRequest("subject must be percent-encoded UTF-8 (it decodes to U+FFFD)")


def _cursor_binding(params: Mapping[str, str], subject_ref: str | None) -> bytes:
    named = {name: params.get(name) for name in (*SHARE_FILTERS, "since", "until")}
    return cursor.binding({**named, "subject_ref": subject_ref})


def _read_cursor(
    key: bytes, bound: bytes, text: str
) -> tuple[review.PagePosition, datetime | None, datetime | None]:
    """The position and window a cursor carries; MalformedRequest unless this gateway wrote it
    for these very filters."""
    try:
        return cursor.read(key, bound, text)
    except cursor.CursorRefused:
        raise MalformedRequest(
            "cursor is not the next of a page of this query: send it unchanged, with the same "
            "filters as the page it came from"
        ) from None


def _whole_number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter; above `high` it is `high` (a page is at most MAX_PAGE rows)."""
    text = params.get(name)
    if text is None:
        return default
    # Digits 0-9 only: int() also reads "１０", "1_0", " 5" and "+5", which no client means to
    # send and a proxy or log in between may read otherwise.
    if not (text.isascii() and text.isdigit()):
        raise MalformedRequest(f"{name} must be a whole number in the digits 0-9")
    digits = text.lstrip("0") or "0"
    # Past `high` whatever it says, and int() refuses over 4300 digits.
    value = high + 1 if len(digits) > len(str(high)) else int(digits)
    if value < low:
        raise MalformedRequest(f"{name} must be at least {low}")
    return min(value, high)


def _time(
    params: Mapping[str, str],
    name: str,
    zone: ZoneInfo,
    now: datetime,
    *,
    end_of_day: bool = False,
) -> datetime | None:
    """`since`/`until` as `logs query` reads them, in ASCII and without surrounding spaces."""
    text = params.get(name)
    if text is None:
        return None
    # Said without the value: parse_time's own messages quote it, and an answer echoes nothing
    # a caller wrote.
    refused = MalformedRequest(
        f"{name} must be a date (2025-03-01), a date-time (2025-03-01T09:00, an offset "
        "optional) or an age (30m, 24h, 7d, 2w)"
    )
    if not text.isascii() or text != text.strip():
        raise refused
    try:
        return parse_time(text, zone, now, end_of_day=end_of_day)
    except (UsageError, ValueError) as exc:
        if isinstance(exc.__cause__, UnclearWallTime):
            raise MalformedRequest(
                f"{name} is a time the clocks of {zone} skip or show twice: give its offset"
            ) from None
        raise refused from None


_REPLACED = (
    "the consent registry's file was replaced or removed: reload the gateway once a whole "
    "registry file is in its place"
)


async def consent(request: web.Request, runtime: Runtime) -> web.StreamResponse:
    caller = await _require_admin(request, runtime)
    registry = runtime.terms.registry
    if registry is None:
        raise NotFound("no consent registry is configured")
    if request.method in ("GET", "HEAD"):
        if set(request.query) != {"subject"} or len(request.query.getall("subject")) != 1:
            # As /shares: a second subject, silently dropped, would show one person's grants
            # as an answer about two.
            raise MalformedRequest("GET /_gateway/consent takes exactly one ?subject=ID")
        subject = request.query["subject"]
        _refuse_undecodable(subject)
        if not canonical_subject_id(subject):
            raise MalformedRequest("GET /_gateway/consent needs ?subject=ID")
        try:
            grants = await asyncio.to_thread(grants_json, registry, subject)
        except RegistryReplaced as exc:
            raise ConsentRegistryUnavailable(_REPLACED) from exc
        subject_ref = registry.subject_ref(subject)
        _audit(caller, request, subject_ref=subject_ref, grants=len(grants))
        return _json({"subject_ref": subject_ref, "grants": grants})
    try:
        payload = await _json_body(request, runtime)
    except GatewayError as exc:
        # Refused for its body before any grant was read: an attempt to change the registry
        # all the same, on record as one refused for a grant's content is.
        _audit(caller, request, result="refused", code=exc.code)
        raise
    try:
        purposes = {pid: p.purposes for pid, p in runtime.policy.partners.items()}
        applied = await asyncio.to_thread(apply_json, registry, payload, purposes)
    except RegistryBusy as exc:
        _audit(caller, request, result="busy")
        raise RegistryUnavailable(
            "the consent registry is busy (another import?); try again"
        ) from exc
    except RegistryReplaced as exc:
        _audit(caller, request, result="unavailable")
        raise ConsentRegistryUnavailable(_REPLACED) from exc
    except ConsentInputError as exc:
        return _refused(caller, request, "invalid_consent", "nothing was applied", exc.problems)
    except Exception:
        _audit(caller, request, result="failed")
        raise
    counts = {name: applied[name] for name in ("granted", "withdrawn", "unchanged")}
    _audit(caller, request, result="applied", **counts)
    return _json(applied)


async def _json_body(request: web.Request, runtime: Runtime) -> dict[str, JSONValue]:
    """An admin write's body, read by the rules a share's is read by: a body in a coding read
    as if it had none would apply what no client sent."""
    refuse_transfer_codings(request)
    limits = runtime.settings.limits
    if awaits_continue(request):
        # As for a share: what the head alone refuses is answered before the body is asked for.
        declared = request.content_length
        if declared is not None and declared > limits.max_body_bytes:
            raise BodyTooLarge(f"the body exceeds {limits.max_body_bytes} bytes")
        json_body_coding(request)
        await send_continue(request)
    raw = await read_capped(
        request.content,
        declared_length=request.content_length,
        limit=limits.max_body_bytes,
        timeout_s=limits.body_read_timeout_s,
    )
    return parse_json_body(request, raw, limits)


def _with_head(methods: tuple[str, ...]) -> tuple[str, ...]:
    """HEAD wherever GET is (RFC 9110 9.3.2): aiohttp sends a HEAD answer without its body."""
    return (*methods, "HEAD") if "GET" in methods and "HEAD" not in methods else methods


ENDPOINTS: dict[str, tuple[tuple[str, ...], Endpoint]] = {
    name: (_with_head(methods), endpoint)
    for name, (methods, endpoint) in {
        "health": (("GET",), health),
        "ready": (("GET",), ready),
        "metrics": (("GET",), metrics),
        "contracts": (("GET",), contracts),
        "reload": (("POST",), reload),
        "consent": (("GET", "POST"), consent),
        "shares": (("GET",), shares),
    }.items()
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
            raise MethodNotAllowed(f"/_gateway/{name} accepts {', '.join(methods)}", methods)
        return await endpoint(request, runtime)
    except GatewayError as error:
        return error_response(error, None)
    except Exception:
        # A fault of the gateway: answered as the gateway, not by the server's error page.
        log.exception("operations_endpoint_failed", endpoint=name)
        return error_response(GatewayError("the gateway failed to process the request"), None)
