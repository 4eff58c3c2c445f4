"""The agreement's terms beyond field scope: minors, consent, rate and daily volume."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from gateway.caps import daily_part, rate_part
from gateway.consent import RegistryError
from gateway.errors import (
    ConsentRegistryUnavailable,
    ConsentRequired,
    InvalidToken,
    MalformedBody,
    MinorDenied,
    QuotaExceeded,
    RateLimited,
)
from gateway.fieldfilter import Key, parse_path, query_parameter, select
from gateway.idnumber import stated_birth_date
from gateway.jsonbody import JSONValue
from gateway.keys import canonical_subject_id, checked_subject_id
from gateway.routing import path_placeholder

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.auth import TokenVerifier
    from gateway.consent import ConsentRegistry
    from gateway.pipeline import Flow
    from gateway.policy import PartnerPolicy, RoutePolicy

log = structlog.get_logger("gateway")

MINOR_AGE = 14
CONSENT_TOKEN_HEADER = "X-Consent-Token"


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class Subject:
    """One data subject of a share: its id and, where the request tells, its birth date."""

    index: Final[int | None]  # the record's index in a batch, None for a single-subject share
    id: Final[str | None]
    birth_date: Final[date | None]

    @property
    def where(self) -> str:
        """How a refusal names this subject, without its id."""
        return "the data subject" if self.index is None else f"record {self.index}"

    @property
    def details(self) -> dict[str, object] | None:
        return None if self.index is None else {"record": self.index}


# --- reading subjects from the caller's document ----------------------------------------------


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def subjects_of(
    route: RoutePolicy,
    doc: dict[str, JSONValue],
    query: Mapping[str, str],
    params: Mapping[str, str] = _NO_PARAMS,
) -> list[Subject]:
    """Read subject ids and birth dates from the caller's document, record by record (and from
    the query and the values of the path's placeholders, `params`)."""
    if route.records is None:
        return [_subject(route, None, doc, query, params)]
    _check_records_place(doc, route.records)
    records = select(doc, route.records)
    shapes = route.record_shapes
    if shapes:
        for index, item in enumerate(records):
            shape = "object" if type(item) is dict else "array" if type(item) is list else "value"
            if shape not in shapes:
                # Nothing of it would go (the filter drops it), yet it would count as a
                # record: in the share record and against the daily cap.
                expected = " or ".join(_SHAPES[s] for s in sorted(shapes))
                raise MalformedBody(f"record {index} of {route.records} is not {expected}")
    return [_subject(route, i, item, query, params) for i, item in enumerate(records)]


_SHAPES: Final = {"array": "an array", "object": "an object", "value": "a single value"}


def _check_records_place(doc: dict[str, JSONValue], records: str) -> None:
    """Refuse a body whose records' path holds something else on the way: an object where
    the records' array should be (`{"applicants": {"0": {...}}}`), an array where a key is.

    Such a body names no record to judge, no subject to ask consent of, no birth date to
    read, yet a subtree above the records (`batch.**`) would send the whole of it.
    """
    values: list[JSONValue] = [doc]
    where = ""
    for segment in parse_path(records):
        if isinstance(segment, Key):
            objects = [value for value in values if type(value) is dict]
            if len(objects) != len(values):
                raise MalformedBody(f"{where} is not an object: the records are at {records}")
            values = [value[segment.name] for value in objects if segment.name in value]
            where = f"{where}.{segment.name}" if where else segment.name
        else:
            arrays = [value for value in values if type(value) is list]
            if len(arrays) != len(values):
                raise MalformedBody(f"{where} is not an array: the records are at {records}")
            values = [item for array in arrays for item in array]
            where += "[]"


def named_subject_ids(
    route: RoutePolicy,
    doc: dict[str, JSONValue],
    query: Mapping[str, str],
    params: Mapping[str, str] = _NO_PARAMS,
) -> list[str]:
    """The subject ids a request names, in their canonical spelling, read as `subjects_of`
    reads them but never refusing: a record that names none is passed over.

    A request refused for one record (one without a subject, a birth date that is no date),
    or before its body is read, is still about the people it names, and `logs subject
    --include-denied` must list it for each of them.
    """
    if route.subject is None:
        return []
    items = [doc] if route.records is None else select(doc, route.records)
    ids: list[str] = []
    for item in items:
        found = _values(route, item, route.subject, query, params)
        subject_id = _as_id(found[0]) if len(found) == 1 else None
        if subject_id is not None:
            ids.append(subject_id)
    return ids


def _subject(
    route: RoutePolicy,
    index: int | None,
    item: JSONValue,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> Subject:
    where = "the body" if index is None else f"record {index}"
    subject_id = None
    if route.subject is not None:
        found = _values(route, item, route.subject, query, params)
        subject_id = _as_id(found[0]) if len(found) == 1 else None
        if subject_id is None:
            raise MalformedBody(
                f"{where}: the subject field {route.subject} is missing or not an id"
            )
    return Subject(index, subject_id, _birth_date(route, item, query, params, subject_id, where))


def _values(
    route: RoutePolicy,
    item: JSONValue,
    path: str,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> list[JSONValue]:
    """The values at a declared `path` (`subject`, `birth_date`): in the query string, a
    placeholder of the request's path, or within one record."""
    placeholder = path_placeholder(path)
    if placeholder is not None:
        value = params.get(placeholder)
        return [] if value is None else [value]
    return _field_values(route, item, path, query)


def _field_values(
    route: RoutePolicy, item: JSONValue, path: str, query: Mapping[str, str]
) -> list[JSONValue]:
    """The values at a field's `path`, where the filter reads it: in the query string, or
    within one record (a body key named `path` is no placeholder)."""
    parameter = query_parameter(path)
    if parameter is not None:
        value = query.get(parameter)
        return [] if value is None else [value]
    records = route.records
    if records is None:
        return select(item, path)
    if path == records:  # the records are the subject ids themselves: `ids[]`
        return [item]
    if path.endswith(".**"):
        # A subtree over the records (`batch.**` over `batch.applicants[]`): within one
        # record, the whole record.
        base, array = path.removesuffix(".**"), records.removesuffix("[]")
        if array == base or array.startswith(base + "."):
            return [item]
    if path.startswith(records + "."):
        within = path[len(records) + 1 :]
        # `applicants[].**`: the whole record (a `**` standing alone is no path to select).
        return [item] if within == "**" else select(item, within)
    return []  # outside the records: not about this record's subject


def _as_id(value: JSONValue) -> str | None:
    """The subject id a value names, in its canonical spelling (the one its reference and its
    consent are looked up by); None for no id, such as a string of spaces."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    # A JSON integer and the string of its digits name the same subject.
    return checked_subject_id(str(value))


def _birth_date(
    route: RoutePolicy,
    item: JSONValue,
    query: Mapping[str, str],
    params: Mapping[str, str],
    subject_id: str | None,
    where: str,
) -> date | None:
    """The latest birth date the record gives: declared, or inside any resident ID number.

    Every one counts, not the first found: a record that also names a child (a guarantor's ID
    number, a declared date the ID number contradicts) is about a child.
    """
    born: list[date] = []
    if route.birth_date is not None:
        found = _values(route, item, route.birth_date, query, params)
        born += _dates(found, f"{where}: the birth date at {route.birth_date}")
    for path in route.birth_date_fields:
        found = _field_values(route, item, path, query)
        born += _dates(found, f"{where}: the birth date at {path}")
    candidates: list[JSONValue] = [
        value for path in route.id_number_paths for value in _field_values(route, item, path, query)
    ]
    candidates.append(subject_id)
    born.extend(_ids_born(candidates))
    return max(born, default=None)


def born_outside_records(
    route: RoutePolicy, doc: dict[str, JSONValue], query: Mapping[str, str]
) -> date | None:
    """The latest birth date in the resident ID numbers and birth-date fields a batch route
    sends outside its records (a guarantor's): no record's subject, and still a person, perhaps
    a child."""
    records = route.records
    if records is None:
        return None  # every ID number of the body is the one subject's already
    # The records' arrays themselves are judged record by record: a subtree above them
    # (`batch.**` over `batch.applicants[]`) is walked around them.
    arrays = select(doc, records.removesuffix("[]"))
    no_records = not select(doc, records)
    ids = _outside_records(route.id_number_paths, records, doc, query, no_records)
    skipped = {id(array) for array in arrays if isinstance(array, list)}
    born = list(_ids_born(ids, skipped))
    declared = () if route.birth_date is None else (route.birth_date,)
    paths = (*declared, *route.birth_date_fields)
    dates = _outside_records(paths, records, doc, query, no_records)
    born += _dates(dates, "a birth date outside the records")
    return max(born, default=None)


def _outside_records(
    paths: tuple[str, ...],
    records: str,
    doc: dict[str, JSONValue],
    query: Mapping[str, str],
    no_records: bool,
) -> list[JSONValue]:
    values: list[JSONValue] = []
    for path in paths:
        if path == records or path.startswith(records + "."):
            continue
        parameter = query_parameter(path)
        if parameter is None:
            values += select(doc, path)
        elif parameter in query and no_records:
            # Otherwise every record's already (`_values` reads the query for each).
            values.append(query[parameter])
    return values


def _dates(values: list[JSONValue], what: str) -> list[date]:
    return [_as_date(value, what) for value in values if value is not None]


def _ids_born(values: list[JSONValue], skipped: AbstractSet[int] = frozenset()) -> Iterator[date]:
    """The birth date of every ID number among `values` (`stated_birth_date`), also anywhere
    inside a subtree (`**`), in its keys too, and when sent as a JSON integer (the same
    number); containers whose `id` is in `skipped` are not entered.

    A value declared an ID number (or a subject id) that is laid out as one gives its date
    whatever its check digit: a child's number mistyped is still about a child.
    """
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, dict | list) and id(value) in skipped:
            continue
        if isinstance(value, dict):
            stack.extend(value)  # a key can be an ID number ("110105…": "front.png")
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        else:
            if type(value) is int:
                value = str(value)
            if not isinstance(value, str):
                continue
            from_id = stated_birth_date(value)
            if from_id is not None:
                yield from_id
            elif len(value) > _LONGEST_ID:
                yield from _ids_in_text(value)


# Of the ID numbers, only one of 18 characters can be a child's (a first-generation one was
# issued before 2004 to someone born in the 1900s): a value no longer than that either is one,
# read whole above, or holds none that matters, and is never scanned.
_LONGEST_ID: Final = 18


def _ids_in_text(text: str) -> Iterator[date]:
    """The birth dates of the ID numbers written among other text ("身份证 110105…", "CN-110105…"):
    a child's number with a word before it is still a child's."""
    # Imported here, not above: the scanner's tables take a tenth of a second to build, which
    # a command reading terms (`contracts explain`) pays only for text such as this.
    from gateway.pii import ID_NUMBER, find

    for match in find(text):
        if match.category == ID_NUMBER:
            born = stated_birth_date(text[match.start : match.end])
            if born is not None:
                yield born


def _as_date(value: JSONValue, what: str) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            pass
    raise MalformedBody(f"{what} is not an ISO 8601 date")


def minors_among(subjects: list[Subject], today: date) -> list[bool]:
    """Which subjects are under 14 `today`."""
    return [s.birth_date is not None and is_minor(s.birth_date, today) for s in subjects]


def deny_minors(partner: PartnerPolicy, subjects: list[Subject], minors: list[bool]) -> None:
    """MinorDenied where the contract denies shares about children and `minors` holds one."""
    if partner.minors_denied and any(minors):
        subject = subjects[minors.index(True)]
        raise MinorDenied(
            f"{subject.where} is under {MINOR_AGE}; the contract denies shares about minors",
            details=subject.details,
        )


def consent_for_child_outside(partner: PartnerPolicy, born: date | None, today: date) -> None:
    """ConsentRequired where a child's data needs consent and a birth date outside a batch's
    records is a child's: a child's data is sensitive whatever its category (a birth date
    beside a batch), and no record's consent is consent for someone who is no record's subject.
    It depends on the body and the date alone: no consent on file could meet it."""
    if partner.sensitive_consent and born is not None and is_minor(born, today):
        raise ConsentRequired(
            f"a birth date outside the records is a child's (under {MINOR_AGE}): "
            "no consent can be shown for someone who is no record's subject"
        )


def deny_child_outside(partner: PartnerPolicy, born: date | None, today: date) -> None:
    """MinorDenied where the contract denies shares about children and a birth date outside a
    batch's records (`born_outside_records`: in an ID number or a birth-date field) is a
    child's."""
    if partner.minors_denied and born is not None and is_minor(born, today):
        raise MinorDenied(
            f"a birth date outside the records is under {MINOR_AGE}; "
            "the contract denies shares about minors"
        )


def is_minor(born: date, today: date) -> bool:
    """Under 14 on `today`; a 29 February birthday turns 14 on 1 March in common years."""
    year = born.year + MINOR_AGE
    if year > date.max.year:
        return True  # born in the future, as far as any date can tell: not 14 yet
    try:
        fourteenth = born.replace(year=year)
    except ValueError:
        fourteenth = date(year, 3, 1)
    return today < fourteenth


# --- rate and daily volume --------------------------------------------------------------------


class RateLimiter(Protocol):
    """Admits a share or says how many seconds to wait; a shared store can serve replicas."""

    async def acquire(self, key: str, rate_per_s: float, ticket: str) -> float | None: ...

    async def release(self, key: str, ticket: str) -> None:
        """Undo the admission of `ticket` (its share was not recorded, so nothing went out)."""
        ...

    def note(self, key: str, ticket: str) -> None:
        """A share to a partner with no rate: a rate a reload brings in counts it."""
        ...


class QuotaCounter(Protocol):
    """Counts records per partner and day; `take` is all-or-nothing under `limit` (if any),
    and taking no records always succeeds, even where a lowered limit is below the count. It
    returns the day it counted against (None: refused), which `give_back` is given."""

    async def take(self, key: str, day: date, count: int, limit: int | None) -> date | None: ...

    async def give_back(self, key: str, day: date, count: int) -> None: ...


def rate_window(rate_per_s: float) -> tuple[float, int]:
    """The window a rate is judged over, in seconds, and how many shares it admits in it."""
    return (1.0, int(rate_per_s)) if rate_per_s >= 1 else (1.0 / rate_per_s, 1)


# How many of its latest shares a partner without a rate is remembered by.
_UNRATED_KEPT: Final = 1000


@dataclass(slots=True)
class SlidingWindows:
    """In-process, one window per partner: never more shares than the rate in any window.

    A rate of N per second admits at most N (rounded down) in any one second; a rate below
    one per second admits one per 1/N seconds. (A token bucket holding a second's worth
    would let almost 2N through in the second after an idle spell.)
    """

    clock: Callable[[], float] = time.monotonic
    # Per partner, the admissions still in the window: (when, ticket), oldest first.
    _windows: dict[str, deque[tuple[float, str]]] = field(default_factory=dict, init=False)
    # Per partner, when the latest admission that left its window was made.
    _left: dict[str, float] = field(default_factory=dict, init=False)

    async def acquire(self, key: str, rate_per_s: float, ticket: str) -> float | None:
        now = self.clock()
        span, allowed = rate_window(rate_per_s)
        window = self._windows.get(key)
        if window is None or window.maxlen is not None:  # new, or `note`d while it had no rate
            window = self._windows[key] = deque(() if window is None else window)
        while window and window[0][0] <= now - span:
            self._left[key] = window.popleft()[0]
        # An admission that left a one-second window (the rate was one a second or more) may
        # still be inside a longer one: the rate a reload lowered below one a second. Once the
        # shares after it are given back (never sent), it is the last the partner received.
        # Every window is a second or longer, so any admission less than a second old is
        # still held, and a rate whose window is longer admits one share in it: the latest
        # admission to leave is the only one that can still count. (Given back after it left,
        # it still counts: the window no longer holds its ticket, and counting it is the side
        # that never sends too many.)
        left = self._left.get(key)
        if left is not None and left <= now - span:
            left = None  # outside this window too
        if len(window) + (left is not None) < allowed:
            window.append((now, ticket))
            return None
        # When the oldest that counts leaves the window.
        if len(window) < allowed and left is not None:
            return left + span - now
        return window[-allowed][0] + span - now

    def seed(self, key: str, rate_per_s: float, ages_s: Iterable[float]) -> None:
        """Restore a window after a restart from how long ago its last shares were made."""
        now = self.clock()
        span, allowed = rate_window(rate_per_s)
        recent = sorted(now - age for age in ages_s if 0 <= age < span)
        # No share's ticket: a share from before the restart is never given back.
        self._windows[key] = deque((when, "") for when in recent[-allowed:])

    def note(self, key: str, ticket: str) -> None:
        # The latest few only: a rate brought in later is judged on them (a rate above
        # `_UNRATED_KEPT` a second on a part of its first window).
        window = self._windows.get(key)
        if window is None or window.maxlen is None:  # new, or a rate a reload took away
            window = self._windows[key] = deque(window or (), maxlen=_UNRATED_KEPT)
        window.append((self.clock(), ticket))

    async def release(self, key: str, ticket: str) -> None:
        # Its own place, not the newest: that one belongs to a share admitted since, and
        # taking it would free a place before its time.
        for admission in self._windows.get(key, ()):
            if admission[1] == ticket:
                self._windows[key].remove(admission)
                return


@dataclass(slots=True)
class DailyCounts:
    """Records shared per partner on the current day; `seed` restores a day after a restart."""

    _day: date | None = field(default=None, init=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False)

    def seed(self, day: date, counts: Mapping[str, int]) -> None:
        self._day = day
        self._counts = dict(counts)

    async def take(self, key: str, day: date, count: int, limit: int | None) -> date | None:
        if self._day is None or day > self._day:
            self._day, self._counts = day, {}
        # A request that began just before midnight and arrives after the roll-over counts
        # against the new day: it must not wipe the new day's counts.
        used = self._counts.get(key, 0)
        # A share of no records always fits, also once a reload (or a restart) lowered the cap
        # below the day's count: it adds nothing to it.
        if limit is not None and count > 0 and used + count > limit:
            return None
        self._counts[key] = used + count
        return self._day

    async def give_back(self, key: str, day: date, count: int) -> None:
        if day == self._day:  # after a roll-over there is nothing of that day left to undo
            self._counts[key] = max(0, self._counts.get(key, 0) - count)


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class VolumeTaken:
    """What `Terms.check` counted for one share: given back if its record cannot be written."""

    partner: Final[str]
    day: Final[date]
    records: Final[int]
    ticket: Final[str]  # the share's id: its place in the rate window (or among the shares `note`d)


def _seconds_to_midnight(now: datetime) -> int:
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    # Through timestamps: subtracting two times of one zone ignores a DST change between them.
    return max(1, math.ceil(midnight.timestamp() - now.timestamp()))


# --- the check --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentToken:
    """A request's consent token: its verified claims, or why it counts for nothing."""

    claims: Mapping[str, object] | None
    problem: str  # empty when there is no token or it was accepted


NO_CONSENT_TOKEN: Final = ConsentToken(None, "")


class Terms:
    """Checks the terms after the body is understood and before anything is recorded as shared."""

    def __init__(
        self,
        *,
        registry: ConsentRegistry | None = None,
        consent_tokens: TokenVerifier | None = None,
        limiter: RateLimiter | None = None,
        quota: QuotaCounter | None = None,
        sends: SlidingWindows | None = None,
    ) -> None:
        self.registry = registry
        self.consent_tokens = consent_tokens
        self.limiter: RateLimiter = limiter or SlidingWindows()
        self.quota: QuotaCounter = quota or DailyCounts()
        # The same rate again, at the moment each share is written to its partner: admitted
        # within the rate, shares still reach the partner in bursts when some wait longer than
        # others on the way (for a free connection to a partner that stalled, a handshake).
        self.sends = sends or SlidingWindows()

    async def read_consent_token(self, request: web.Request) -> ConsentToken:
        """The request's consent token, verified or with why it counts for nothing.

        The one wait of the terms (a key fetch, for a new `kid`): the caller reads it before it
        takes the instant the share is judged at, so that no wait comes between judging the
        contract's validity and the day the caps count, and recording the share.
        """
        values = request.headers.getall(CONSENT_TOKEN_HEADER, [])
        if not values:
            return NO_CONSENT_TOKEN
        if len(values) > 1:
            return ConsentToken(None, f"the {CONSENT_TOKEN_HEADER} header is repeated")
        if self.consent_tokens is None:
            return ConsentToken(None, "the gateway has no consent keys configured")
        try:
            return ConsentToken(await self.consent_tokens.verify(values[0]), "")
        except InvalidToken as exc:
            return ConsentToken(None, exc.message)

    async def check(self, flow: Flow, request: web.Request, now: datetime) -> None:
        """Consent, minors, rate, daily volume: SPEC 4's order; the first failure raises.

        Reads the consent token first unless `flow.consent_token` holds it already.
        """
        partner, purpose = flow.partner, flow.purpose
        if partner is None or purpose is None:
            raise RuntimeError("terms are checked after the partner and purpose are known")
        token = flow.consent_token
        if token is None:
            token = await self.read_consent_token(request)
        # Who is a child is known first: a child's data needs consent as sensitive data does.
        minors = minors_among(flow.subjects, now.date())
        try:
            flow.consent_basis = self._consent(flow, partner, purpose, minors, token, now)
        except RegistryError as exc:
            # Not the request's fault, nor the gateway code's: the share waits for the file.
            log.error("consent_registry_unusable", share_id=flow.share_id, error=str(exc))
            raise ConsentRegistryUnavailable("the consent registry cannot be read") from exc
        consent_for_child_outside(partner, flow.born_outside, now.date())
        deny_minors(partner, flow.subjects, minors)
        deny_child_outside(partner, flow.born_outside, now.date())
        flow.volume_taken = await self._volume(partner, flow.records, now, flow.share_id)

    def _consent(
        self,
        flow: Flow,
        partner: PartnerPolicy,
        purpose: str,
        minors: list[bool],
        token: ConsentToken,
        now: datetime,
    ) -> tuple[str, ...]:
        """Each subject's consent basis, where the contract requires one."""
        unread = flow.route is not None and flow.route.plan is None and bool(flow.body)
        sent = flow.result.categories_sent if flow.result is not None else ()
        needing = needing_consent(partner, flow.subjects, minors, sent, unread=unread)
        if not needing:
            return ()
        claims, token_problem = token.claims, ""
        if token.problem:
            log.warning("consent_token_rejected", share_id=flow.share_id, problem=token.problem)
            token_problem = f" (the consent token was not accepted: {token.problem})"
        basis: list[str] = []
        for subject, subject_id in needing:
            if claims is not None and _token_covers(claims, subject_id, partner.id, purpose):
                if not self._withdrawn_since(claims, subject_id, partner.id, purpose, now):
                    basis.append(f"token:{claims['jti']}")
                    continue
                token_problem = " (the consent token predates a withdrawal on record)"
            grant = (
                self.registry.covering(subject_id, partner.id, purpose, now)
                if self.registry is not None
                else None
            )
            if grant is None:
                raise ConsentRequired(
                    f"{subject.where} has not consented to sharing with {partner.id} "
                    f"for {purpose}{token_problem}",
                    details=subject.details,
                )
            basis.append(f"registry:{grant.reference}")
        return tuple(dict.fromkeys(basis))

    def _withdrawn_since(
        self,
        claims: Mapping[str, object],
        subject_id: str,
        partner: str,
        purpose: str,
        now: datetime,
    ) -> bool:
        """A withdrawal in force now that the token was issued before: the token is stale.

        A token is signed once and lives until its `exp`; the subject's later withdrawal must
        still take effect on the next request. Without `iat` any withdrawal counts.
        """
        if self.registry is None:
            return False
        iat = claims.get("iat")
        issued = None
        if type(iat) in (int, float):
            # Tokens are accepted from an issuer whose clock runs up to the leeway ahead of
            # ours: one may have been signed that much before its `iat` says, so a withdrawal
            # recorded in that span may be the later of the two.
            leeway = timedelta(seconds=self.consent_tokens.leeway_s if self.consent_tokens else 0)
            # An `iat` too far in the past for a date: as if it had none.
            with contextlib.suppress(OverflowError, OSError, ValueError):
                issued = datetime.fromtimestamp(iat, UTC) - leeway  # type: ignore[arg-type]
        return self.registry.withdrawn_between(subject_id, partner, purpose, issued, now)

    async def _volume(
        self, partner: PartnerPolicy, records: int, now: datetime, ticket: str
    ) -> VolumeTaken:
        # This gateway's part of the agreed caps (`cap_shares`), the whole of them by default.
        caps = partner.caps
        limit = caps.records_per_day
        if limit is not None and records > limit:
            # No day has room for it: a Retry-After would have the caller send the same
            # personal data again at every midnight, refused each time.
            raise QuotaExceeded(
                f"{partner.id} may receive {limit} records per day{daily_part(caps)}, and this "
                f"share holds {records}: no day has room for it; send them in smaller shares"
            )
        rate = caps.rate_per_s
        rated = rate is not None
        if rate is not None:
            wait = await self.limiter.acquire(partner.id, rate, ticket)
            if wait is not None:
                raise RateLimited(
                    f"more than {rate:g} shares per second to {partner.id}{rate_part(caps)}",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        # Counted with or without a cap: a cap a reload brings in covers the whole day.
        counted = await self.quota.take(partner.id, now.date(), records, limit)
        if counted is None:
            if rated:
                # Refused: it used no share of the rate.
                await self.limiter.release(partner.id, ticket)
            raise QuotaExceeded(
                f"{partner.id} may receive {limit} records per day{daily_part(caps)}",
                headers={"Retry-After": str(_seconds_to_midnight(now))},
            )
        if not rated:
            # Likewise a rate a reload brings in covers the shares made just before it.
            self.limiter.note(partner.id, ticket)
        # The day it was counted against, which is the next one for a share judged just
        # before midnight and counted after it: given back, it frees a place of that day.
        return VolumeTaken(partner.id, counted, records, ticket)

    async def take_turn(self, partner: str, rate_per_s: float | None, ticket: str) -> bool:
        """Wait until `partner` has received fewer shares than its rate in the last window,
        then count this one as sent (without a rate, only noted, as `check` does). Whether it
        had to wait."""
        if rate_per_s is None:
            self.sends.note(partner, ticket)
            return False
        waited = False
        while True:
            wait = await self.sends.acquire(partner, rate_per_s, ticket)
            if wait is None:
                return waited
            # A place frees only with time (or a share given back): looked at again then.
            await asyncio.sleep(wait)
            waited = True

    async def give_back(self, taken: VolumeTaken | None) -> None:
        """Undo `check`'s count of a share that was then not recorded, or never sent."""
        if taken is None:
            return
        await self.quota.give_back(taken.partner, taken.day, taken.records)
        await self.limiter.release(taken.partner, taken.ticket)
        await self.sends.release(taken.partner, taken.ticket)


def needing_consent(
    partner: PartnerPolicy,
    subjects: list[Subject],
    minors: list[bool],
    sent: Iterable[str],
    *,
    unread: bool,
) -> list[tuple[Subject, str]]:
    """The subjects whose consent a share needs, with their ids (`sent`: its categories;
    `unread`: an upload).

    Raises ConsentRequired where no consent could ever be shown, whatever the registry and the
    tokens hold: the share names no subject, or a subject without an id.
    """
    # An upload (a route without fields) is not read: it may hold any sensitive category the
    # contract names, so where those need consent, every upload does.
    every_subject = partner.third_party or (
        partner.sensitive_consent
        and (
            any(partner.sensitive(c) for c in sent)
            or (unread and bool(partner.sensitive_categories))
        )
    )
    # Data about a child under 14 is sensitive whatever its category.
    needing = [
        s
        for s, minor in zip(subjects, minors, strict=True)
        if every_subject or (minor and partner.sensitive_consent)
    ]
    if every_subject and not subjects:
        raise ConsentRequired("the request names no data subject, so consent cannot be shown")
    named = [(s, s.id) for s in needing if s.id is not None]
    if len(named) < len(needing):
        raise ConsentRequired("the route names no data subject field, so consent cannot be shown")
    return named


def _token_covers(claims: Mapping[str, object], subject: str, partner: str, purpose: str) -> bool:
    purposes = claims.get("purposes")
    jti = claims.get("jti")
    sub = claims.get("sub")
    # Without a jti the share record could not say which consent it relied on.
    return (
        isinstance(jti, str)
        and jti != ""
        # `subject` is canonical already (`_as_id`); the consent service may spell it otherwise.
        and isinstance(sub, str)
        and canonical_subject_id(sub) == subject
        and claims.get("partner") == partner
        and isinstance(purposes, list)
        and purpose in purposes
    )
