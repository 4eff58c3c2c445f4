"""Prometheus metrics: one registry for the process, served at `/_gateway/metrics`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
# The client library's own: process CPU, memory and open files (`process_*`), and the garbage
# collector's collections by generation (`python_gc_*`), which `serve` makes rare.
ProcessCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

REQUESTS = Counter(
    "share_gateway_requests_total",
    "Requests the gateway decided on, by partner and decision.",
    ["partner", "decision"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "share_gateway_decisions_total",
    "Decisions by partner and reason (error code, or `shared`).",
    ["partner", "reason"],
    registry=REGISTRY,
)
FIELDS_STRIPPED = Counter(
    "share_gateway_fields_stripped_total",
    "Field occurrences removed from bodies before forwarding.",
    ["partner"],
    registry=REGISTRY,
)
PII_REDACTIONS = Counter(
    "share_gateway_pii_redactions_total",
    "Personal data found in allowed free-text fields and redacted.",
    ["partner", "category"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "share_gateway_upstream_latency_seconds",
    "Time from forwarding a share to the partner's complete answer (or to the timeout).",
    ["partner"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SHARE_OUTCOMES = Counter(
    "share_gateway_share_outcomes_total",
    "Forwarded shares by partner and outcome, as the share log records it.",
    ["partner", "outcome"],
    registry=REGISTRY,
)
SHARE_LOG_WRITE_LATENCY = Histogram(
    "share_gateway_share_log_write_seconds",
    "Time a share record waits until it is committed to the share log.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
SHARE_LOG_QUEUE_DEPTH = Gauge(
    "share_gateway_share_log_queue_depth",
    "Share records waiting for the share-log writer.",
    registry=REGISTRY,
)
RELOADS = Counter(
    "share_gateway_contract_reloads_total",
    "Contract reloads, by result.",
    ["result"],
    registry=REGISTRY,
)

CERTIFICATE_EXPIRY = Gauge(
    "share_gateway_partner_certificate_expiry_seconds",
    "Seconds until the client certificate the gateway presents to the partner expires "
    "(negative once it has).",
    ["partner"],
    registry=REGISTRY,
)


def _seconds_until(end: datetime) -> float:
    return (end - datetime.now(UTC)).total_seconds()


def note_client_certificates(not_after: Mapping[str, datetime]) -> None:
    """Each partner's client certificate end, by partner id, for the contract set in force:
    the series of a partner that no longer has one go."""
    CERTIFICATE_EXPIRY.clear()
    for partner, end in not_after.items():
        # Counted down at each scrape: a gateway runs for weeks on one load.
        CERTIFICATE_EXPIRY.labels(partner).set_function(partial(_seconds_until, end))


_DECIDED: dict[tuple[str, str, str], tuple[Counter, Counter]] = {}


def count_decision(partner: str, decision: str, reason: str) -> None:
    """Count one decision; the labelled children are looked up once per combination."""
    key = (partner, decision, reason)
    children = _DECIDED.get(key)
    if children is None:
        # Bounded: partners × decisions × error codes.
        children = _DECIDED[key] = (
            REQUESTS.labels(partner, decision),
            DECISIONS.labels(partner, reason),
        )
    children[0].inc()
    children[1].inc()


# Labelled children per partner id, looked up once each (bounded by the contracts).
_STRIPPED: dict[str, Counter] = {}
_LATENCY: dict[str, Histogram] = {}


def count_stripped(partner: str, fields: int) -> None:
    child = _STRIPPED.get(partner)
    if child is None:
        child = _STRIPPED[partner] = FIELDS_STRIPPED.labels(partner)
    child.inc(fields)


_REDACTED: dict[tuple[str, str], Counter] = {}


def count_redactions(partner: str, counts: dict[str, int]) -> None:
    for category, n in counts.items():
        key = (partner, category)
        child = _REDACTED.get(key)
        if child is None:  # bounded: partners × the scanner's categories
            child = _REDACTED[key] = PII_REDACTIONS.labels(partner, category)
        child.inc(n)


def observe_upstream_latency(partner: str, seconds: float) -> None:
    child = _LATENCY.get(partner)
    if child is None:
        child = _LATENCY[partner] = UPSTREAM_LATENCY.labels(partner)
    child.observe(seconds)


# What `forward` can tell of a share it sent (the share log's other outcomes, `pending` and
# `unknown`, are not decided by a request).
ForwardOutcome = Literal["delivered", "timeout", "error", "possibly_delivered"]
FORWARD_OUTCOMES: tuple[ForwardOutcome, ...] = get_args(ForwardOutcome)
_OUTCOMES: dict[str, dict[str, Counter]] = {}


def count_outcome(partner: str, outcome: ForwardOutcome) -> None:
    children = _OUTCOMES.get(partner)
    if children is None:
        # Every outcome of the partner at once, from 0: the first timeout is then an increase
        # that rate() and alerts see, not a series appearing out of nowhere.
        children = _OUTCOMES[partner] = {
            name: SHARE_OUTCOMES.labels(partner, name) for name in FORWARD_OUTCOMES
        }
    children[outcome].inc()
