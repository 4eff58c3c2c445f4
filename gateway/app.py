"""The aiohttp application: one catch-all route, the runtime's lifetime, and the server's limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from gateway import heap
from gateway.auth import (
    JWKS_FETCH_TIMEOUT_S,
    AuthConfigError,
    build_auth_verifier,
    build_consent_verifier,
)
from gateway.bodies import body_withheld
from gateway.consent import ConsentRegistry, RegistryError
from gateway.contract import MAX_UPSTREAM_TIMEOUT_S
from gateway.errors import ShareLogUnavailable, StartupError
from gateway.keys import master_key, subject_ref_key
from gateway.ops import handle_ops
from gateway.pii import scan
from gateway.pipeline import MAX_RECORD_WAIT_S, handle_share
from gateway.policy import Policy
from gateway.runtime import RUNTIME, Runtime, load_policy, log_contract_warnings
from gateway.server import HANDLER_CANCELLATION, GatewayRunner, ServerLimits
from gateway.settings import Settings
from gateway.sharelog import review
from gateway.sharelog.record import ShareSink
from gateway.sharelog.store import ShareLog
from gateway.terms import DailyCounts, SlidingWindows, Terms, rate_window
from gateway.upstream import HttpUpstream, Upstream

log = structlog.get_logger("gateway")

OPS_PREFIX = "/_gateway/"
GIL_SWITCH_INTERVAL_S = 0.001


async def dispatch(request: web.Request) -> web.StreamResponse:
    # The raw target decides, not aiohttp's decoded path: `/_gateway%2f...` is a partner path
    # (and refused there), never an operations endpoint.
    if request.raw_path.startswith(OPS_PREFIX):
        response = await handle_ops(request)
    else:
        response = await handle_share(request)
    if body_withheld(request):
        # Answered on its head alone, while its caller may still hold the body back: whether
        # it sends it after all (RFC 9110 10.1.1) cannot be known, so the connection ends with
        # this answer and reads no request after it. A body sent anyway is drained first
        # (`lingering_time`), so the answer is not lost to a reset.
        response.force_close()
    return response


class _EveryTarget(web.PlainResource):
    """The one resource, matching every request target: `*` (OPTIONS), `CONNECT host:port`,
    `GET http://host`, a decoded path holding a line break. Every refusal is then the gateway's
    own, with a share record, never the router's 404 naming the server software; and no
    pattern is matched per request."""

    def __init__(self) -> None:
        super().__init__("/")
        self._route = self.add_route("*", dispatch, expect_handler=_expect)

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo, set[str]]:
        return UrlMappingMatchInfo({}, self._route), set()

    async def match(self, request: web.Request) -> UrlMappingMatchInfo:
        """What the router answers: this resource's match, whatever the target."""
        return UrlMappingMatchInfo({}, self._route)


async def _expect(request: web.Request) -> None:
    # Nothing before the checks: `100 Continue` is sent only when the body is about to be read
    # (`gateway.bodies.send_continue`), and any other expectation is ignored (RFC 9110 10.1.1
    # allows it) rather than refused with aiohttp's own 417 before any check or record.
    return None


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    target = _EveryTarget()
    app.router.register_resource(target)
    # aiohttp's router answers a target with no path (`CONNECT host:port`, `GET http://host`)
    # with its own 404 before it asks any resource; and it walks the path's prefixes for every
    # other target. The gateway has one resource, so the router is this resource's answer.
    app.router.resolve = target.match  # type: ignore[method-assign]
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner`: the HTTP server's own limits."""
    limits = settings.limits
    return {
        # Bodies are decoded by the gateway under its own byte cap, never by the server.
        "auto_decompress": False,
        "max_line_size": limits.max_line_size,
        "max_field_size": limits.max_field_size,
        "max_headers": limits.max_headers,
        "keepalive_timeout": limits.keepalive_timeout_s,
        # An unread body is drained after an early answer no longer than a body is waited for.
        "lingering_time": limits.body_read_timeout_s,
        "access_log": None,
        "handle_signals": False,
        "handler_cancellation": HANDLER_CANCELLATION,
    }


def make_runner(
    app: web.Application, settings: Settings, *, shutdown_timeout: float = 30
) -> GatewayRunner:
    """The server for `app`: aiohttp's own limits plus the connection cap and header deadline."""
    return GatewayRunner(
        app,
        ServerLimits.from_settings(settings.limits),
        shutdown_timeout=shutdown_timeout,
        **server_options(settings),
    )


async def build_runtime(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    upstream: Upstream | None = None,
    share_log: ShareSink | None = None,
) -> Runtime:
    """Load and compile everything the gateway needs; any problem stops the start.

    Whatever was opened before a problem is closed again, so a refused start leaks nothing.
    """
    environ = os.environ if environ is None else environ
    if settings.auth is None:
        raise StartupError(["settings: auth: caller authentication must be configured"])
    key = master_key(settings, environ)
    policy = load_policy(settings, key, environ)
    async with contextlib.AsyncExitStack() as opened:
        try:
            verifier = await build_auth_verifier(settings.auth, environ=environ)
            await verifier.start()
            opened.push_async_callback(verifier.close)
            consent_tokens = None
            if settings.consent is not None:
                consent_tokens = await build_consent_verifier(settings.consent, environ=environ)
                await consent_tokens.start()
                opened.push_async_callback(consent_tokens.close)
        except AuthConfigError as exc:
            raise StartupError([str(exc)]) from exc
        if upstream is None:
            http = HttpUpstream(
                connections=settings.limits.max_upstream_connections,
                connections_per_origin=settings.limits.upstream_connections_per_origin,
            )
            await http.start()
            opened.push_async_callback(http.close)
            upstream = http
        if share_log is None:
            try:
                log = await ShareLog.open(settings.share_log, key)
            except ShareLogUnavailable as exc:  # its message names the file
                raise StartupError([exc.message]) from exc
            opened.push_async_callback(log.close)
            share_log = log
        try:
            registry = ConsentRegistry(
                settings.registry.path, subject_ref_key(key), zone=settings.zone
            )
        except RegistryError as exc:  # its message names the file
            raise StartupError([f"consent registry: {exc}"]) from exc
        except (OSError, sqlite3.Error) as exc:
            raise StartupError([f"consent registry {settings.registry.path}: {exc}"]) from exc
        opened.callback(registry.close)
        quota = DailyCounts()
        now = datetime.now(settings.zone)
        try:
            today = await asyncio.to_thread(records_shared_since, settings, now.date())
            recent = await asyncio.to_thread(recent_shares, settings, policy, now)
        except (OSError, sqlite3.Error) as exc:
            # Started without them, the caps would count from zero: refused, in one line.
            raise StartupError(
                [f"share log {settings.share_log.path}: cannot read back the caps' counts: {exc}"]
            ) from exc
        quota.seed(now.date(), today)
        windows, sends = SlidingWindows(), SlidingWindows()
        for partner_id, (rate, ages) in recent.items():
            windows.seed(partner_id, rate, ages)
            sends.seed(partner_id, rate, ages)
        opened.pop_all()
    return Runtime(
        settings=settings,
        policy=policy,
        verifier=verifier,
        share_log=share_log,
        upstream=upstream,
        master_key=key,
        terms=Terms(
            registry=registry,
            consent_tokens=consent_tokens,
            limiter=windows,
            quota=quota,
            sends=sends,
        ),
        scanner=scan,
        environ=environ,
    )


def records_shared_since(settings: Settings, day: date) -> dict[str, int]:
    """Records shared per partner since the start of `day`, but for shares that never left:
    the daily caps survive a restart."""
    path = settings.share_log.path
    if not path.exists():
        return {}
    return review.records_counted_since(path, datetime.combine(day, time.min, settings.zone))


def recent_shares(
    settings: Settings, policy: Policy, now: datetime
) -> dict[str, tuple[float, list[float]]]:
    """Per rate-limited partner, its rate and how many seconds ago each of its shares still
    inside the rate's window reached the partner, at the latest: the rates survive a restart,
    as the daily caps do.

    Not when each was decided: a share may go out long after (a connection, a handshake, its
    turn), and a window counted from its decision would let the next share follow it too soon.
    Its outcome is recorded once it went out. One a crash cut went out (if at all) before a
    moment nothing recorded: the start closes it as `unknown` then, so it counts as sent just
    now, as one still without an outcome does.
    """
    path = settings.share_log.path
    if not path.exists():
        return {}
    recent: dict[str, tuple[float, list[float]]] = {}
    for partner_id, partner in policy.partners.items():
        rate = partner.caps.rate_per_s  # this gateway's part of the agreed rate
        if rate is None:
            continue
        span, _ = rate_window(rate)
        window_start = now - timedelta(seconds=span)
        # A share goes out within `MAX_RECORD_WAIT_S` of its decision (its record's commit) and
        # then within its contract's `timeout_s`, or not at all. Not the contract's own: a
        # reload may have shortened it since. Every partner's shares in the look-back are read
        # off the time index, at each start, for each rate-limited partner.
        waited = timedelta(seconds=MAX_RECORD_WAIT_S + MAX_UPSTREAM_TIMEOUT_S)
        sent = review.sent_by_since(path, partner_id, window_start - waited, window_start)
        ages = [
            0.0 if ts is None else max(0.0, (now - datetime.fromisoformat(ts)).total_seconds())
            for ts in sent
        ]
        recent[partner_id] = (rate, ages)
    return recent


async def close_runtime(runtime: Runtime) -> None:
    await runtime.verifier.close()
    if runtime.terms.consent_tokens is not None:
        await runtime.terms.consent_tokens.close()
    if runtime.terms.registry is not None:
        runtime.terms.registry.close()
    close_upstream = getattr(runtime.upstream, "close", None)
    if close_upstream is not None:
        await close_upstream()
    close_log = getattr(runtime.share_log, "close", None)
    if close_log is not None:
        await close_log()
    # Off the loop: a body still being scanned may take seconds to finish. The shares that
    # waited for a thread are gone with the server; none is left to need one.
    await asyncio.to_thread(runtime.body_workers.shutdown, cancel_futures=True)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the contracts."""
    # In `strict` mode every share waits for the share-log writer thread. By default a thread
    # waiting for the interpreter lock gets it only after 5 ms, and under load that wait is the
    # request's.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    loop = asyncio.get_running_loop()
    # Before the contracts are read: a SIGHUP during the start reloads once the gateway runs
    # (the files may have changed after they were read), and never ends the process.
    hangup_while_starting = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, hangup_while_starting.set)
    runtime = await build_runtime(settings)
    app = make_app(runtime)
    runner = make_runner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen.host, settings.listen.port)
    try:
        await site.start()
    except OSError as exc:  # the port is taken, the host unknown: one line, and nothing left open
        await runner.cleanup()
        await close_runtime(runtime)
        where = f"{settings.listen.host}:{settings.listen.port}"
        raise StartupError([f"cannot listen on {where}: {exc.strerror or exc}"]) from exc
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        task = loop.create_task(_reload_quietly(runtime))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if hangup_while_starting.is_set():
        on_hup()
    log.info(
        "gateway_started",
        host=settings.listen.host,
        port=settings.listen.port,
        listening=[f"{a[0]}:{a[1]}" for a in runner.addresses],  # port 0: the one chosen
        partners=sorted(runtime.policy.partners),
    )
    log_contract_warnings(runtime.policy)
    runtime.settles_heap = True
    heap.settle()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("gateway_stopping")
        # Stop accepting, let shares in flight finish and record their outcome, then close.
        runner.drain_within(drain_seconds(runtime))
        await runner.cleanup()
        for task in reloads:
            task.cancel()
        await close_runtime(runtime)
        log.info("gateway_stopped")


DRAIN_MARGIN_S = 5.0


def drain_seconds(runtime: Runtime) -> float:
    """Long enough for the slowest share that may be in flight: its body still arriving, the
    fetch of a new caller-token and a new consent-token key where keys come from a `jwks_url`,
    then its partner's whole `timeout_s` (contracts allow up to 300 s), under any contract set
    loaded since start (a share keeps the contract it started with).

    Not the up to `MAX_RECORD_WAIT_S` a share may wait for its record: a commit waits that long
    only on a disk that stalled, which would not take the outcomes of a longer drain either;
    the next start closes such shares as `unknown`."""
    settings = runtime.settings
    fetched = [s for s in (settings.auth, settings.consent) if s is not None and s.jwks_url]
    slowest = runtime.slowest_timeout_s
    keys = len(fetched) * JWKS_FETCH_TIMEOUT_S
    return settings.limits.body_read_timeout_s + keys + slowest + DRAIN_MARGIN_S


async def _reload_quietly(runtime: Runtime) -> None:
    # `reload` has logged and counted whatever went wrong; the last good set keeps serving.
    with contextlib.suppress(Exception):
        await runtime.reload()
