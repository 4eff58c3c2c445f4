"""One share, step by step: the ordered checks, the record, the forward, the filtered answer."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import partial
from typing import Final, TypeVar
from urllib.parse import quote

import orjson
import structlog
from aiohttp import web
from multidict import MultiMapping

from gateway import metrics
from gateway.auth import Caller, grants, grants_partner
from gateway.bodies import awaits_continue, content_coding, decode, read_capped, send_continue
from gateway.errors import (
    BodyTooLarge,
    ContractInactive,
    GatewayError,
    InvalidToken,
    MalformedBody,
    MalformedRequest,
    Overloaded,
    PurposeDenied,
    RouteDenied,
    ScopeDenied,
    ShareLogUnavailable,
    UnknownPartner,
    UnsupportedMediaType,
    UpstreamError,
)
from gateway.fieldfilter import FilterPlan, FilterResult, TextScanner, compile_plan
from gateway.jsonbody import (
    JSONValue,
    check_json_content_type,
    dump_json,
    parse_json,
    parse_media_type,
)
from gateway.keys import subject_ref
from gateway.logconfig import error_location
from gateway.pii import IP
from gateway.policy import BASE_REQUEST_HEADERS, PartnerPolicy, Policy, RoutePolicy
from gateway.routing import PATH_PREFIX, Target, parse_target
from gateway.runtime import RUNTIME, Runtime
from gateway.server import SERVER_NAME
from gateway.settings import LimitsSettings
from gateway.sharelog.record import ShareOutcome, ShareRecord
from gateway.terms import (
    NO_CONSENT_TOKEN,
    ConsentToken,
    Subject,
    VolumeTaken,
    born_outside_records,
    named_subject_ids,
    subjects_of,
)
from gateway.upstream import UpstreamFailure, UpstreamRequest

log = structlog.get_logger("gateway")

# Response headers the caller may see from a partner; the partner's cookies, its internal
# addresses (Location) and hop-by-hop headers stay behind.
RESPONSE_HEADERS = ("Content-Type", "Cache-Control", "Retry-After", "ETag", "Last-Modified")
# Validators of the partner's whole answer: wrong once the answer is filtered.
UNFILTERED_ONLY = frozenset({"ETag", "Last-Modified"})

# Charsets an upload's Content-Type keeps on its way to the partner.
_CHARSETS = frozenset({"utf-8", "us-ascii", "iso-8859-1", "gb18030", "gbk", "gb2312", "big5"})

# Methods whose shares carry no body: one sent anyway is refused, never forwarded.
BODYLESS_METHODS = frozenset({"GET", "DELETE", "HEAD", "OPTIONS"})


@dataclass(slots=True)
class Flow:
    """Everything the gateway learns about one request, filled in step by step."""

    share_id: str
    method: str
    policy: Policy  # the contract set in force when the request arrived, for its whole life
    partner: PartnerPolicy | None = None
    caller: Caller | None = None
    purpose: str | None = None
    route: RoutePolicy | None = None
    target: Target | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)  # the route's placeholders
    body: bytes | None = None
    content_type: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    result: FilterResult | None = None
    records: int = 0
    subjects: list[Subject] = field(default_factory=list)  # raw ids: in memory only, never recorded
    subject_refs: tuple[str, ...] = ()
    noted_ids: tuple[str, ...] = ()  # whose references `subject_refs` holds: raw, never recorded
    born_outside: date | None = None  # a resident ID number's outside the records (batches)
    consent_basis: tuple[str, ...] = ()
    passed_headers: tuple[tuple[str, str], ...] = ()  # the caller's headers the route lets through
    volume_taken: VolumeTaken | None = None  # what the rate and daily counts took for it
    header_redactions: dict[str, int] = field(default_factory=dict)  # in passed-on headers
    consent_token: ConsentToken | None = None  # read before the share's instant is taken
    decided_at: datetime | None = None  # the instant every check was judged at: the record's

    def record(self, decision: str, reason: str) -> ShareRecord:
        partner = self.partner
        loaded = partner.loaded if partner else None
        shared = decision == "shared"
        # A refusal sends nothing: its record names no field, even when the body had already
        # been filtered when a later check (consent, minors, caps) refused it.
        result = self.result if shared else None
        return ShareRecord(
            share_id=self.share_id,
            ts=self.decided_at.astimezone(UTC) if shared and self.decided_at else datetime.now(UTC),
            partner=partner.id if partner else None,
            contract_id=loaded.contract.contract.id if loaded else None,
            contract_version=loaded.contract.contract.version if loaded else None,
            contract_sha256=loaded.sha256 if loaded else None,
            caller=self.caller.subject if self.caller else None,
            purpose=self.purpose,
            method=self.method,
            route=self.route.label if self.route else None,
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            fields_sent=self.fields_sent() if shared else (),
            fields_stripped=result.fields_stripped if result else (),
            fields_transformed=result.fields_transformed if result else (),
            categories_sent=result.categories_sent if result else (),
            pii_redactions=self.redactions() if shared else {},
            records=self.records if shared else 0,
            subject_refs=self.subject_refs,
            bytes_sent=len(self.body) if self.body is not None and shared else 0,
            upstream_location=partner.location if partner else None,
            cross_border_mechanism=partner.cross_border_mechanism if partner else None,
            consent_basis=self.consent_basis,
        )

    def fields_sent(self) -> tuple[str, ...]:
        """The body and query paths sent, the placeholders of the route's path, whose values the
        partner reads in the URL (`path.<name>`), and the headers the route passes on
        (`header.<name>`; not the Accept and User-Agent every share may carry)."""
        sent = self.result.fields_sent if self.result else ()
        more = [PATH_PREFIX + name for name in self.path_params]
        more += [f"header.{n}" for n, _ in self.passed_headers if n not in BASE_REQUEST_HEADERS]
        return tuple(sorted({*sent, *more})) if more else sent

    def redactions(self) -> dict[str, int]:
        """What the scanner redacted in the body, the query and the headers, by category."""
        result = self.result
        counts = dict(result.pii_redactions) if result else {}
        for category, n in self.header_redactions.items():
            counts[category] = counts.get(category, 0) + n
        return counts


def _share_ids() -> Iterator[str]:
    """Random (version 4) UUIDs, as `str(uuid.uuid4())` gives them."""
    while True:
        # One read of the system's random source serves many shares instead of one each.
        pool = os.urandom(16 * 256)
        for start in range(0, len(pool), 16):
            n = int.from_bytes(pool[start : start + 16])
            n = (n & _UUID4_KEEP) | _UUID4_SET
            h = f"{n:032x}"
            yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The version (4) and variant (RFC 4122) bits of a random UUID.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_SHARE_IDS = _share_ids()


def error_response(error: GatewayError, share_id: str | None) -> web.Response:
    body: dict[str, object] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    headers = {"Server": SERVER_NAME, **error.headers}
    if share_id is not None:
        body["share_id"] = share_id
        headers["X-Share-Id"] = share_id
    try:
        payload = orjson.dumps({"error": body})
    except TypeError:
        # A message or detail JSON cannot hold (a lone surrogate from a header's bytes): the
        # refusal still goes out, with its code and share id.
        body["message"] = "the request was refused"
        body.pop("details", None)
        payload = orjson.dumps({"error": body})
    return web.Response(
        status=error.status, body=payload, content_type="application/json", headers=headers
    )


def single_header(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise MalformedRequest(f"the {name} header is repeated")
    return values[0] if values else None


# --- the steps, in the order SPEC 4 gives them -------------------------------------------------


def refuse_transfer_codings(request: web.Request) -> None:
    codings = request.headers.getall("Transfer-Encoding", [])
    if codings and [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
        # The server de-chunks but decodes no other transfer coding: such a body is not what it
        # seems, so it is not read at all.
        raise MalformedRequest("only Transfer-Encoding: chunked is accepted")


def resolve_partner(flow: Flow, request: web.Request, runtime: Runtime) -> None:
    refuse_transfer_codings(request)
    flow.target = target = parse_target(
        request.raw_path, max_query_params=runtime.settings.limits.max_query_params
    )
    partner = flow.policy.partners.get(target.partner)
    if partner is None:
        # The value is not echoed: what a caller wrote may be personal data, and it ends up in
        # the caller's logs. The same holds for every message below.
        raise UnknownPartner("no contract for the partner the path names")
    flow.partner = partner


async def caller_of(request: web.Request, runtime: Runtime) -> Caller:
    """The verified caller of a request (shares and the admin endpoints alike)."""
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        # Which of two tokens a server would read is not defined: the caller is not identified.
        raise InvalidToken("the Authorization header is repeated")
    return await runtime.verifier.authenticate(values[0] if values else None)


async def authenticate(flow: Flow, request: web.Request, runtime: Runtime) -> None:
    flow.caller = await caller_of(request, runtime)


def authorize(flow: Flow, request: web.Request, runtime: Runtime) -> None:
    partner, target, caller = flow.partner, flow.target, flow.caller
    if partner is None or target is None or caller is None:
        raise RuntimeError("authorize runs after resolve_partner and authenticate")
    purpose = single_header(request, "X-Share-Purpose")
    if not purpose:
        if not grants_partner(caller.scopes, partner.id):
            # SPEC 4 judges the scope first: a token for nothing of this partner's is told so.
            raise ScopeDenied(f"the token grants nothing of share:{partner.id}")
        raise PurposeDenied("the X-Share-Purpose header is required")
    # HTTP's own blanks only: a no-break space or a form feed around it is part of what was
    # sent, and a value that names no purpose as sent names none.
    purpose = purpose.strip(" \t")
    if purpose in partner.purposes:
        # Recorded only as a name the contract defines: a refused caller's header is free text,
        # and the share log keeps no value a caller wrote.
        flow.purpose = purpose
    if not grants(caller.scopes, partner.id, purpose):
        shown = purpose if purpose in partner.purposes else "<the purpose asked for>"
        raise ScopeDenied(f"the token does not grant share:{partner.id}:{shown}")
    matches = partner.routes.match(flow.method, target.segments)
    if not matches:
        raise RouteDenied("the contract declares no route for this method and path")
    for route, params in matches:
        if route.purpose == purpose:
            flow.route = route
            # From here a refusal is about the subject the path or query names, even one
            # refused for naming it by a phone or ID number, or before the body is read.
            query = dict(target.query)
            note_subjects(flow, runtime, named_subject_ids(route, {}, query, params))
            refuse_identifiers_in_path(params, runtime.scanner)
            flow.path_params = params
            return
    if purpose not in partner.purposes:
        raise PurposeDenied("the purpose asked for is not approved in the contract")
    raise PurposeDenied(f"the route {matches[0][0].label} is not declared for purpose {purpose!r}")


def refuse_identifiers_in_path(params: Mapping[str, str], scanner: TextScanner | None) -> None:
    """A placeholder's value goes to the partner as it is, and no category of the contract
    covers it: one holding an identifier (a phone or ID number as a "report id") is refused,
    since redacting it would change what the request names."""
    if scanner is None:
        return
    for name, value in params.items():
        _, found = scanner(value, _NO_CATEGORIES)
        if found:
            raise MalformedRequest(
                f"the path value for {{{name}}} holds personal data ({', '.join(sorted(found))}); "
                "personal data goes in the body, where the contract names it"
            )


def pass_through_headers(flow: Flow, request: web.Request, runtime: Runtime) -> None:
    """The caller's headers the route lets through, read before the share is recorded.

    Their values are free text no category covers (a `User-Agent` may carry a phone number):
    scanned like an allowed string, every identifier redacted and counted.
    """
    if flow.route is None:
        raise RuntimeError("pass_through_headers runs after authorize")
    headers: list[tuple[str, str]] = []
    scanner = runtime.scanner
    # A header the caller's `Connection` names is for the hop to the gateway alone (RFC 9110
    # 7.6.1): it stays behind, even where the route passes that header on.
    this_hop = _connection_names(request)
    for name in flow.route.header_order:
        if name in this_hop:
            continue
        value = single_header(request, name)
        if value is None:
            continue
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # Bytes that are not UTF-8 reach here as surrogates, which the scanner reads
                # past, and go out as they came: GBK digits would pass unseen.
                raise MalformedRequest(f"the {name} header is not UTF-8") from None
        if scanner is not None:
            # A browser's User-Agent names versions like `Chrome/124.0.0.0`, which read as
            # IPv4 addresses: there only, addresses are not looked for.
            allowed = _VERSIONS_LOOK_LIKE_ADDRESSES if name == "user-agent" else _NO_CATEGORIES
            value, found = scanner(value, allowed)
            for category, n in found.items():
                flow.header_redactions[category] = flow.header_redactions.get(category, 0) + n
        headers.append((name, value))
    flow.passed_headers = tuple(headers)


_NO_CATEGORIES: frozenset[str] = frozenset()
_VERSIONS_LOOK_LIKE_ADDRESSES: frozenset[str] = frozenset({IP})


def _connection_names(request: web.Request) -> frozenset[str]:
    """The header names the request's `Connection` fields list, lower-cased."""
    values = request.headers.getall("Connection", ())
    return frozenset(name.strip().lower() for value in values for name in value.split(","))


def check_contract(flow: Flow, now: datetime) -> None:
    if flow.partner is None:
        raise RuntimeError("check_contract runs after resolve_partner")
    check_contract_at(flow.partner, now)


def check_contract_at(partner: PartnerPolicy, now: datetime) -> None:
    if not partner.active:
        raise ContractInactive(f"the contract is {partner.contract.contract.status}")
    if not partner.in_force(now):
        contract = partner.contract.contract
        raise ContractInactive(
            f"the contract is valid from {contract.effective} to {contract.expires}"
        )


async def read_payload(flow: Flow, request: web.Request, runtime: Runtime) -> None:
    route, partner = flow.route, flow.partner
    if route is None or partner is None:
        raise RuntimeError("read_payload runs after authorize")
    limits = runtime.settings.limits
    query = dict(flow.target.query) if flow.target else {}
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise BodyTooLarge(f"the body exceeds {limits.max_body_bytes} bytes")
    if flow.method in BODYLESS_METHODS:
        if request.body_exists:
            raise MalformedBody(f"a {flow.method} share carries no body")
        raw = None
    else:
        if awaits_continue(request):
            # Its caller holds the body back until told to send it: its type is judged on the
            # head, and a wrong one refused before a byte of it travels.
            judge_body_type(request, route)
            await send_continue(request)
        # Sent at once, it is read (under the cap) before its type is judged: an oversized body
        # is 413 whatever its type, also when it is chunked and its size is only known once
        # it is read.
        raw = await read_capped(
            request.content,
            declared_length=declared,
            limit=limits.max_body_bytes,
            timeout_s=limits.body_read_timeout_s,
        )
    if route.plan is None:
        if raw is not None:
            flow.content_type = _upload_type(request, route)
        flow.result = upload_result(partner, query, sent=bool(raw))
        flow.query = {}
        flow.body = raw
        # An upload is never read: only the query and the path can name its subjects.
        subjects = subjects_of(route, {}, query, flow.path_params)
        born_outside = born_outside_records(route, {}, query)
        _count_subjects(flow, runtime, route, subjects, born_outside, personal=bool(raw))
        return
    coding = "identity"
    if raw is not None:
        coding = json_body_coding(request)  # on the loop: it keeps the types it accepted
        if len(raw) < OFFLOAD_BODY_BYTES:
            # Inflated here, under the cap: the size compared next is then what is parsed and
            # scanned (a few KiB of gzip may hold a MiB of crafted text), and a body this small
            # inflates at over a GB/s.
            raw = decode(raw, coding, limit=limits.max_body_bytes, too_large=BodyTooLarge)
            coding = "identity"
    work = partial(
        _work_on_json,
        raw,
        coding,
        limits,
        route,
        query,
        flow.path_params,
        partner.hash_key,
        runtime.scanner,
    )
    if raw is not None and len(raw) >= OFFLOAD_BODY_BYTES:
        # Cancelled (the server stopping), the share ends here: a body still waiting for a
        # thread is dropped, and what a thread still makes of one is never looked at.
        done = await _in_body_worker(runtime, work)
    else:
        done = work()
    _take_json_work(flow, runtime, done)


# From this many bytes of JSON on, a body is parsed, filtered, scanned and written out again in
# one of the runtime's `body_workers`, not in the event loop. Measured in process, on the
# benchmark's loan application grown by more of what is stripped or by office prose in a field
# the scanner reads: 16 KiB takes 0.14 to 0.9 ms, and the hand-off to a thread and back 0.03 ms
# (0.1 ms at the 99th percentile), which a body this big hardly notices; the 1.4 KB services
# send takes 0.04 to 0.06 ms, which the hand-off would double. Crafted text scans at up to 4 to
# 6 µs a byte: a body under this size holds up the loop 65 to 100 ms at most, where one under
# 64 KiB could stall every other request for a quarter of a second or more. A partner's answer
# of this size or more is parsed, filtered and written out there too: measured the same way, on
# a credit report grown by accounts with kept and stripped fields, 16 KiB takes 0.3 ms (1 ms
# all kept, in small records), 1 MiB 22 ms (93 ms) and 10 MiB, the default cap, 0.33 s (1 s).
OFFLOAD_BODY_BYTES: Final = 16 * 1024

_T = TypeVar("_T")


async def _in_body_worker(runtime: Runtime, work: Callable[[], _T]) -> _T:
    """`work` done in one of the runtime's `body_workers`, the loop free for others meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(runtime.body_workers, work)


@dataclass(slots=True)
class _JsonWork:
    """What the JSON steps made of a body, each step's result up to the one that raised."""

    named_ids: list[str] | None = None
    result: FilterResult | None = None
    body: bytes | None = None
    subjects: list[Subject] | None = None
    born_outside: date | None = None
    error: Exception | None = None


def _work_on_json(
    raw: bytes | None,
    coding: str,
    limits: LimitsSettings,
    route: RoutePolicy,
    query: Mapping[str, str],
    params: Mapping[str, str],
    hash_key: bytes,
    scanner: TextScanner | None,
) -> _JsonWork:
    """`read_payload`'s JSON steps, in the loop or, for a big body, in a worker thread: so only
    what it is given, all of it immutable or its own (the plan, the scanner and the transforms
    keep no state but thread-safe caches), and no flow. A share without a body (`raw` None) is
    an empty document, and sends none."""
    done = _JsonWork()
    try:
        doc: dict[str, JSONValue] = {}
        if raw is not None:
            raw = decode(raw, coding, limit=limits.max_body_bytes, too_large=BodyTooLarge)
            doc = parse_json(raw, max_depth=limits.max_json_depth)
        done.named_ids = named_subject_ids(route, doc, query, params)
        plan = route.plan
        if plan is None:
            raise RuntimeError("a JSON body needs its route's plan")
        done.result = result = plan.apply(doc, query, hash_key=hash_key, scanner=scanner)
        if raw is not None:
            done.body = dump_json(result.document)
        done.subjects = subjects_of(route, doc, query, params)
        done.born_outside = born_outside_records(route, doc, query)
    except Exception as exc:  # raised in the loop, once the flow holds what came before it
        done.error = exc
    return done


def _take_json_work(flow: Flow, runtime: Runtime, done: _JsonWork) -> None:
    """The flow changed by what `_work_on_json` made, in the order its steps ran, and a refusal
    raised where it arose."""
    partner, route = flow.partner, flow.route
    if partner is None or route is None:
        raise RuntimeError("_take_json_work runs after authorize")
    # Before anything in the body can refuse the share: a batch refused for one record is
    # still about the people its other records name.
    if done.named_ids is not None:
        note_subjects(flow, runtime, done.named_ids)
    if (result := done.result) is not None:
        flow.result = result
        flow.query = result.query
    if done.body is not None:
        flow.body = done.body
        flow.content_type = "application/json"
    if (error := done.error) is not None:
        # Raised as it is, the error's traceback would hold the worker's frame and this one,
        # which hold `done` and `error`, which hold the error: a cycle keeping the body, raw
        # and parsed, until the collector runs, which `heap.THRESHOLDS` makes rare. Every
        # refusal of a big body would leave one.
        done.error = None
        try:
            raise error
        finally:
            del error
    if result is None or done.subjects is None:
        raise RuntimeError("the JSON steps ended before their last")
    personal = not partner.personal_categories.isdisjoint(result.categories_sent)
    _count_subjects(flow, runtime, route, done.subjects, done.born_outside, personal=personal)


_NOTHING_ALLOWED: Final = compile_plan([])
# How a record names an upload's body, which is sent whole and never read.
WHOLE_BODY: Final = "**"


def upload_result(
    partner: PartnerPolicy, query: Mapping[str, str], *, sent: bool, trace: bool = False
) -> FilterResult:
    """What an upload shares: nothing of the query (what stayed behind is recorded as
    stripped), and, when it has a body, the whole of it, unread: it may hold any personal
    category of the contract (as consent already assumes)."""
    result = _NOTHING_ALLOWED.apply({}, query, hash_key=partner.hash_key, trace=trace)
    if not sent:
        return result
    return replace(
        result,
        fields_sent=(WHOLE_BODY,),
        categories_sent=tuple(sorted(partner.personal_categories)),
    )


def judge_body_type(request: web.Request, route: RoutePolicy) -> None:
    """What the head says of a body, judged as it is once the body is read: `415` for a type or
    a content coding the route does not take."""
    if route.plan is None:
        _upload_type(request, route)
    else:
        json_body_coding(request)


def json_body_coding(request: web.Request) -> str:
    """The content coding of a JSON body, once its type is checked."""
    check_json_content_type(single_header(request, "Content-Type"))
    return content_coding(single_header(request, "Content-Encoding"))


def parse_json_body(
    request: web.Request, raw: bytes, limits: LimitsSettings
) -> dict[str, JSONValue]:
    """A JSON body read under the cap: its type checked, its content coding undone under the
    same cap, then parsed strictly."""
    coding = json_body_coding(request)
    raw = decode(raw, coding, limit=limits.max_body_bytes, too_large=BodyTooLarge)
    return parse_json(raw, max_depth=limits.max_json_depth)


def _upload_type(request: web.Request, route: RoutePolicy) -> str:
    header = single_header(request, "Content-Type")
    if header is None:
        raise UnsupportedMediaType("the upload has no Content-Type")
    media_type, params = parse_media_type(header)
    if media_type not in route.content_types:
        raise UnsupportedMediaType(
            "the upload's media type is not one of the route's content types: "
            + ", ".join(sorted(route.content_types))
        )
    if content_coding(single_header(request, "Content-Encoding")) != "identity":
        raise UnsupportedMediaType("upload bodies must not carry a content encoding")
    # Only the media type and a known charset travel on: a parameter such as a file name would
    # carry data no rule of the contract covers.
    charset = params.get("charset", "").lower()
    return f"{media_type}; charset={charset}" if charset in _CHARSETS else media_type


def _count_subjects(
    flow: Flow,
    runtime: Runtime,
    route: RoutePolicy,
    subjects: list[Subject],
    born_outside: date | None,
    *,
    personal: bool,
) -> None:
    """The share's data subjects, and how many records it counts against the daily cap:
    one a subject, and one for a share that sends personal data (or an opaque upload) about
    no subject it names, which would otherwise pass any cap for free."""
    flow.subjects = subjects
    flow.born_outside = born_outside
    # A route naming no subject has one record about nobody in particular: it counts only
    # when it carries personal data.
    named = route.subject is not None or route.records is not None
    flow.records = (len(subjects) if named else 0) or int(personal)
    note_subjects(flow, runtime, [s.id for s in subjects if s.id is not None])


def note_subjects(flow: Flow, runtime: Runtime, subject_ids: Iterable[str]) -> None:
    """The references the share's record is found by, one per subject, in the order named."""
    ids = tuple(subject_ids)
    # Noted as soon as the path, the body and then the subjects are read: mostly the same
    # people, each keyed once.
    if ids != flow.noted_ids:
        key = runtime.subject_key
        flow.subject_refs = tuple(dict.fromkeys(subject_ref(key, s) for s in ids))
        flow.noted_ids = ids


# --- forwarding -------------------------------------------------------------------------------


def upstream_request(flow: Flow, runtime: Runtime) -> UpstreamRequest:
    partner, route, target = flow.partner, flow.route, flow.target
    if partner is None or route is None or target is None:
        raise RuntimeError("upstream_request runs after every check")
    url = partner.base_url + "/" + "/".join(target.segments)
    if flow.query:
        url += "?" + "&".join(
            f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in flow.query.items()
        )
    headers = list(flow.passed_headers)
    if flow.content_type is not None:
        headers.append(("Content-Type", flow.content_type))
    headers.extend(partner.upstream_headers)
    headers.append(("X-Share-Id", flow.share_id))
    headers.append(("X-Share-Purpose", flow.purpose or ""))
    return UpstreamRequest(
        method=flow.method,
        url=url,
        headers=tuple(headers),
        body=flow.body,
        timeout_s=partner.timeout_s,
        max_response_bytes=runtime.settings.limits.max_response_bytes,
        reuse_connection=partner.reuse_connections,
        tls=partner.tls,
        before_send=partial(
            runtime.terms.take_turn,
            partner.id,
            partner.caps.rate_per_s,
            flow.share_id,
        ),
    )


def filter_response(
    flow: Flow, status: int, headers: Mapping[str, str], body: bytes, runtime: Runtime
) -> bytes:
    """What the caller gets of the partner's answer, filtered in the event loop."""
    filtering = _answer_filter(flow, status, headers, body, runtime)
    return filtering if isinstance(filtering, bytes) else filtering()


async def filter_big_response(
    flow: Flow, status: int, headers: Mapping[str, str], body: bytes, runtime: Runtime
) -> bytes:
    """`filter_response` for an answer of `OFFLOAD_BODY_BYTES` or more: the parse, the filter
    and the JSON written out in a worker thread."""
    filtering = _answer_filter(flow, status, headers, body, runtime)
    if isinstance(filtering, bytes):
        return filtering
    # The threads big request bodies are worked on in: they bound how much of the interpreter
    # big bodies take from the loop, whichever way they go, where a pool of the answers' own
    # would have four threads taking turns with the loop. An answer may wait behind a request
    # body's scan; it holds up nothing meanwhile, and the share it answers is already made.
    return await _in_body_worker(runtime, filtering)


def _answer_filter(
    flow: Flow, status: int, headers: Mapping[str, str], body: bytes, runtime: Runtime
) -> bytes | Callable[[], bytes]:
    """The answer as the caller gets it when that needs no parsing, else the work that filters
    it. The media type is judged here, in the loop: its check keeps the types it accepted."""
    route, partner = flow.route, flow.partner
    if route is None or partner is None or route.response_plan is None:
        return body
    if not body:
        return body  # an empty answer (204, 202, ...) holds nothing to filter
    try:
        check_json_content_type(headers.get("Content-Type"))
    except GatewayError:
        return _unfilterable(status)
    return partial(
        _filter_json_answer,
        body,
        status,
        route.response_plan,
        partner.hash_key,
        runtime.settings.limits.max_json_depth,
    )


def _filter_json_answer(
    body: bytes, status: int, plan: FilterPlan, hash_key: bytes, max_depth: int
) -> bytes:
    """Only what it is given, all of it immutable: it may run in a worker thread."""
    try:
        doc = parse_json(body, max_depth=max_depth)
    except GatewayError:
        return _unfilterable(status)
    return dump_json(plan.apply(doc, {}, hash_key=hash_key).document)


def _unfilterable(status: int) -> bytes:
    """A success the route cannot filter is the partner's fault, and no answer to pass on."""
    if 200 <= status < 300:
        raise UpstreamError("the partner's answer is not JSON the route can filter") from None
    return b""  # an error answer the gateway cannot filter is passed on without its body


def response_headers(given: MultiMapping[str], body: bytes, *, filtered: bool) -> dict[str, str]:
    """The partner's headers the caller may see, each only in its own grammar: free text in them
    would pass what `response.fields` keeps back."""
    headers: dict[str, str] = {}
    for name in RESPONSE_HEADERS:
        values = given.getall(name, ())
        if not values or (filtered and name in UNFILTERED_ONLY):
            continue
        value = values[0].strip(" \t")
        if name == "Cache-Control":
            # A list: its lines are one list (RFC 9110 5.3). The first line alone could drop
            # the `no-store` or `private` of the next, and make a share's answer cacheable.
            value = _cache_directives(", ".join(values))
        elif any(other.strip(" \t") != value for other in values[1:]):
            # Two values where one belongs: which one the caller would follow is anyone's guess.
            value = "application/json" if name == "Content-Type" and filtered and body else ""
        elif name == "Retry-After":
            if not _RETRY_AFTER.fullmatch(value):
                continue
        elif name == "Content-Type" and filtered:
            if not body:
                continue  # an empty answer, or one dropped: no type, and its own need not parse
            # The body is the gateway's own JSON: a problem report stays one, any other type is
            # JSON; a vendor subtype is free text (`application/wang.138…+json`). The type of a
            # body kept was parsed by `_answer_filter`.
            kind = parse_media_type(value)[0]
            value = kind if kind in _PLAIN_JSON_TYPES else "application/json"
        elif not _VISIBLE_ASCII.fullmatch(value):
            # Passed on as written, so only in visible ASCII. aiohttp writes a value as UTF-8
            # and leaves out what is not (a byte the partner sent that is not UTF-8): `"v1\xff"`
            # and `"v1\xfe"` would both reach the caller as the ETag `"v1"`, and without its C
            # extensions the whole answer fails, after the share was recorded delivered.
            continue
        if value:
            headers[name] = value
    return headers


# Seconds, or an HTTP date in any of its three forms (RFC 9110 5.6.7: IMF-fixdate, the
# obsolete RFC 850 and asctime forms, which recipients must accept).
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_CLOCK = r"[0-9]{2}:[0-9]{2}:[0-9]{2}"
_RETRY_AFTER = re.compile(
    rf"[0-9]{{1,10}}"
    rf"|{_DAY}, [0-9]{{2}} {_MONTH} [0-9]{{4}} {_CLOCK} GMT"
    rf"|(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rf"[0-9]{{2}}-{_MONTH}-[0-9]{{2}} {_CLOCK} GMT"
    rf"|{_DAY} {_MONTH} [ 0-9][0-9] {_CLOCK} [0-9]{{4}}"
)
# Cache-Control directives passed on (RFC 9111 5.2.2, RFC 8246, RFC 5861); numbers only.
_CACHE_FLAGS = frozenset(
    {
        "no-store",
        "no-cache",
        "private",
        "public",
        "must-revalidate",
        "proxy-revalidate",
        "no-transform",
        "immutable",
        "must-understand",
    }
)
_CACHE_SECONDS = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_PLAIN_JSON_TYPES = frozenset({"application/json", "application/problem+json"})
# Header field text without obs-text (RFC 9110 5.5): tabs, spaces and visible ASCII.
_VISIBLE_ASCII = re.compile(r"[\t\x20-\x7e]*")
# As many digits as `Retry-After`'s seconds: a longer number (a phone number) is no duration.
_SECONDS = re.compile("[0-9]{1,10}")


def _cache_directives(value: str) -> str:
    """The directives, normalised; `no-store` when any is not one of the known ones: dropping it
    alone could make a share's answer more cacheable (`public, max-age="0"` -> `public`)."""
    kept = []
    for directive in value.split(","):
        name, eq, argument = directive.strip(" \t").partition("=")
        name = name.lower()
        if len(argument) > 2 and argument[0] == argument[-1] == '"':
            argument = argument[1:-1]  # a quoted number, which recipients accept (RFC 9111 5.2)
        if not eq and name in _CACHE_FLAGS:
            kept.append(name)
        elif eq and name in _CACHE_SECONDS and _SECONDS.fullmatch(argument):
            kept.append(f"{name}={argument}")
        elif directive.strip(" \t"):
            return "no-store"
    return ", ".join(kept)


# --- the handler ------------------------------------------------------------------------------

# The longest a share may wait for its record's commit and still go out. Past it (a disk that
# stalled an fsync, say) it is not sent: a restart finds the shares still inside a rate's window
# by when they were decided, and one that went out later than this plus its contract's
# `timeout_s` would be missed.
MAX_RECORD_WAIT_S: Final = 30.0


async def _record(runtime: Runtime, record: ShareRecord) -> None:
    try:
        await runtime.share_log.record(record)
    except GatewayError:
        # A refusal shares nothing, so it is still answered; the missing record is loud.
        log.error("share_record_failed", share_id=record.share_id, reason=record.reason)


def _record_outcome(runtime: Runtime, outcome: ShareOutcome) -> None:
    # Handed to the share log's writer, which owns it: the caller's answer does not wait for
    # the disk, and a crash before the write leaves the share `unknown`, never unrecorded.
    try:
        runtime.share_log.submit_outcome(outcome)
    except GatewayError:
        # The share itself is recorded and done: the caller still gets the partner's answer.
        log.error("share_outcome_failed", share_id=outcome.share_id, outcome=outcome.outcome)


def _count(flow: Flow, decision: str, reason: str) -> None:
    partner = flow.partner.id if flow.partner else "-"
    metrics.count_decision(partner, decision, reason)
    if flow.result is not None and flow.result.stripped_count:
        metrics.count_stripped(partner, flow.result.stripped_count)
    if decision == "shared" and (redacted := flow.redactions()):
        metrics.count_redactions(partner, redacted)


async def handle_share(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    flow = Flow(share_id=next(_SHARE_IDS), method=request.method, policy=runtime.policy)
    # Refused before any other work, and recorded like every other refusal.
    if runtime.shares_in_progress >= runtime.settings.limits.max_pending_requests:
        error = Overloaded(
            f"{runtime.settings.limits.max_pending_requests} shares are in progress, "
            "the most the gateway takes at once",
            headers={"Retry-After": "1"},
        )
        await _record(runtime, flow.record("denied", error.code))
        _count(flow, "denied", error.code)
        return error_response(error, flow.share_id)
    runtime.shares_in_progress += 1
    try:
        return await _handle_admitted(flow, request, runtime)
    finally:
        runtime.shares_in_progress -= 1


async def _handle_admitted(
    flow: Flow, request: web.Request, runtime: Runtime
) -> web.StreamResponse:
    try:
        await decide(flow, request, runtime)
    except GatewayError as error:
        await _record(runtime, flow.record("denied", error.code))
        _count(flow, "denied", error.code)
        return error_response(error, flow.share_id)
    except Exception:
        # A fault of the gateway itself: nothing is forwarded, and the record says so.
        log.exception("share_failed", share_id=flow.share_id)
        await _record(runtime, flow.record("error", "internal_error"))
        _count(flow, "error", "internal_error")
        return error_response(
            GatewayError("the gateway failed to process the request"), flow.share_id
        )
    # No share without a record: if it cannot be written, ShareLogUnavailable answers 503.
    committing = time.monotonic()
    try:
        await runtime.share_log.record(flow.record("shared", "shared"))
    except GatewayError as error:
        log.error("share_record_failed", share_id=flow.share_id, reason="shared")
        _count(flow, "error", error.code)
        await runtime.terms.give_back(flow.volume_taken)  # nothing went out: it counts nothing
        return error_response(error, flow.share_id)
    waited = time.monotonic() - committing
    if waited > MAX_RECORD_WAIT_S:
        log.error("share_record_late", share_id=flow.share_id, waited_s=round(waited, 3))
        _record_outcome(runtime, ShareOutcome(flow.share_id, "error", None, 0, 0.0))
        _count(flow, "error", ShareLogUnavailable.code)
        metrics.count_outcome(flow.partner.id if flow.partner else "-", "error")
        await runtime.terms.give_back(flow.volume_taken)
        late = ShareLogUnavailable(
            f"the share log took over {MAX_RECORD_WAIT_S:g} s to record the share; nothing was sent"
        )
        return error_response(late, flow.share_id)
    _count(flow, "shared", "shared")
    return await forward(flow, runtime)


async def decide(flow: Flow, request: web.Request, runtime: Runtime) -> None:
    """Every check of SPEC 4, in its order; the first failure raises the answer."""
    resolve_partner(flow, request, runtime)
    await authenticate(flow, request, runtime)
    authorize(flow, request, runtime)
    check_contract(flow, datetime.now(flow.policy.zone))
    pass_through_headers(flow, request, runtime)
    await read_payload(flow, request, runtime)
    # The last wait (a consent token's key may have to be fetched) comes before the share's
    # instant is taken: the contract's validity, a withdrawal, the day the caps count and the
    # record's time are then all judged at that one instant, after the body is in (reading it
    # may take `body_read_timeout_s`).
    partner = flow.partner
    if partner is not None and partner.may_need_consent:
        flow.consent_token = await runtime.terms.read_consent_token(request)
    else:
        flow.consent_token = NO_CONSENT_TOKEN  # no consent is ever asked of this partner
    now = datetime.now(flow.policy.zone)
    if partner is not None:
        check_contract_at(partner, now)
    await runtime.terms.check(flow, request, now)
    flow.decided_at = now


_CREDENTIALS_REFUSED = frozenset({401, 407})


async def _upstream_failed(
    flow: Flow, runtime: Runtime, partner: str, failure: UpstreamFailure
) -> web.StreamResponse:
    _record_outcome(
        runtime,
        ShareOutcome(flow.share_id, failure.failure, failure.status, 0, failure.latency_ms),
    )
    if failure.failure == "error":
        # Nothing reached the partner: an outage the callers retry through must not use up
        # the day's cap (a restart leaves such shares out of the count too).
        await runtime.terms.give_back(flow.volume_taken)
    metrics.count_outcome(partner, failure.failure)
    if failure.failure == "timeout":
        # The partner had the share and took at least this long: left out, the slowest
        # answers would vanish from the histogram just when they matter. An error is no
        # answer time (a refused connection fails in microseconds).
        metrics.observe_upstream_latency(partner, failure.latency_ms / 1000)
    # The message is the gateway's own (never the partner's bytes nor the request): the one
    # place an operator reads why, a certificate that does not verify against a network fault.
    log.warning(
        "upstream_failed",
        share_id=flow.share_id,
        partner=partner,
        reason=failure.failure,
        message=failure.error.message,
    )
    return error_response(failure.error, flow.share_id)


async def forward(flow: Flow, runtime: Runtime) -> web.StreamResponse:
    """Send the filtered share, record what became of it, and answer with the filtered reply."""
    partner = flow.partner.id if flow.partner else "-"
    started = time.perf_counter()
    sending = False
    try:
        upstream = upstream_request(flow, runtime)
        sending = True
        response = await runtime.upstream.send(upstream)
    except UpstreamFailure as failure:
        return await _upstream_failed(flow, runtime, partner, failure)
    except Exception as exc:
        # A fault the client did not classify. Once the send began, some of the request may
        # have been written: the partner may have the share, and the outcome says so.
        # The exception's message may quote the request: only its kind and place are logged.
        log.error(
            "upstream_send_failed",
            share_id=flow.share_id,
            partner=partner,
            error=type(exc).__name__,
            error_at=error_location(exc),
        )
        unclassified = UpstreamFailure(
            UpstreamError("the share could not be sent to the partner"),
            "possibly_delivered" if sending else "error",
            (time.perf_counter() - started) * 1000,
        )
        return await _upstream_failed(flow, runtime, partner, unclassified)
    metrics.count_outcome(partner, "delivered")
    metrics.observe_upstream_latency(partner, response.latency_ms / 1000)
    outcome = ShareOutcome(
        flow.share_id, "delivered", response.status, len(response.body), response.latency_ms
    )
    if response.status in _CREDENTIALS_REFUSED:
        # The partner refused the gateway's own credentials (`upstream.auth`), not the
        # caller's token: a 401 passed on would have the caller renew its token and send the
        # same personal data again, to no avail.
        _record_outcome(runtime, outcome)
        return error_response(
            UpstreamError(f"the partner refused the gateway's credentials ({response.status})"),
            flow.share_id,
        )
    filtered = flow.route is not None and flow.route.response_plan is not None
    try:
        if filtered and len(response.body) >= OFFLOAD_BODY_BYTES:
            body = await filter_big_response(
                flow, response.status, response.headers, response.body, runtime
            )
        else:
            body = filter_response(flow, response.status, response.headers, response.body, runtime)
        headers = response_headers(response.headers, body, filtered=filtered)
    except asyncio.CancelledError:
        # The server stopping while the answer was in a thread: the partner has the share all
        # the same, and the caller is gone.
        _record_outcome(runtime, outcome)
        raise
    except GatewayError as error:
        _record_outcome(runtime, outcome)
        return error_response(error, flow.share_id)
    except Exception:
        # A fault in the gateway itself: the partner has the share, so its outcome is still
        # recorded, and the caller gets nothing of an answer that could not be filtered.
        _record_outcome(runtime, outcome)
        log.exception("response_filter_failed", share_id=flow.share_id)
        return error_response(
            UpstreamError("the partner's answer could not be filtered"), flow.share_id
        )
    _record_outcome(runtime, outcome)
    headers["X-Share-Id"] = flow.share_id
    headers["Server"] = SERVER_NAME
    return web.Response(status=response.status, body=body, headers=headers)
