"""The compiled policy: validated contracts turned into immutable, per-request-ready plans."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Final
from zoneinfo import ZoneInfo

from gateway.caps import Caps, share_of, shared_caps
from gateway.contract import Contract, Route, to_transform
from gateway.contractset import ContractSet, ContractWarning, LoadedContract
from gateway.fieldfilter import AllowRule, FilterPlan, compile_plan
from gateway.keys import partner_hash_key
from gateway.partnertls import PartnerTls
from gateway.routing import RouteTable, Template

# Request headers a partner may receive besides those a route names. Everything else — the
# caller's credentials, cookies, forwarding headers, the client's address — stays behind.
BASE_REQUEST_HEADERS = frozenset({"accept", "user-agent"})
ID_NUMBER_CATEGORY = "identity.id_number"
BIRTH_DATE_CATEGORY = "identity.birth_date"


class PolicyError(Exception):
    """The contract set cannot be put in service (e.g. an upstream secret is not set)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    method: str
    template: Template
    label: str  # "POST /v1/assess": how records and errors name the route
    purpose: str
    plan: FilterPlan | None  # None: a raw-body route (uploads), bytes pass through unchanged
    content_types: frozenset[str]
    headers: frozenset[str]  # lower-case request headers this route lets through
    header_order: tuple[str, ...]  # `headers` sorted: the order they are passed on in
    response_plan: FilterPlan | None
    subject: str | None
    records: str | None
    birth_date: str | None  # declared: in the body, the query (`query.`) or the path (`path.`)
    # Fields, read where the filter reads them: in the body, or the query (`query.`), never in
    # the request's path (`path.dob` is a body key named `path`). Where minors matter to the
    # contract, every `identity.birth_date` field the route sends; and every field that may
    # carry a resident ID (and so a birth date).
    birth_date_fields: tuple[str, ...]
    id_number_paths: tuple[str, ...]
    # What a record may be for anything of it to go ("object", "array", "value"), where the
    # route names fields in its `records`; empty where any record goes (a whole subtree).
    record_shapes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PartnerPolicy:
    id: str
    loaded: LoadedContract
    base_url: str  # without a trailing slash
    timeout_s: float
    reuse_connections: bool  # false: each share on a connection of its own
    tls: PartnerTls | None  # the partner's own CA and our client certificate, built at load
    upstream_headers: tuple[tuple[str, str], ...]  # credentials and the agreement's terms
    purposes: frozenset[str]
    routes: RouteTable[RoutePolicy]
    hash_key: bytes
    active_from: datetime
    active_until: datetime  # exclusive: midnight after `expires` in the gateway's zone
    active: bool  # status == active
    third_party: bool  # its own handler (PIPL art. 23): every share needs the subject's consent
    sensitive_consent: bool  # sensitive categories need the subject's explicit consent
    sensitive_categories: frozenset[str]
    personal_categories: frozenset[str]  # of `categories` and the fields': not business data
    minors_denied: bool
    location: str
    cross_border_mechanism: str | None
    # The agreed rate and daily caps, and the part of them this gateway enforces (`cap_shares`).
    caps: Caps

    @property
    def contract(self) -> Contract:
        return self.loaded.contract

    def sensitive(self, category: str) -> bool:
        return category in self.sensitive_categories

    @property
    def may_need_consent(self) -> bool:
        """Whether any share may need a subject's consent: to a third party, or where sensitive
        data needs it (a child's data counts as sensitive)."""
        return self.third_party or self.sensitive_consent

    def in_force(self, now: datetime) -> bool:
        return self.active and self.active_from <= now < self.active_until


@dataclass(frozen=True, slots=True)
class Policy:
    partners: Mapping[str, PartnerPolicy]
    zone: ZoneInfo
    warnings: tuple[ContractWarning, ...] = ()  # the contract set's, as of its load


def _window(effective: date, expires: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(effective, time.min, zone)
    # Through the whole of `expires`; 9999-12-31 (no end in sight) has no day after it.
    end = (
        datetime.combine(expires + timedelta(days=1), time.min, zone)
        if expires < date.max
        else datetime.max.replace(tzinfo=zone)
    )
    return start, end


_UNSAFE_SECRET: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _auth_headers(
    contract: Contract, environ: Mapping[str, str], problems: list[str], require: bool
) -> list[tuple[str, str]]:
    auth = contract.upstream.auth
    where = f"{contract.partner.id}: upstream.auth"

    def secret(name: str) -> str:
        value = environ.get(name, "")
        if not value and require:
            problems.append(f"{where}: environment variable {name} is not set")
        elif _UNSAFE_SECRET.search(value):
            # Refused here, once, rather than failing every share at the partner's door (a
            # line break would split the header it goes into). The value is never shown.
            problems.append(f"{where}: environment variable {name} holds a control character")
        return value

    match auth.type:
        case "bearer":
            return [("Authorization", f"Bearer {secret(auth.token_env)}")]
        case "basic":
            pair = f"{auth.username}:{secret(auth.password_env)}".encode()
            return [("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))]
        case "header":
            return [(auth.name, secret(auth.value_env))]
        case _:
            return []


def _compile_route(route: Route, gateway_set: frozenset[str], minors_matter: bool) -> RoutePolicy:
    plan = None
    if route.fields is not None:
        plan = compile_plan(
            [
                AllowRule(
                    path=f.path,
                    category=f.category,
                    transform=to_transform(f.transform) if f.transform is not None else None,
                )
                for f in route.fields
            ]
        )
    response_plan = None
    if route.response is not None:
        response_plan = compile_plan(
            [AllowRule(path=f.path, category=None) for f in route.response.fields]
        )
    headers = BASE_REQUEST_HEADERS | {h.lower() for h in route.headers}
    return RoutePolicy(
        method=route.method,
        template=Template.parse(route.path),
        label=f"{route.method} {route.path}",
        purpose=route.purpose,
        plan=plan,
        content_types=frozenset(route.content_types or ()),
        headers=headers,
        # A name the gateway sets itself (Content-Type, the partner's credentials) is sent once,
        # with the gateway's value.
        header_order=tuple(sorted(headers - gateway_set)),
        response_plan=response_plan,
        subject=route.subject,
        records=route.records,
        birth_date=route.birth_date,
        birth_date_fields=_birth_date_fields(route, minors_matter),
        id_number_paths=tuple(
            f.path for f in route.fields or () if f.category == ID_NUMBER_CATEGORY
        ),
        record_shapes=_record_shapes(route),
    )


def _record_shapes(route: Route) -> frozenset[str]:
    """What each record must be for the paths the route names in it to find anything: an object
    (`applicants[].name`), an array (`batch[][]`), a value sent as it is (`names[]`)."""
    records = route.records
    if records is None:
        return frozenset()
    shapes: set[str] = set()
    for path in (route.subject, route.birth_date, *(f.path for f in route.fields or ())):
        if path is None:
            continue
        if path == records:
            shapes.add("value")
        elif path == records + ".**":
            return frozenset()  # the whole of every record, whatever it is
        elif path.startswith(records + "."):
            shapes.add("object")
        elif path.startswith(records + "[]"):
            shapes.add("array")
    return frozenset(shapes)


def _birth_date_fields(route: Route, minors_matter: bool) -> tuple[str, ...]:
    if not minors_matter:
        return ()
    # A child's birth date in a field the route does not declare as `birth_date` still tells a
    # child (a subtree is left to its ID numbers: a date is one value).
    return tuple(
        dict.fromkeys(
            f.path
            for f in route.fields or ()
            if f.category == BIRTH_DATE_CATEGORY and not f.path.endswith("**")
        )
    )


def compile_policy(
    contracts: ContractSet,
    *,
    zone: ZoneInfo,
    master_key: bytes,
    environ: Mapping[str, str] | None = None,
    require_secrets: bool = True,
    cap_shares: Mapping[str, Fraction] | None = None,
) -> Policy:
    """Compile every contract once; a request afterwards only looks things up.

    `cap_shares`: this gateway's part of each partner's agreed caps (settings' `cap_shares`).
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    partners: dict[str, PartnerPolicy] = {}
    for partner_id, loaded in contracts.contracts.items():
        contract = loaded.contract
        terms = contract.terms
        named = {
            *contract.categories,
            *(f.category for r in contract.routes for f in r.fields or ()),
        }
        headers = _auth_headers(contract, environ, problems, require_secrets)
        headers += [
            ("X-Data-Retention-Days", str(terms.retention_days)),
            ("X-Data-Onward-Transfer", "allowed" if terms.onward_transfer else "prohibited"),
        ]
        gateway_set = frozenset({"content-type", *(name.lower() for name, _ in headers)})
        # Under `minors: deny`, and where a child's data needs consent as sensitive data does.
        minors_matter = terms.minors == "deny" or terms.sensitive.consent_required
        routes = [_compile_route(route, gateway_set, minors_matter) for route in contract.routes]
        start, end = _window(contract.contract.effective, contract.contract.expires, zone)
        # A share too small to enforce never gets here: the contract set's load refused it.
        caps = shared_caps(terms, share_of(cap_shares or {}, partner_id))
        partners[partner_id] = PartnerPolicy(
            id=partner_id,
            loaded=loaded,
            base_url=contract.upstream.base_url.rstrip("/"),
            timeout_s=contract.upstream.timeout_s,
            reuse_connections=contract.upstream.reuse_connections,
            tls=loaded.tls,
            upstream_headers=tuple(headers),
            purposes=frozenset(contract.purposes),
            routes=RouteTable.build((r.method, r.template, r) for r in routes),
            hash_key=partner_hash_key(master_key, partner_id),
            active_from=start,
            active_until=end,
            active=contract.contract.status == "active",
            third_party=contract.partner.relationship == "third_party",
            sensitive_consent=terms.sensitive.consent_required,
            sensitive_categories=frozenset(filter(contracts.taxonomy.sensitive, named)),
            personal_categories=frozenset(filter(contracts.taxonomy.personal, named)),
            minors_denied=terms.minors == "deny",
            location=contract.upstream.location,
            cross_border_mechanism=terms.cross_border.mechanism
            if terms.cross_border.allowed
            else None,
            caps=caps,
        )
    if problems:
        raise PolicyError(problems)
    return Policy(partners=partners, zone=zone, warnings=contracts.warnings)
