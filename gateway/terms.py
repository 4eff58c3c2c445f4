"""The agreement's terms beyond field scope: minors, consent, rate and daily volume."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from gateway.errors import (
    ConsentRequired,
    InvalidToken,
    MalformedBody,
    MinorDenied,
    QuotaExceeded,
    RateLimited,
)
from gateway.fieldfilter import query_parameter, select
from gateway.jsonbody import JSONValue
from gateway.pii import birth_date_from_id

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.auth import TokenVerifier
    from gateway.consent import ConsentRegistry
    from gateway.pipeline import Flow
    from gateway.policy import RoutePolicy

MINOR_AGE = 14


@dataclass(frozen=True, slots=True)
class Subject:
    """One data subject of a share: its id and, where the request tells, its birth date."""

    index: int | None  # the record's index in a batch, None for a single-subject share
    id: str | None
    birth_date: date | None


def _values(
    item: JSONValue, path: str, records: str | None, query: Mapping[str, str]
) -> list[JSONValue]:
    """The values at an absolute `path` within one record (or the query string)."""
    parameter = query_parameter(path)
    if parameter is not None:
        value = query.get(parameter)
        return [value] if value is not None else []
    if records is not None:
        prefix = records + "."
        if not path.startswith(prefix):
            return []
        path = path[len(prefix) :]
    return select(item, path)


def _as_id(value: JSONValue) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def _as_date(value: JSONValue, path: str) -> date:
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise MalformedBody(f"the birth date at {path} is not an ISO date")


def subjects_of(
    route: RoutePolicy, doc: dict[str, JSONValue], query: Mapping[str, str]
) -> list[Subject]:
    """Read subject ids and birth dates from the caller's document, record by record."""
    items: Sequence[JSONValue] = [doc] if route.records is None else select(doc, route.records)
    subjects: list[Subject] = []
    for i, item in enumerate(items):
        index = None if route.records is None else i
        where = "the body" if index is None else f"record {index}"
        subject_id: str | None = None
        if route.subject is not None:
            found = _values(item, route.subject, route.records, query)
            subject_id = _as_id(found[0]) if len(found) == 1 else None
            if subject_id is None:
                raise MalformedBody(
                    f"{where}: the subject field {route.subject} is missing or not an id"
                )
        subjects.append(Subject(index, subject_id, _birth_date(route, item, query, subject_id)))
    return subjects


def _birth_date(
    route: RoutePolicy, item: JSONValue, query: Mapping[str, str], subject_id: str | None
) -> date | None:
    """The declared birth date, else one read from a resident ID number in the record."""
    if route.birth_date is not None:
        found = _values(item, route.birth_date, route.records, query)
        if found and found[0] is not None:
            return _as_date(found[0], route.birth_date)
    candidates = [
        value
        for path in route.id_number_paths
        for value in _values(item, path, route.records, query)
    ]
    if subject_id is not None:
        candidates.append(subject_id)
    for value in candidates:
        if isinstance(value, str) and (born := birth_date_from_id(value)) is not None:
            return born
    return None


def is_minor(born: date, today: date) -> bool:
    """Under 14 on `today`; a 29 February birthday turns 14 on 1 March in common years."""
    year = born.year + MINOR_AGE
    try:
        fourteenth = born.replace(year=year)
    except ValueError:
        fourteenth = date(year, 3, 1)
    return today < fourteenth


class RateLimiter(Protocol):
    """Admits a share or says how long to wait; replaceable by a shared store across replicas."""

    def acquire(self, key: str, rate_per_s: float) -> float | None: ...


class QuotaCounter(Protocol):
    """Counts records per partner and day; `take` is all-or-nothing."""

    def take(self, key: str, day: date, count: int, limit: int) -> bool: ...


@dataclass(slots=True)
class TokenBuckets:
    """In-process token buckets, one per partner; capacity is one second's worth of shares."""

    clock: Callable[[], float] = field(default=time.monotonic)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def acquire(self, key: str, rate_per_s: float) -> float | None:
        now = self.clock()
        capacity = max(1.0, rate_per_s)
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate_per_s


@dataclass(slots=True)
class DailyCounts:
    """Records shared per partner today, seeded from the share log so a restart keeps the day."""

    _day: date | None = None
    _counts: dict[str, int] = field(default_factory=dict)

    def seed(self, day: date, counts: Mapping[str, int]) -> None:
        self._day = day
        self._counts = dict(counts)

    def take(self, key: str, day: date, count: int, limit: int) -> bool:
        if day != self._day:
            self._day, self._counts = day, {}
        used = self._counts.get(key, 0)
        if used + count > limit:
            return False
        self._counts[key] = used + count
        return True


class Terms:
    """Checks the terms after the body is understood and before anything is recorded as shared."""

    def __init__(
        self,
        *,
        registry: ConsentRegistry | None = None,
        consent_tokens: TokenVerifier | None = None,
        limiter: RateLimiter | None = None,
        quota: QuotaCounter | None = None,
    ) -> None:
        self.registry = registry
        self.consent_tokens = consent_tokens
        self.limiter: RateLimiter = limiter or TokenBuckets()
        self.quota: QuotaCounter = quota or DailyCounts()

    async def check(self, flow: Flow, request: web.Request, now: datetime) -> None:
        partner = flow.partner
        if partner is None:
            raise RuntimeError("terms are checked after the partner is known")
        terms = partner.contract.terms
        today = now.date()
        minors = [s for s in flow.subjects if s.birth_date and is_minor(s.birth_date, today)]
        if minors and partner.minors_denied:
            first = minors[0]
            where = f"record {first.index}" if first.index is not None else "the data subject"
            raise MinorDenied(
                f"{where} is under {MINOR_AGE}; the contract denies shares about minors",
                details={"record": first.index} if first.index is not None else None,
            )
        if self._needs_consent(flow, bool(minors)):
            flow.consent_basis = await self._consent(flow, request, now)
        if terms.rate_limit_per_s is not None:
            wait = self.limiter.acquire(partner.id, terms.rate_limit_per_s)
            if wait is not None:
                raise RateLimited(
                    f"more than {terms.rate_limit_per_s:g} shares per second to {partner.id}",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        if terms.max_records_per_day is not None and not self.quota.take(
            partner.id, today, flow.records, terms.max_records_per_day
        ):
            midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), now.tzinfo)
            raise QuotaExceeded(
                f"{partner.id} may receive {terms.max_records_per_day} records per day",
                headers={"Retry-After": str(max(1, math.ceil((midnight - now).total_seconds())))},
            )

    @staticmethod
    def _needs_consent(flow: Flow, has_minor: bool) -> bool:
        partner = flow.partner
        if partner is None or partner.third_party:
            return True
        # Data about a child under 14 is sensitive whatever its category.
        sent = flow.result.categories_sent if flow.result is not None else ()
        sensitive = has_minor or any(partner.sensitive(c) for c in sent)
        return partner.sensitive_consent and sensitive

    async def _consent(self, flow: Flow, request: web.Request, now: datetime) -> tuple[str, ...]:
        partner = flow.partner
        purpose = flow.purpose
        if partner is None or purpose is None:
            raise RuntimeError("consent is checked after partner and purpose are known")
        if not flow.subjects or any(s.id is None for s in flow.subjects):
            raise ConsentRequired("the route names no data subject, so consent cannot be shown")
        token_claims = await self._token_claims(request)
        basis: list[str] = []
        for subject in flow.subjects:
            subject_id = subject.id or ""
            if token_claims is not None and _token_covers(
                token_claims, subject_id, partner.id, purpose
            ):
                basis.append(f"token:{token_claims.get('jti') or 'no-jti'}")
                continue
            grant = (
                self.registry.covering(subject_id, partner.id, purpose, now)
                if self.registry is not None
                else None
            )
            if grant is None:
                where = (
                    f"record {subject.index}" if subject.index is not None else "the data subject"
                )
                raise ConsentRequired(
                    f"{where} has not consented to sharing with {partner.id} for {purpose}",
                    details={"record": subject.index} if subject.index is not None else None,
                )
            basis.append(f"registry:{grant.reference}")
        return tuple(dict.fromkeys(basis))

    async def _token_claims(self, request: web.Request) -> Mapping[str, object] | None:
        values = request.headers.getall("X-Consent-Token", [])
        if not values:
            return None
        if len(values) > 1 or self.consent_tokens is None:
            raise ConsentRequired("the consent token cannot be accepted")
        try:
            return await self.consent_tokens.verify(values[0])
        except InvalidToken as exc:
            raise ConsentRequired(f"the consent token is not valid: {exc.message}") from exc


def _token_covers(claims: Mapping[str, object], subject: str, partner: str, purpose: str) -> bool:
    purposes = claims.get("purposes")
    return (
        claims.get("sub") == subject
        and claims.get("partner") == partner
        and isinstance(purposes, list)
        and purpose in purposes
    )
