"""The contract set: every partner's contract loaded from a folder and checked, all at once."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from pydantic import ValidationError

from gateway.caps import EVERY_OTHER_PARTNER, shared_caps, too_small
from gateway.contract import (
    BasicAuth,
    BearerAuth,
    Contract,
    ContractInfo,
    FieldRule,
    HeaderAuth,
    Problem,
    ResponseField,
    Route,
    UpstreamAuth,
    file_problems,
    schema_problems,
    to_transform,
)
from gateway.origins import origin_of
from gateway.partnertls import (
    CA_PATH,
    CLIENT_CERT_PATH,
    PartnerTls,
    load_partner_tls,
    tls_notices,
    tls_problems,
    tls_warnings,
)
from gateway.routing import PATH_PREFIX, Template, path_placeholder
from gateway.settings import ENV_PREFIX, Settings
from gateway.taxonomy import Taxonomy, load_taxonomy
from gateway.yamlfile import YamlFileError, printable, read_yaml_file

__all__ = [
    "ContractSet",
    "ContractWarning",
    "LoadedContract",
    "Problem",
    "certificate_warnings",
    "contract_files",
    "contract_warnings",
    "dated_warnings",
    "effective_warning",
    "expiry_warning",
    "load_contract_set",
    "validate_contract",
]

# Methods whose requests carry no body through the gateway: only query parameters are fields.
BODYLESS_METHODS = frozenset({"GET", "DELETE"})


@dataclass(frozen=True, slots=True)
class LoadedContract:
    file: Path
    contract: Contract
    sha256: str  # of the file's bytes, as the share log records it
    # Built from `upstream.tls` and the files it names, read with the contract; None: no section.
    tls: PartnerTls | None = None


@dataclass(frozen=True, slots=True)
class ContractWarning:
    """Something to act on in a valid contract, located by its key path: the contract is used
    as agreed, but part of what the gateway promises will not hold for it."""

    file: str
    partner: str
    path: str
    message: str

    def __str__(self) -> str:
        return printable(f"{self.file}: warning: {self.path}: {self.message}")

    def as_json(self) -> dict[str, str]:
        return {"partner": self.partner, "path": self.path, "message": self.message}


@dataclass(frozen=True, slots=True)
class ContractSet:
    contracts: Mapping[str, LoadedContract]  # by partner id
    taxonomy: Taxonomy
    # As of the day the set was loaded; `contracts validate`, the start and reload log and the
    # admin API all show this one list.
    warnings: tuple[ContractWarning, ...] = ()


def contract_files(directory: Path) -> list[Path]:
    """The partner files of a folder: `*.yaml`/`*.yml` not starting with `_` (or `.`), sorted.

    Any case of the suffix (`ACME.YAML`), and whatever the entry is (a directory, a FIFO, a
    symbolic link to nothing): a name that says contract is read, or reported, never skipped.
    """
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix.lower() in {".yaml", ".yml"} and not path.name.startswith(("_", "."))
    )


def load_contract_set(
    directory: Path,
    settings: Settings,
    *,
    today: date | None = None,
    now: datetime | None = None,
) -> tuple[ContractSet | None, list[Problem]]:
    """Load and check every contract in `directory`: the set, or None and every problem found.

    The set carries its warnings as of `now` (default: the clock's), the certificates' judged
    at that instant, the contracts' dates on `today` (default: `now`'s day in the settings'
    time zone).
    """
    try:
        loaded, problems = _load_contract_set(directory, settings)
    except OSError as exc:  # a folder or file the gateway may not read, an I/O error
        where = exc.filename if exc.filename is not None else directory
        return None, [Problem(str(where), "", f"cannot read: {exc.strerror or exc}")]
    if loaded is None:
        return None, problems
    instant = datetime.now(UTC) if now is None else now
    day = instant.astimezone(settings.zone).date() if today is None else today
    warnings = tuple(
        ContractWarning(str(entry.file), partner_id, where, message)
        for partner_id, entry in sorted(loaded.contracts.items())
        for where, message in [
            *contract_warnings(entry.contract, loaded.taxonomy, day),
            *certificate_warnings(entry, instant),
        ]
    )
    return dataclasses.replace(loaded, warnings=warnings), problems


# How many times a load starts over when the folder was swapped while it was read.
_LOADS_WHILE_SWAPPED = 3


def _load_contract_set(
    directory: Path, settings: Settings
) -> tuple[ContractSet | None, list[Problem]]:
    if not directory.is_dir():
        return None, [Problem(str(directory), "", "no contract files: not a directory")]
    # A folder swapped while it is read (a symbolic link flipped to a new release, a Kubernetes
    # ConfigMap's `..data` renamed to the next version) would give a set mixing files of both
    # versions, each name resolved anew. Every file is read from the one folder the name led
    # to at the start; a load that saw the swap starts over, to load the version swapped in.
    for _ in range(_LOADS_WHILE_SWAPPED):
        folder = _version_folder(directory)
        try:
            loaded, problems = _load_folder(folder, directory, settings)
        except OSError:
            if _version_folder(directory) == folder:
                raise
            continue  # swapped, and the version being read removed (as a kubelet does next)
        if _version_folder(directory) == folder:
            return loaded, problems
    return None, [
        Problem(str(directory), "", "the folder kept being replaced while it was read; try again")
    ]


def _version_folder(directory: Path) -> Path:
    """Where `directory` leads now; for a Kubernetes ConfigMap mount, where its `..data` link
    leads (each name at the top of the mount links through it)."""
    data = directory / "..data"
    return Path(os.path.realpath(data if os.path.lexists(data) else directory))


def _load_folder(
    folder: Path, shown: Path, settings: Settings
) -> tuple[ContractSet | None, list[Problem]]:
    """The set in `folder`, its files named as under `shown` (the folder as configured)."""
    taxonomy, problems = load_taxonomy(folder)
    problems = [_named_under(shown, folder, problem) for problem in problems]
    files = contract_files(folder)
    if not files:
        problems.append(Problem(str(shown), "", "no contract files (*.yaml, *.yml)"))
    loaded: dict[str, LoadedContract] = {}
    for path in files:
        named = shown / path.name
        entry, found = _load_contract(path, named, taxonomy, settings)
        if entry is not None:
            partner_id = entry.contract.partner.id
            if partner_id in loaded:
                first = loaded[partner_id].file
                found.append(
                    ("partner.id", f"duplicate partner id {partner_id!r} (also in {first})")
                )
            else:
                loaded[partner_id] = entry
        problems += file_problems(str(named), found)
    problems += _cap_share_problems(loaded, settings)
    if problems:
        return None, problems
    return ContractSet(MappingProxyType(loaded), taxonomy), []


def _cap_share_problems(loaded: Mapping[str, LoadedContract], settings: Settings) -> list[Problem]:
    """A share of `cap_shares` that leaves a cap too small to enforce: refused, never read as
    no cap (everything) or no share (nothing)."""
    problems: list[Problem] = []
    for partner_id, entry in loaded.items():
        caps = shared_caps(entry.contract.terms, settings.cap_share(partner_id))
        problems += file_problems(str(entry.file), too_small(partner_id, caps))
    return problems


def unknown_cap_share_partners(partners: Collection[str], settings: Settings) -> list[Problem]:
    """The partner ids `cap_shares` names that are not among `partners` (a contract set's):
    misspelt, one would leave the partner meant at its whole cap."""
    return [
        Problem(
            "settings",
            f"cap_shares.{partner_id}",
            f"no contract has partner id {partner_id!r}: its share would apply to no one",
        )
        for partner_id in settings.cap_shares
        if partner_id != EVERY_OTHER_PARTNER and partner_id not in partners
    ]


def _named_under(shown: Path, folder: Path, problem: Problem) -> Problem:
    where = Path(problem.file)
    if where.parent != folder:
        return problem
    return dataclasses.replace(problem, file=str(shown / where.name))


def _load_contract(
    path: Path, named: Path, taxonomy: Taxonomy, settings: Settings
) -> tuple[LoadedContract | None, list[tuple[str, str]]]:
    """The contract in the file at `path` (None if it cannot be read as one), known as `named`,
    and its problems."""
    try:
        data, raw = read_yaml_file(path)
    except YamlFileError as exc:
        return None, exc.problems
    if not isinstance(data, dict):
        return None, [("", "the top level must be a mapping")]
    try:
        contract = Contract.model_validate(data)
    except ValidationError as exc:
        return None, schema_problems(exc)
    found = validate_contract(contract, taxonomy, settings)
    tls = None
    section = contract.upstream.tls
    if section is not None and not any(where.startswith("upstream.tls") for where, _ in found):
        # Relative paths from the folder the contract was read from: the version a swapped
        # folder led to (see `_load_contract_set`), never a mix of two.
        tls, problems = load_partner_tls(section, path.parent)
        found += problems
    return LoadedContract(named, contract, hashlib.sha256(raw).hexdigest(), tls), found


def validate_contract(
    contract: Contract, taxonomy: Taxonomy, settings: Settings
) -> list[tuple[str, str]]:
    """The rules one contract must meet beyond its schema, as (key path, message) pairs."""
    return [
        *_check_contract_info(contract),
        *_check_upstream(contract, settings),
        *_check_purposes(contract),
        *_check_categories(contract, taxonomy),
        *_check_assessment(contract, taxonomy),
        *_check_cross_border(contract),
        *_check_routes(contract, taxonomy),
    ]


Found = Iterator[tuple[str, str]]


def _check_contract_info(contract: Contract) -> Found:
    info = contract.contract
    if info.expires < info.effective:
        yield "contract.expires", f"{info.expires} is before effective {info.effective}"


def _check_upstream(contract: Contract, settings: Settings) -> Found:
    upstream = contract.upstream
    problem = _base_url_problem(upstream.base_url, settings.allow_insecure_upstreams)
    if problem is not None:
        yield "upstream.base_url", problem
    if upstream.tls is not None:
        yield from tls_problems(upstream.tls, upstream.base_url)
    credential = _credential_env(upstream.auth)
    if credential is not None:
        key, name = credential
        if name in _gateway_secret_names(settings) or name.startswith(ENV_PREFIX):
            # The partner would be sent the gateway's own key: with the hash key it can undo
            # the `hash` transform and derive every partner's keys; with a token secret it can
            # mint admin tokens.
            yield (
                f"upstream.auth.{key}",
                "names a variable the gateway keeps for its own settings and keys: "
                "a partner's credential needs a variable of its own",
            )
    if upstream.location != settings.jurisdiction and not contract.terms.cross_border.allowed:
        yield (
            "upstream.location",
            f"{upstream.location} is outside the home jurisdiction {settings.jurisdiction}: "
            "declare the transfer with terms.cross_border.allowed: true and a mechanism",
        )


def _credential_env(auth: UpstreamAuth) -> tuple[str, str] | None:
    """The field naming the variable the partner's credential is read from, and its name."""
    if isinstance(auth, BearerAuth):
        return "token_env", auth.token_env
    if isinstance(auth, BasicAuth):
        return "password_env", auth.password_env
    if isinstance(auth, HeaderAuth):
        return "value_env", auth.value_env
    return None


def _gateway_secret_names(settings: Settings) -> frozenset[str]:
    names = {settings.secrets.hash_key_env}
    for keys in (settings.auth, settings.consent):
        if keys is not None and keys.hs256_secret_env is not None:
            names.add(keys.hs256_secret_env)
    return frozenset(names)


def _base_url_problem(url: str, allow_insecure: bool) -> str | None:
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme == "http":
        if not allow_insecure:
            return (
                "http:// upstreams are only allowed with allow_insecure_upstreams: true "
                "(development); use https://"
            )
    elif parts.scheme != "https":
        return "must be an absolute https:// URL"
    if not parts.hostname:
        return "must name a host"
    if "@" in parts.netloc:
        return "must not contain user info (credentials belong in upstream.auth)"
    if port == 0:
        return "port 0 is not a valid port"
    if parts.query or "?" in url:
        return "must not contain a query"
    if parts.fragment or "#" in url:
        return "must not contain a fragment"
    try:
        # What the partner client will make of it: a URL it cannot call is refused here, at
        # load, not on every share ("https://[::1]x/").
        origin = origin_of(f"{parts.scheme}://{parts.netloc}")
    except ValueError:
        return "must be scheme://host[:port] followed by a path"
    try:
        # The resolver encodes the name so before any lookup: one it cannot encode would fail
        # every share to this partner ("api..acme.example").
        origin.host.encode("idna")
    except UnicodeError:
        return (
            "the host is not a valid DNS name (an empty label, a label over 63 characters, "
            "or characters IDNA cannot encode)"
        )
    if not parts.path.isascii():
        # The request line is ASCII: a partner would read raw UTF-8 there as it pleases.
        return "the path must be ASCII: percent-encode other characters (ü is %C3%BC)"
    segments = parts.path.split("/")
    if any(segment in (".", "..") for segment in segments) or _AMBIGUOUS_PATH.search(parts.path):
        # Route templates refuse the same: a partner may read them as another path.
        return "the path must not hold dot-segments, ';', '\\' or an encoded '/', '\\' or '.'"
    return None


_AMBIGUOUS_PATH: Final = re.compile(r"[;\\]|%2[fFeE]|%5[cC]")


def _check_purposes(contract: Contract) -> Found:
    yield from _duplicates("purposes", contract.purposes, "purpose")


def _duplicates(where: str, values: Sequence[str], what: str) -> Found:
    first: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in first:
            yield f"{where}.{index}", f"duplicate {what} {value!r} (also {where}.{first[value]})"
        else:
            first[value] = index


def _category_problem(name: str, taxonomy: Taxonomy) -> str | None:
    """What makes a category unusable in any contract, if anything."""
    if not taxonomy.known(name):
        return f"unknown data category {name!r}"
    if not taxonomy.shareable(name):
        return f"{name} may never be shared, not even hashed"
    return None


def _check_categories(contract: Contract, taxonomy: Taxonomy) -> Found:
    scope = set(contract.categories)
    allowed = contract.terms.sensitive.allowed
    yield from _duplicates("categories", contract.categories, "category")
    for index, name in enumerate(contract.categories):
        problem = _category_problem(name, taxonomy)
        if problem is not None:
            yield f"categories.{index}", problem
        elif taxonomy.sensitive(name) and name not in allowed:
            yield f"categories.{index}", _not_allowed_sensitive(name)
    where = "terms.sensitive.allowed"
    yield from _duplicates(where, allowed, "category")
    for index, name in enumerate(allowed):
        problem = _category_problem(name, taxonomy)
        if problem is not None:
            yield f"{where}.{index}", problem
        elif not taxonomy.sensitive(name):
            yield f"{where}.{index}", f"{name} is not a sensitive category"
        elif name not in scope:
            yield f"{where}.{index}", f"{name} is not in categories"


def _not_allowed_sensitive(name: str) -> str:
    return f"{name} is sensitive personal information: it must be listed in terms.sensitive.allowed"


def _field_category_problems(
    rule: FieldRule, contract: Contract, taxonomy: Taxonomy
) -> Iterator[str]:
    name = rule.category
    problem = _category_problem(name, taxonomy)
    if problem is not None:
        yield problem
        return
    if not taxonomy.personal(name) or name in contract.categories:
        # A sensitive category in `categories` is checked there, once.
        return
    yield f"{name} is not in categories (the approved data scope)"
    if taxonomy.sensitive(name) and name not in contract.terms.sensitive.allowed:
        yield _not_allowed_sensitive(name)


def _sensitive_in_use(contract: Contract, taxonomy: Taxonomy) -> list[str]:
    names = [*contract.categories]
    names += [rule.category for route in contract.routes for rule in route.fields or ()]
    return sorted({name for name in names if taxonomy.known(name) and taxonomy.sensitive(name)})


def _check_assessment(contract: Contract, taxonomy: Taxonomy) -> Found:
    third_party = contract.partner.relationship == "third_party"
    if third_party and not contract.terms.sensitive.consent_required:
        yield (
            "terms.sensitive.consent_required",
            "must be true for a third_party partner (it needs the data subject's separate consent)",
        )
    if contract.contract.pia_ref is not None:
        return
    reasons: list[str] = []
    if third_party:
        reasons.append("a third_party partner")
    sensitive = _sensitive_in_use(contract, taxonomy)
    if sensitive:
        reasons.append(f"sensitive categories ({', '.join(sensitive)})")
    if contract.terms.cross_border.allowed:
        reasons.append("a cross-border transfer")
    if contract.terms.minors == "allow":
        # A child's data is sensitive whatever its category (SPEC 3.3): allowing it is a
        # decision about sensitive data like any other, and needs its assessment on file.
        reasons.append("shares about children under 14 (minors: allow)")
    if reasons:
        yield (
            "contract.pia_ref",
            f"an impact assessment reference is required for {_and(reasons)}",
        )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _check_cross_border(contract: Contract) -> Found:
    cross_border = contract.terms.cross_border
    if cross_border.allowed and cross_border.mechanism is None:
        yield (
            "terms.cross_border.mechanism",
            "required when cross_border.allowed is true "
            "(standard_contract, certification or security_assessment)",
        )
    if not cross_border.allowed and cross_border.mechanism is not None:
        yield "terms.cross_border.mechanism", "set only when cross_border.allowed is true"


def _check_routes(contract: Contract, taxonomy: Taxonomy) -> Found:
    auth = contract.upstream.auth
    credential_header = auth.name.lower() if isinstance(auth, HeaderAuth) else None
    for index, route in enumerate(contract.routes):
        where = f"routes.{index}"
        if route.purpose not in contract.purposes:
            yield (
                f"{where}.purpose",
                f"{route.purpose!r} is not one of purposes ({', '.join(contract.purposes)})",
            )
        template = Template.parse(route.path)
        if not template.parts:
            # A request is /{partner}/{path}: at least one segment after the partner id.
            yield f"{where}.path", "the path needs at least one segment: no request reaches /"
        names = template.names
        for name in sorted({n for n in names if names.count(n) > 1}):
            yield f"{where}.path", f"placeholder {{{name}}} appears more than once"

        for position, header in enumerate(route.headers):
            if header.lower() == credential_header:
                yield (
                    f"{where}.headers.{position}",
                    f"{header} carries the upstream credential and is set by the gateway",
                )
        yield from _check_body(where, route)
        yield from _check_fields(where, route, contract, taxonomy)
        yield from _check_subject(where, route)
        yield from _check_consent_subject(where, route, contract, taxonomy)
        yield from _check_whose_data(where, route, contract, taxonomy)
        if route.response is not None:
            yield from _check_response(f"{where}.response.fields", route.response.fields)
    yield from _check_route_overlaps(contract.routes)


def _check_body(where: str, route: Route) -> Found:
    if route.fields is not None and route.content_types is not None:
        yield where, "a route has fields (a JSON body) or content_types (a raw body), not both"
    elif route.method in BODYLESS_METHODS:
        if route.content_types is not None:
            yield f"{where}.content_types", f"a {route.method} route carries no body"
    elif route.fields is None and route.content_types is None:
        yield (
            where,
            f"a {route.method} route needs fields (a JSON body) or content_types (a raw body)",
        )


def _check_fields(where: str, route: Route, contract: Contract, taxonomy: Taxonomy) -> Found:
    if route.fields is None:
        return
    from gateway.fieldfilter import QUERY_PREFIX

    rules = route.fields
    for position, rule in enumerate(rules):
        for problem in _field_category_problems(rule, contract, taxonomy):
            yield f"{where}.fields.{position}.category", problem
        if route.method in BODYLESS_METHODS and not rule.path.startswith(QUERY_PREFIX):
            yield (
                f"{where}.fields.{position}.path",
                f"a {route.method} route carries no body: only query. fields are allowed",
            )
    yield from _check_paths(f"{where}.fields", [rule.path for rule in rules], categories=rules)


def _check_response(where: str, fields: Sequence[ResponseField]) -> Found:
    from gateway.fieldfilter import QUERY_PREFIX

    for position, field in enumerate(fields):
        if field.path.startswith(QUERY_PREFIX):
            yield f"{where}.{position}.path", "a response has no query parameters"
    yield from _check_paths(where, [field.path for field in fields], categories=None)


def _check_paths(where: str, paths: Sequence[str], categories: Sequence[FieldRule] | None) -> Found:
    """Syntax and duplicates of an allow-list's paths, then whether they compile together."""
    from gateway.fieldfilter import AllowRule, PathSyntaxError, compile_plan, parse_path

    valid = True
    first: dict[str, int] = {}
    for position, path in enumerate(paths):
        try:
            parse_path(path)
        except PathSyntaxError as exc:
            valid = False
            yield f"{where}.{position}.path", exc.message
            continue
        if path in first:
            valid = False
            yield (
                f"{where}.{position}.path",
                f"duplicate field path {path!r} (also {where}.{first[path]})",
            )
        else:
            first[path] = position
    if not valid:
        return
    if categories is None:
        rules = [AllowRule(path=path, category=None) for path in paths]
    else:
        rules = [
            AllowRule(
                path=rule.path,
                category=rule.category,
                transform=None if rule.transform is None else to_transform(rule.transform),
            )
            for rule in categories
        ]
    try:
        compile_plan(rules)
    except PathSyntaxError as exc:
        culprit = first.get(exc.path)
        yield (f"{where}.{culprit}.path" if culprit is not None else where), exc.message


def _check_consent_subject(
    where: str, route: Route, contract: Contract, taxonomy: Taxonomy
) -> Found:
    # Consent is shown per data subject: without one named, every share would be refused.
    if route.subject is not None:
        return
    if contract.partner.relationship == "third_party":
        # A route without a JSON body has nowhere else to name it: say where it can.
        body = route.fields is not None and route.method not in BODYLESS_METHODS
        yield (
            f"{where}.subject",
            "required for a third_party partner: each share needs its data subject's consent; "
            f"name it with {'a body path, ' if body else ''}query. or path.",
        )
    elif contract.terms.sensitive.consent_required:
        # An upload is not read: it may hold any sensitive category the contract names.
        if route.fields is not None:
            categories = [rule.category for rule in route.fields]
        else:
            categories = list(contract.categories)
        sensitive = sorted(
            {name for name in categories if taxonomy.known(name) and taxonomy.sensitive(name)}
        )
        if sensitive and route.fields is None and route.method not in BODYLESS_METHODS:
            yield (
                f"{where}.subject",
                f"required for a route without fields: an upload may hold any sensitive "
                f"category the contract names ({', '.join(sensitive)}), which needs its data "
                "subject's consent (terms.sensitive.consent_required); name it with query. "
                "or path.",
            )
        elif sensitive and route.fields is not None:
            yield (
                f"{where}.subject",
                f"required to send {', '.join(sensitive)}: sensitive data needs its data "
                "subject's consent (terms.sensitive.consent_required)",
            )


def _check_whose_data(where: str, route: Route, contract: Contract, taxonomy: Taxonomy) -> Found:
    """A field that needs its data subject's consent must sit with the subject's own data.

    Consent is shown for the subject the route names. A guarantor's ID number beside the
    applicant's (`guarantor.id_number` where the subject is `applicant.user_id`), or beside a
    batch's records, would go on the applicant's consent: nothing at run time tells whose it is.
    """
    third_party = contract.partner.relationship == "third_party"
    sensitive_consent = contract.terms.sensitive.consent_required
    if route.fields is None or route.subject is None or not (third_party or sensitive_consent):
        return
    scope = _subject_scope(route)
    if scope is None:
        return  # the subject is the whole request's (a top-level id, a query parameter)
    for index, rule in enumerate(route.fields):
        category = rule.category
        if not taxonomy.known(category):
            continue  # reported as unknown already
        needs_consent = (third_party and taxonomy.personal(category)) or (
            sensitive_consent and taxonomy.sensitive(category)
        )
        if needs_consent and not _within(rule.path, scope):
            yield (
                f"{where}.fields.{index}.path",
                f"{category} outside {scope}, where the data subject ({route.subject}) is: "
                "it may be someone else's, whose consent no share can show",
            )


def _subject_scope(route: Route) -> str | None:
    """Where the data of the route's subject lies (a batch's records, or the object holding the
    subject id); None when that is the whole request."""
    from gateway.fieldfilter import QUERY_PREFIX

    if route.records is not None:
        return route.records
    subject = route.subject
    if subject is None or subject.startswith((QUERY_PREFIX, PATH_PREFIX)) or "." not in subject:
        return None
    return subject.rsplit(".", 1)[0]


def _within(path: str, scope: str) -> bool:
    return path == scope or path.startswith((scope + ".", scope + "[]"))


def _check_subject(where: str, route: Route) -> Found:
    from gateway.fieldfilter import QUERY_PREFIX, PathSyntaxError, parse_path

    records = route.records
    json_body = route.fields is not None and route.method not in BODYLESS_METHODS
    if route.fields is None:
        no_body = "a route without fields has no JSON body"
    else:
        no_body = f"a {route.method} route has no body"
    for key in ("records", "subject", "birth_date"):
        path: str | None = getattr(route, key)
        if path is None:
            continue
        placeholder = path_placeholder(path)
        if placeholder is not None:
            yield from _check_placeholder(f"{where}.{key}", key, route, placeholder)
            continue
        try:
            parse_path(path)
        except PathSyntaxError as exc:
            yield f"{where}.{key}", exc.message
            continue
        if not json_body and key == "records":
            yield f"{where}.{key}", f"{no_body}: records need one"
        elif not json_body and not path.startswith(QUERY_PREFIX):
            # Nothing parses a raw or absent body: only the query or the path can name the
            # subject.
            yield f"{where}.{key}", f"{no_body}: use a query. or path. path"
        elif "**" in path:
            yield f"{where}.{key}", "must name a single value, not a subtree (**)"
        elif key == "records":
            if path.count("[]") != 1:
                yield f"{where}.{key}", "must name one array of records, with a single []"
        elif records is None:
            if "[]" in path:
                yield (
                    f"{where}.{key}",
                    "must name one value; a route about many subjects sets records: items[]",
                )
        elif not (path == records or path.startswith(records + ".")):
            yield (
                f"{where}.{key}",
                f"must be inside each record: start with {records} (e.g. {records}.user_id)",
            )
        elif "[]" in path[len(records) :]:
            yield f"{where}.{key}", "must name one value per record"


def _check_placeholder(where: str, key: str, route: Route, placeholder: str) -> Found:
    """A `path.<name>` subject or birth date: one value per request, so never a batch's."""
    names = Template.parse(route.path).names
    if key == "records":
        yield where, "records are an array in the body, not a placeholder of the path"
    elif route.records is not None:
        yield (
            where,
            f"must be inside each record: start with {route.records} "
            "(a placeholder of the path is one value for the whole batch)",
        )
    elif placeholder not in names:
        have = ", ".join(f"path.{name}" for name in names) or "none"
        yield (
            where,
            f"{PATH_PREFIX}{placeholder} names no placeholder of the route's path {route.path} "
            f"(its placeholders: {have})",
        )


def _check_route_overlaps(routes: Sequence[Route]) -> Found:
    # A request is authorised against the route its path matches, but served by whichever
    # endpoint the partner's router picks. Two templates that can match one request (a
    # placeholder beside a literal, or literals differing only in case, which many routers
    # ignore) would let a caller with one purpose's scope reach the other route's endpoint under
    # the first route's fields and response filter. Only the very same template may serve
    # several purposes.
    #
    # Each route is compared with the routes before it that could match one request, found in a
    # tree of templates per method, not with every one of them: a contract of thousands of
    # routes (a mistake, or a hostile file) would otherwise take minutes to judge.
    trees: dict[str, _TemplateNode] = {}
    for index, route in enumerate(routes):
        parts = Template.parse(route.path).parts
        tree = trees.setdefault(route.method, _TemplateNode())
        clash = _first_clash(tree, parts, route.purpose)
        if clash is not None:
            other_index, other, duplicate = clash
            if duplicate:
                yield (
                    f"routes.{index}",
                    f"duplicate route {route.method} {route.path} for purpose {route.purpose} "
                    f"(also routes.{other_index})",
                )
            else:
                purposes = (
                    f"purpose {route.purpose}"
                    if route.purpose == other.purpose
                    else f"purposes {other.purpose} and {route.purpose}"
                )
                yield (
                    f"routes.{index}.path",
                    f"{route.path} and {other.path} (routes.{other_index}) can match the same "
                    f"request for {route.method} and {purposes}",
                )
        tree.add(parts, index, route)


@dataclass(slots=True)
class _Template:
    """The routes of one exact template (placeholders unnamed), earliest first."""

    first: tuple[int, Route]
    by_purpose: dict[str, tuple[int, Route]]


@dataclass(slots=True)
class _TemplateNode:
    """Templates by their casefolded segments, None for a placeholder: a literal can match a
    request only where the other template has the same literal in any case, or a placeholder."""

    children: dict[str | None, _TemplateNode] = dataclasses.field(default_factory=dict)
    # The templates that end here, by their exact parts.
    templates: dict[tuple[str | None, ...], _Template] = dataclasses.field(default_factory=dict)

    def add(self, parts: tuple[str | None, ...], index: int, route: Route) -> None:
        node = self
        for part in parts:
            node = node.children.setdefault(
                None if part is None else part.casefold(), _TemplateNode()
            )
        found = node.templates.get(parts)
        if found is None:
            node.templates[parts] = _Template((index, route), {route.purpose: (index, route)})
        else:
            found.by_purpose.setdefault(route.purpose, (index, route))


def _first_clash(
    tree: _TemplateNode, parts: tuple[str | None, ...], purpose: str
) -> tuple[int, Route, bool] | None:
    """The earliest route that `parts` for `purpose` may not stand beside: the same template
    for the same purpose (True), or another template that can match the same request (False)."""
    nodes = [tree]
    for part in parts:
        if part is None:
            nodes = [child for node in nodes for child in node.children.values()]
        else:
            key = part.casefold()
            nodes = [
                child
                for node in nodes
                for child in (node.children.get(key), node.children.get(None))
                if child is not None
            ]
    clash: tuple[int, Route, bool] | None = None
    for node in nodes:
        for other_parts, template in node.templates.items():
            duplicate = other_parts == parts
            # The very same template for another purpose is allowed.
            found = template.by_purpose.get(purpose) if duplicate else template.first
            if found is not None and (clash is None or found[0] < clash[0]):
                clash = (*found, duplicate)
    return clash


# ---------------------------------------------------------------------------------------------
# Warnings: a valid contract, as agreed, that will not work as the operator expects

# How long before its last day an active contract's end is announced: time to renew it before
# every share is refused.
EXPIRY_NOTICE_DAYS: Final = 30
EXPIRES_PATH: Final = "contract.expires"
EFFECTIVE_PATH: Final = "contract.effective"
# The warnings that come and go with the calendar and the clock, not with the files: judged
# again whenever they are asked for (see `dated_warnings`).
DATED_PATHS: Final = frozenset({EFFECTIVE_PATH, EXPIRES_PATH, CLIENT_CERT_PATH, CA_PATH})


def contract_warnings(contract: Contract, taxonomy: Taxonomy, today: date) -> list[tuple[str, str]]:
    """What to act on in a contract that has no problems, as (key path, message) pairs."""
    found = [
        (f"routes.{index}.subject", message)
        for index, route in enumerate(contract.routes)
        if (message := _unfindable_shares(route, contract, taxonomy)) is not None
    ]
    found += _day_warnings(contract.contract, today)
    return found


def _day_warnings(info: ContractInfo, today: date) -> list[tuple[str, str]]:
    found = []
    effective = effective_warning(info, today)
    if effective is not None:
        found.append((EFFECTIVE_PATH, effective))
    expiry = expiry_warning(info, today)
    if expiry is not None:
        found.append((EXPIRES_PATH, expiry))
    return found


def certificate_warnings(entry: LoadedContract, now: datetime) -> list[tuple[str, str]]:
    """The certificates of an active contract's `upstream.tls` not valid at `now` (an instant),
    or for no more than `EXPIRY_NOTICE_DAYS`: one suspended or terminated sends no share. And,
    whatever its status, what cryptography warned of as it read them."""
    if entry.tls is None:
        return []
    found = tls_notices(entry.tls)
    if entry.contract.contract.status != "active":
        return found
    # Time to get a new certificate from the partner, as to renew a contract.
    return [*tls_warnings(entry.tls, now, timedelta(days=EXPIRY_NOTICE_DAYS)), *found]


def dated_warnings(entry: LoadedContract, now: datetime, zone: tzinfo) -> list[tuple[str, str]]:
    """The warnings at `DATED_PATHS` as of `now`: those of a set's load go stale in a gateway
    that runs for weeks."""
    return [
        *_day_warnings(entry.contract.contract, now.astimezone(zone).date()),
        *certificate_warnings(entry, now),
    ]


def _unfindable_shares(route: Route, contract: Contract, taxonomy: Taxonomy) -> str | None:
    """Why `logs subject` finds none of the route's shares, when they may hold personal data.

    A share's record is found by the subject references the route's `subject` gives it, and by
    nothing else: without one, an access request never learns the partner received them. A
    placeholder of the path has no category (a value holding an identifier is refused), so
    only the fields, or an upload's unread body, can send personal data.
    """
    if route.subject is not None:
        return None
    lost = "`logs subject` cannot find its shares"
    if route.fields is None:
        if route.method in BODYLESS_METHODS:
            return None  # it sends no body, and no field
        personal = sorted({name for name in contract.categories if taxonomy.personal(name)})
        if not personal:
            return None
        return (
            f"an upload may hold any personal category of the contract ({', '.join(personal)}) "
            f"but the route names no subject: {lost}; name the person it is about with "
            "subject: query.<name> or path.<name>"
        )
    personal = sorted({rule.category for rule in route.fields if taxonomy.personal(rule.category)})
    if not personal:
        return None
    if route.records is not None:
        where = f"the field of each record that identifies the person ({route.records}.<id>)"
    elif route.method in BODYLESS_METHODS:
        where = "the query parameter or placeholder that identifies the person (query. or path.)"
    else:
        where = "the field that identifies the person (a body path, query. or path.)"
    return f"sends personal data ({', '.join(personal)}) but names no subject: {lost}; name {where}"


def effective_warning(info: ContractInfo, today: date) -> str | None:
    """The start of an active contract that is still to come: signed ahead, it is not in force
    until its first day."""
    if info.status != "active" or info.effective <= today:
        return None
    return (
        f"takes effect on {info.effective}: every share is refused until then "
        "(403 contract_inactive)"
    )


def expiry_warning(info: ContractInfo, today: date) -> str | None:
    """The end of an active contract that is `EXPIRY_NOTICE_DAYS` or less away, or past."""
    if info.status != "active" or info.expires == date.max:
        return None
    left = (info.expires - today).days
    refused_from = info.expires + timedelta(days=1)
    if left < 0:
        return f"expired on {info.expires}: every share is refused since {refused_from}"
    if left > EXPIRY_NOTICE_DAYS:
        return None
    when = "today" if left == 0 else f"in {left} day(s)"
    return (
        f"the contract's last day is {info.expires}, {when}: every share is refused from "
        f"{refused_from}; renew it (a new version with a later expires) in time"
    )
