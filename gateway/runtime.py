"""The running gateway's state: settings, the policy in force, and the resources with a lifetime."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from gateway import heap, metrics
from gateway.auth import AuthConfigError, FileKeyStore, KeyFile, TokenVerifier
from gateway.consent import RegistryError
from gateway.contractset import load_contract_set, unknown_cap_share_partners
from gateway.errors import StartupError
from gateway.fieldfilter import TextScanner
from gateway.keys import subject_ref_key
from gateway.policy import Policy, PolicyError, compile_policy
from gateway.settings import Settings
from gateway.sharelog.record import ShareSink
from gateway.terms import Terms
from gateway.upstream import Upstream

log = structlog.get_logger("gateway")

# Threads that parse, filter and scan the bodies too big to work on in the event loop
# (`pipeline.OFFLOAD_BODY_BYTES`): the callers' and, filtered, the partners' answers. Two: one
# crafted body (seconds of scanning) leaves the other big bodies a thread, and more would only
# take turns at the interpreter lock with the loop.
BODY_WORKERS = 2


def load_policy(
    settings: Settings,
    key: bytes,
    environ: Mapping[str, str] | None = None,
    *,
    reloading: bool = False,
) -> Policy:
    contracts, problems = load_contract_set(settings.contracts_dir, settings)
    if contracts is None:
        raise StartupError([str(p) for p in problems] or ["no contracts loaded"])
    # Settings are read at start only: an id the start found that a reload does not is a
    # partner whose file was removed. Refused, the reload would keep sharing with it.
    if not reloading and (unknown := unknown_cap_share_partners(contracts.contracts, settings)):
        raise StartupError([str(p) for p in unknown])
    try:
        policy = compile_policy(
            contracts,
            zone=settings.zone,
            master_key=key,
            environ=environ,
            cap_shares=settings.cap_shares,
        )
    except PolicyError as exc:
        raise StartupError(exc.problems) from exc
    return policy


def log_contract_warnings(policy: Policy) -> None:
    """One event per warning of the set in force, where operators watch for what to act on:
    once a start has succeeded, or a reload's set is in force (a refused one changes nothing)."""
    for warning in policy.warnings:
        log.warning(
            "contract_warning",
            partner=warning.partner,
            path=warning.path,
            message=warning.message,
            file=warning.file,
        )


def _note_certificates(policy: Policy) -> None:
    metrics.note_client_certificates(
        {
            pid: partner.tls.client_certificate.not_after
            for pid, partner in policy.partners.items()
            if partner.tls is not None and partner.tls.client_certificate is not None
        }
    )


@dataclass(slots=True)
class Runtime:
    settings: Settings
    policy: Policy  # replaced whole on reload; a request keeps the one it started with
    verifier: TokenVerifier
    share_log: ShareSink
    upstream: Upstream
    master_key: bytes
    terms: Terms
    scanner: TextScanner | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    shares_in_progress: int = 0  # held against limits.max_pending_requests
    # The longest partner `timeout_s` of every contract set loaded: a share started before a
    # reload shortened it may still take that long, and the drain at shutdown waits for it.
    slowest_timeout_s: float = 0.0
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set by `serve`: the process is the gateway's own, and its collector is set for it.
    settles_heap: bool = False
    # Keys every share's subject references; derived once (an HMAC per request otherwise).
    subject_key: bytes = field(init=False)
    # Work on the big bodies; the rest wait their turn without holding up the loop.
    body_workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(BODY_WORKERS, thread_name_prefix="body")
    )

    def __post_init__(self) -> None:
        self.subject_key = subject_ref_key(self.master_key)
        self._note_timeouts(self.policy)
        _note_certificates(self.policy)

    def _note_timeouts(self, policy: Policy) -> None:
        slowest = max((p.timeout_s for p in policy.partners.values()), default=0.0)
        self.slowest_timeout_s = max(self.slowest_timeout_s, slowest)

    async def reload(self) -> Policy:
        """Validate and compile the whole directory and read every key file again, then swap
        them all; on any problem keep the old set and the keys in use.

        A consent registry file replaced or removed under the gateway is reopened first, whatever
        becomes of the contracts: the reload is how an operator says the file in its place is
        whole."""
        async with self._reload_lock:
            await self._reopen_registry()
            try:
                policy, key_files = await asyncio.to_thread(self._load, self._key_stores())
            except StartupError as exc:
                metrics.RELOADS.labels("failed").inc()
                log.error("contracts_reload_failed", problems=exc.problems)
                raise
            except Exception:
                # A fault of the gateway itself: still a failed reload, and still the old set.
                metrics.RELOADS.labels("failed").inc()
                log.exception("contracts_reload_failed")
                raise
            # No wait from here on: a request sees the old contracts and keys or the new ones.
            self.policy = policy
            for store, loaded in key_files:
                store.use(loaded)
            self._note_timeouts(policy)
            _note_certificates(policy)
            if self.settles_heap:
                heap.settle()
            metrics.RELOADS.labels("ok").inc()
            log.info(
                "contracts_reloaded",
                partners={
                    pid: p.contract.contract.version for pid, p in sorted(policy.partners.items())
                },
            )
            log_contract_warnings(policy)
            if gone := unknown_cap_share_partners(policy.partners, self.settings):
                # Said, since the settings still name them: the next start refuses that.
                log.warning("cap_shares_partner_removed", problems=[str(p) for p in gone])
            return policy

    def _key_stores(self) -> list[FileKeyStore]:
        """The stores whose keys come from a file: an `hs256_secret_env` is the environment's,
        which does not change under a running process, and a `jwks_url` refreshes itself."""
        verifiers = (self.verifier, self.terms.consent_tokens)
        stores = (verifier.key_store for verifier in verifiers if verifier is not None)
        return [store for store in stores if isinstance(store, FileKeyStore)]

    def _load(
        self, stores: list[FileKeyStore]
    ) -> tuple[Policy, list[tuple[FileKeyStore, KeyFile]]]:
        """The contract set and the keys of every file, read and checked, none yet in use; a
        StartupError lists every problem of each, as one refused reload."""
        problems: list[str] = []
        policy: Policy | None = None
        try:
            policy = load_policy(self.settings, self.master_key, self.environ, reloading=True)
        except StartupError as exc:
            problems += exc.problems
        key_files: list[tuple[FileKeyStore, KeyFile]] = []
        for store in stores:
            try:
                key_files.append((store, store.read()))
            except AuthConfigError as exc:
                problems.append(str(exc))
        if policy is None or problems:
            raise StartupError(problems or ["no contracts loaded"])
        return policy, key_files

    async def _reopen_registry(self) -> None:
        registry = self.terms.registry
        if registry is None:
            return
        try:
            reopened = await asyncio.to_thread(registry.reopen)
        except RegistryError as exc:
            # The shares needing consent keep getting 503, and /_gateway/ready says not ready.
            log.error("consent_registry_not_reopened", error=str(exc))
            return
        if reopened:
            log.info("consent_registry_reopened", path=str(registry.path))


RUNTIME = web.AppKey("runtime", Runtime)
