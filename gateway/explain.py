"""The dry run behind `contracts explain`: what a partner would receive, field by field, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.errors import MalformedBody, MalformedRequest, PurposeDenied, RouteDenied
from gateway.fieldfilter import FieldDecision, FilterResult, TextScanner
from gateway.jsonbody import JSONValue, parse_json
from gateway.pii import scan
from gateway.pipeline import BODYLESS_METHODS, check_contract_at, refuse_identifiers_in_path
from gateway.policy import PartnerPolicy, RoutePolicy
from gateway.routing import parse_target
from gateway.terms import (
    born_outside_records,
    check_minors,
    consent_for_child_outside,
    deny_child_outside,
    subjects_of,
)


@dataclass(frozen=True, slots=True)
class Explanation:
    route: RoutePolicy
    result: FilterResult

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
    scanner: TextScanner | None = scan,
) -> Explanation:
    """Apply the partner's contract to a request as the gateway would; raise the denial if any.

    `scanner` is the free-text scan the gateway runs (the same one by default), so the body shown
    is the body the partner would receive, redactions included. Minors are judged (the body and
    the date decide); consent and the rate and daily caps depend on state outside the contract
    and are not evaluated.
    """
    method, _, target = route_text.strip().partition(" ")
    method = method.upper()
    if not target.startswith("/"):
        raise MalformedRequest('--route must look like "POST /v1/assess"')
    parsed = parse_target(f"/{partner.id}{target}", max_query_params=1000)
    matches = partner.routes.match(method, parsed.segments)
    if not matches:
        raise RouteDenied(f"the contract declares no route {method} {target.partition('?')[0]}")
    route, params = next(((r, p) for r, p in matches if r.purpose == purpose), (None, {}))
    if route is None:
        raise PurposeDenied(f"no route {method} {target} for purpose {purpose!r}")
    refuse_identifiers_in_path(params, scanner)
    check_contract_at(partner, now)
    if route.plan is None:
        raise MalformedRequest(
            f"{route.label} forwards the body unchanged (content types: "
            f"{', '.join(sorted(route.content_types)) or 'none'}); there are no fields to explain"
        )
    doc: dict[str, JSONValue] = {}
    has_body = body is not None and bool(body.strip())
    if method in BODYLESS_METHODS:
        if has_body:
            raise MalformedBody(f"a {method} share carries no body")
    elif body is not None and has_body:
        doc = parse_json(body, max_depth=max_depth)
    else:
        raise MalformedBody("a body is required for this route")
    query = dict(parsed.query)
    result = route.plan.apply(doc, query, hash_key=partner.hash_key, scanner=scanner, trace=True)
    # The gateway refuses a share whose subject it cannot read, one about a child where the
    # contract denies it, and a child's data beside a batch where it needs consent: each
    # depends on the body and the date alone.
    check_minors(partner, subjects_of(route, doc, query, params), now.date())
    born_outside = born_outside_records(route, doc, query)
    consent_for_child_outside(partner, born_outside, now.date())
    deny_child_outside(partner, born_outside, now.date())
    return Explanation(route=route, result=result)
