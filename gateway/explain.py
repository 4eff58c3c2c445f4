"""The dry run behind `contracts explain`: what a partner would receive, field by field, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aiohttp import web_protocol
from aiohttp.http_parser import HttpRequestParserPy

from gateway.errors import (
    BodyTooLarge,
    MalformedBody,
    MalformedRequest,
    PurposeDenied,
    RouteDenied,
)
from gateway.fieldfilter import FieldDecision, FilterResult, TextScanner
from gateway.jsonbody import JSONValue, parse_json
from gateway.pii import scan
from gateway.pipeline import (
    BODYLESS_METHODS,
    check_contract_at,
    refuse_identifiers_in_path,
    upload_result,
)
from gateway.policy import PartnerPolicy, RoutePolicy
from gateway.routing import parse_target
from gateway.settings import LimitsSettings
from gateway.terms import (
    born_outside_records,
    consent_for_child_outside,
    deny_child_outside,
    deny_minors,
    minors_among,
    needing_consent,
    subjects_of,
)

# The gateway's own limits, unless the caller passes those of its settings.
_LIMITS: Final = LimitsSettings()


def _line_measured(method: str, target: str) -> tuple[str, int]:
    """What the server's HTTP parser holds to `limits.max_line_size` in a request line, and its
    length in bytes.

    aiohttp's C parser measures the target alone, its Python one (no compiled extension, or
    `AIOHTTP_NO_EXTENSIONS`) the whole line. The one the server would run here is asked: either
    answer for both would deny, or explain as shared, a request the gateway does otherwise.
    """
    what = "request target"
    # Looked up where the server's handler looks it up, each time: not exported for typing.
    if web_protocol.HttpRequestParser is HttpRequestParserPy:  # type: ignore[attr-defined]
        what, target = "request line", f"{method} {target} HTTP/1.1"
    # A byte of `--route` that is not UTF-8 comes as a lone surrogate: put back as that byte.
    return what, len(target.encode("utf-8", "surrogateescape"))


class RouteTextError(ValueError):
    """`--route` is no method and path: the command was called wrong, not a share refused."""


@dataclass(frozen=True, slots=True)
class Explanation:
    route: RoutePolicy
    result: FilterResult
    upload_bytes: int | None = None  # an upload's body, sent whole and unread: its size
    bodyless: bool = False  # a GET or DELETE: the partner gets no body, not an empty document

    @property
    def document(self) -> dict[str, JSONValue]:
        return self.result.document

    @property
    def decisions(self) -> tuple[FieldDecision, ...]:
        return self.result.trace


def explain(
    partner: PartnerPolicy,
    route_text: str,
    purpose: str,
    body: bytes | None,
    *,
    now: datetime,
    max_depth: int,
    max_body_bytes: int = _LIMITS.max_body_bytes,
    max_query_params: int = _LIMITS.max_query_params,
    max_line_size: int = _LIMITS.max_line_size,
    scanner: TextScanner | None = scan,
) -> Explanation:
    """Apply the partner's contract to a request as the gateway would; raise the denial if any.

    `scanner` is the free-text scan the gateway runs (the same one by default), so the body shown
    is the body the partner would receive, redactions included. Minors are judged (the body and
    the date decide), and so is whether consent could be shown at all; whether it is, and the
    rate and daily caps, depend on state outside the contract and are not evaluated.
    """
    method, _, target = route_text.strip().partition(" ")
    method = method.upper()
    if not target.startswith("/"):
        raise RouteTextError('--route must look like "POST /v1/assess"')
    path = f"/{partner.id}{target}"
    # The HTTP parser refuses a longer request line before any check of the gateway's runs.
    what, length = _line_measured(method, path)
    if length > max_line_size:
        raise MalformedRequest(
            f"the {what} is longer than {max_line_size} bytes (limits.max_line_size)"
        )
    parsed = parse_target(path, max_query_params=max_query_params)
    matches = partner.routes.match(method, parsed.segments)
    if not matches:
        raise RouteDenied(f"the contract declares no route {method} {target.partition('?')[0]}")
    route, params = next(((r, p) for r, p in matches if r.purpose == purpose), (None, {}))
    if route is None:
        raise PurposeDenied(f"no route {method} {target} for purpose {purpose!r}")
    refuse_identifiers_in_path(params, scanner)
    check_contract_at(partner, now)
    doc: dict[str, JSONValue] = {}
    if body is not None and len(body) > max_body_bytes:
        raise BodyTooLarge(f"the body exceeds {max_body_bytes} bytes")
    query = dict(parsed.query)
    if method in BODYLESS_METHODS:
        if body:  # whitespace too: the gateway refuses any body on these methods
            raise MalformedBody(f"a {method} share carries no body")
    elif route.plan is None:
        pass  # an upload: its body goes whole, unread
    elif body is not None and body.strip():
        doc = parse_json(body, max_depth=max_depth)
    else:
        raise MalformedBody("a body is required for this route")
    if route.plan is None:
        result = upload_result(partner, query, sent=bool(body), trace=True)
    else:
        result = route.plan.apply(
            doc, query, hash_key=partner.hash_key, scanner=scanner, trace=True
        )
    # The gateway refuses a share whose subject it cannot read, one whose consent could never
    # be shown (it names no subject), one about a child where the contract denies it, and a
    # child's data beside a batch where it needs consent: each depends on the body and the
    # date alone. In the gateway's order, so that the same refusal is named.
    today = now.date()
    subjects = subjects_of(route, doc, query, params)
    born_outside = born_outside_records(route, doc, query)  # read with the body, as there
    minors = minors_among(subjects, today)
    unread = route.plan is None and bool(body)
    needing_consent(partner, subjects, minors, result.categories_sent, unread=unread)
    consent_for_child_outside(partner, born_outside, today)
    deny_minors(partner, subjects, minors)
    deny_child_outside(partner, born_outside, today)
    if route.plan is None and body:
        return Explanation(route=route, result=result, upload_bytes=len(body))
    return Explanation(route=route, result=result, bodyless=method in BODYLESS_METHODS)
