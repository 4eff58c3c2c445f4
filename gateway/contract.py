"""Contract files: the schema of one partner's contract, and its problems as key paths."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from gateway.caps import MIN_AGREED_RATE_PER_S
from gateway.names import EnvName, PartnerId, matching
from gateway.yamlfile import printable

if TYPE_CHECKING:
    from gateway.transforms import Transform


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one file, located by its key path (`routes.0.fields.2.category`)."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        if not self.path:
            return printable(f"{self.file}: {self.message}")
        return printable(f"{self.file}: {self.path}: {self.message}")


# A broken file can hold thousands of problems (one per field rule): the first ones say what is
# wrong, and every problem is a line of `contracts validate`, of the reload log line and of the
# admin API's answer, so the rest are counted instead.
MAX_PROBLEMS_PER_FILE = 50


def file_problems(file: str, found: Sequence[tuple[str, str]]) -> list[Problem]:
    """`found` (key path, message) as problems of `file`: the first `MAX_PROBLEMS_PER_FILE`,
    then one saying how many more there are."""
    problems = [Problem(file, where, message) for where, message in found[:MAX_PROBLEMS_PER_FILE]]
    if len(found) > MAX_PROBLEMS_PER_FILE:
        more = len(found) - MAX_PROBLEMS_PER_FILE
        problems.append(Problem(file, "", f"and {more} more problem(s) in this file"))
    return problems


# ---------------------------------------------------------------------------------------------
# Schema errors as key paths

_PLAIN_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
}

# Discriminated unions put the tag they chose into an error's location
# (`upstream.auth.bearer.token_env`); the file has no such key, so it is dropped.
_UNION_TAGS: dict[tuple[str, str], frozenset[str]] = {
    ("upstream", "auth"): frozenset({"none", "bearer", "basic", "header"}),
}


def schema_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic errors as (key path, message), paths written the way the file is."""
    return [(".".join(_file_path(error["loc"])), _message(error)) for error in exc.errors()]


def _file_path(loc: tuple[int | str, ...]) -> list[str]:
    out: list[str] = []
    tags: frozenset[str] = frozenset()
    for part in map(str, loc):
        if part in tags:
            # Only the element right after the union field can be its tag.
            tags = frozenset()
            continue
        out.append(part)
        tags = _UNION_TAGS.get((out[-2], out[-1]), frozenset()) if len(out) >= 2 else frozenset()
    return out


def _message(error: Any) -> str:
    kind = error["type"]
    if kind in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[kind]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


# ---------------------------------------------------------------------------------------------
# Value types


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (`"\ud800"` in YAML): no share record could ever hold it.
        raise ValueError("is not text: it holds a lone surrogate") from None
    return value


NonBlank = Annotated[str, AfterValidator(_non_blank)]
_INT64_MAX = 2**63 - 1  # what SQLite stores as an integer

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calendar_date(value: object) -> object:
    # Lax pydantic would read 20250101 as a Unix timestamp; a contract date is a calendar day.
    if isinstance(value, datetime):
        raise ValueError("must be a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value} is not a day of the calendar") from None
    raise ValueError("must be a date (YYYY-MM-DD)")


CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    # A length check of its own, so a list whose every item is invalid is not also "empty".
    if not value:
        raise ValueError("must not be empty")
    return value


Purpose = Annotated[str, matching(r"[a-z][a-z0-9_]*", "must match [a-z][a-z0-9_]*")]


def _country_as_written(value: object) -> object:
    if isinstance(value, bool):
        # YAML 1.1 reads an unquoted NO (Norway), and ON, Y, N, as booleans.
        raise ValueError('an unquoted country code YAML reads as true or false: quote it ("NO")')
    return value


CountryCode = Annotated[
    str,
    BeforeValidator(_country_as_written),
    matching(r"[A-Z]{2}", "must be an ISO 3166 country code (e.g. CN)"),
]

# RFC 9110 `token`: the characters a header field name may hold.
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway on every forwarded request; a contract may not supply or pass them through.
GATEWAY_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-encoding",
        "x-data-retention-days",
        "x-data-onward-transfer",
    }
)
GATEWAY_HEADER_PREFIXES = ("x-share-",)
# The caller's credentials and the client's address: never passed to a partner.
CALLER_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "x-consent-token",
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "x-remote-addr",
        "x-remote-ip",
        "x-proxyuser-ip",
    }
)
# `x-original-forwarded-for` and the like carry the address under a proxy's own prefix.
CALLER_HEADER_PREFIXES = ("x-forwarded-", "x-original-forwarded-")


def _header_token(value: str) -> str:
    if not _HEADER_TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def _credential_header(value: str) -> str:
    if not _HEADER_TOKEN.fullmatch(value):
        # Not echoed: "X-Api-Key: <the key>" pasted whole is a secret.
        raise ValueError("is not a valid HTTP header name")
    name = value.lower()
    if (
        name in HOP_BY_HOP_HEADERS
        or name in GATEWAY_HEADERS
        or name.startswith(GATEWAY_HEADER_PREFIXES)
    ):
        raise ValueError(f"{value} is set by the gateway or the connection, not by upstream.auth")
    return value


def _pass_through_header(value: str) -> str:
    name = _header_token(value).lower()
    if name in HOP_BY_HOP_HEADERS:
        raise ValueError(f"{value} is a hop-by-hop header and is never forwarded")
    if name in GATEWAY_HEADERS or name.startswith(GATEWAY_HEADER_PREFIXES):
        raise ValueError(f"{value} is set by the gateway and cannot be passed through")
    if name in CALLER_HEADERS or name.startswith(CALLER_HEADER_PREFIXES):
        raise ValueError(
            f"{value} carries the caller's credentials or address and is never forwarded"
        )
    return value


CredentialHeader = Annotated[str, AfterValidator(_credential_header)]
PassThroughHeader = Annotated[str, AfterValidator(_pass_through_header)]

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def _media_type(value: str) -> str:
    if not _MEDIA_TYPE.fullmatch(value):
        raise ValueError(
            f"{value!r} must be a lower-case type/subtype media type, without parameters"
        )
    return value


MediaType = Annotated[str, AfterValidator(_media_type)]

_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _route_template(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("must start with /")
    if "?" in path or "#" in path:
        raise ValueError("must not contain a query or fragment; name query parameters as fields")
    if path == "/":
        return path
    if path.endswith("/"):
        raise ValueError("must not end with /")
    for segment in path[1:].split("/"):
        if not segment:
            raise ValueError("must not contain an empty segment (//)")
        if segment in {".", ".."}:
            raise ValueError("must not contain . or .. segments")
        if segment.startswith("{") or segment.endswith("}"):
            if not _PLACEHOLDER.fullmatch(segment):
                raise ValueError(
                    f"placeholder {segment} must be a whole segment named [a-z_][a-z0-9_]*"
                )
        elif not _LITERAL_SEGMENT.fullmatch(segment):
            raise ValueError(
                f"segment {segment!r} may only hold letters, digits and - . _ ~ "
                "or be a {name} placeholder"
            )
    return path


RouteTemplate = Annotated[str, AfterValidator(_route_template)]


def _records_path(path: str) -> str:
    if not path.endswith("[]"):
        raise ValueError("must name the array of records and end with [] (e.g. items[])")
    return path


# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Partner(_Model):
    id: PartnerId
    name: NonBlank
    kind: Literal["cloud_storage", "technical_maintenance", "credit_assessment", "other"]
    relationship: Literal["entrusted", "third_party"]


class ContractInfo(_Model):
    id: NonBlank
    version: StrictInt = Field(ge=1, le=_INT64_MAX)  # recorded in every share's record
    effective: CalendarDate
    expires: CalendarDate
    status: Literal["active", "suspended", "terminated"]
    pia_ref: NonBlank | None = None


class NoAuth(_Model):
    type: Literal["none"]


class BearerAuth(_Model):
    type: Literal["bearer"]
    token_env: EnvName


class BasicAuth(_Model):
    type: Literal["basic"]
    # RFC 7617: the user-id ends at the first colon.
    username: Annotated[
        str,
        matching(
            r"[^:\x00-\x1f\x7f]+",
            "must be non-empty, without ':' or control characters",
            echo=False,  # "user:password" is a password
        ),
    ]
    password_env: EnvName


class HeaderAuth(_Model):
    type: Literal["header"]
    name: CredentialHeader
    value_env: EnvName


UpstreamAuth = Annotated[NoAuth | BearerAuth | BasicAuth | HeaderAuth, Field(discriminator="type")]


# An upstream's `timeout_s` at most: a restart looks this far back for shares still going out.
MAX_UPSTREAM_TIMEOUT_S: Final = 300


class UpstreamTls(_Model):
    """The partner's own CA and the client certificate the gateway presents to it; relative
    paths are read from the contracts folder (`gateway.contractset`)."""

    ca_file: NonBlank | None = None  # replaces the system's trust store for this partner
    client_cert_file: NonBlank | None = None
    client_key_file: NonBlank | None = None


class Upstream(_Model):
    base_url: str
    location: CountryCode
    timeout_s: float = Field(default=10, gt=0, le=MAX_UPSTREAM_TIMEOUT_S, strict=True)
    auth: UpstreamAuth = NoAuth(type="none")
    # false for a partner known to answer one request twice: on a reused connection, a late
    # second answer would be read as the next share's.
    reuse_connections: StrictBool = True
    tls: UpstreamTls | None = None

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_written(cls, value: object) -> object:
        if value is None:
            # `tls:` with nothing after it (or only a comment): taken as no section, the partner
            # would be called with the system's trust store and no client certificate.
            raise ValueError("empty: name ca_file and/or client_cert_file, or remove the key")
        return value


class CrossBorder(_Model):
    allowed: StrictBool = False
    mechanism: Literal["standard_contract", "certification", "security_assessment"] | None = None


class Sensitive(_Model):
    allowed: tuple[str, ...] = ()
    consent_required: StrictBool = True


class Terms(_Model):
    retention_days: StrictInt = Field(ge=0, le=_INT64_MAX)
    onward_transfer: StrictBool = False
    cross_border: CrossBorder = CrossBorder()
    sensitive: Sensitive = Sensitive()
    minors: Literal["deny", "allow"] = "deny"
    # At least one a day, at most a million a second, and never infinite: the limiter's waits
    # and Retry-After must be numbers.
    rate_limit_per_s: float | None = Field(
        default=None, ge=MIN_AGREED_RATE_PER_S, le=1_000_000, strict=True, allow_inf_nan=False
    )
    max_records_per_day: StrictInt | None = Field(default=None, ge=1, le=_INT64_MAX)

    @field_validator("rate_limit_per_s", "max_records_per_day", mode="before")
    @classmethod
    def _cap_written(cls, value: object) -> object:
        if value is None:
            # `rate_limit_per_s:` with nothing after it (or only a comment) reads as null: taken
            # as "no cap", the partner would be sent without limit where a cap was meant.
            raise ValueError("empty: write the cap, or remove the key for none")
        return value


# Transforms. In the file: `hash`, `redact`, `{mask: {keep_first: N, keep_last: N}}`,
# `{generalize: year}`, `{generalize: {bucket: N}}`. Inside, each is a model tagged by `kind`,
# which is also the file's key, so an error under `mask:` is reported at `transform.mask.<key>`.


class HashSpec(_Model):
    kind: Literal["hash"] = "hash"

    @model_serializer
    def _as_written(self) -> str:
        return "hash"


class RedactSpec(_Model):
    kind: Literal["redact"] = "redact"

    @model_serializer
    def _as_written(self) -> str:
        return "redact"


class MaskSpec(_Model):
    """Keep the first and last characters, mask the rest; 0 and 0 masks everything."""

    kind: Literal["mask"] = "mask"
    keep_first: StrictInt = Field(default=0, ge=0)
    keep_last: StrictInt = Field(default=0, ge=0)

    @model_serializer
    def _as_written(self) -> dict[str, dict[str, int]]:
        return {"mask": {"keep_first": self.keep_first, "keep_last": self.keep_last}}


class GeneralizeSpec(_Model):
    """A date to its year (`bucket` unset), or a number to its bucket of `bucket` wide."""

    kind: Literal["generalize"] = "generalize"
    # At least 2: a bucket of 1 is the exact value, recorded as transformed. At most what a
    # float holds exactly.
    bucket: StrictInt | None = Field(default=None, ge=2, le=10**15)

    @model_serializer
    def _as_written(self) -> dict[str, str | dict[str, int]]:
        if self.bucket is None:
            return {"generalize": "year"}
        return {"generalize": {"bucket": self.bucket}}


TransformSpec = Annotated[
    HashSpec | RedactSpec | MaskSpec | GeneralizeSpec, Field(discriminator="kind")
]

_TRANSFORM_FORMS = "hash, redact, {mask: {keep_first: N, keep_last: N}} or {generalize: ...}"


def _transform_as_written(value: object) -> object:
    """Turn the file's forms into the `kind`-tagged mappings the union validates."""
    if value is None:
        # `transform:` with nothing after it (or only a comment) reads as null: taken as "no
        # transform", the value would go out raw where the author meant to write one.
        raise ValueError(f"empty: write a transform ({_TRANSFORM_FORMS}) or remove the key")
    if isinstance(value, BaseModel):
        return value
    if isinstance(value, str):
        if value in {"hash", "redact"}:
            return {"kind": value}
        raise ValueError(f"unknown transform {value!r}; expected {_TRANSFORM_FORMS}")
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"a transform is one of {_TRANSFORM_FORMS}")
    ((name, options),) = value.items()
    if name == "mask":
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ValueError("mask takes {keep_first: N, keep_last: N}")
        if "kind" in options:
            raise ValueError("mask: unknown key 'kind'")
        return {**options, "kind": "mask"}
    if name == "generalize":
        if options == "year":
            return {"kind": "generalize"}
        if (
            isinstance(options, dict)
            and options.get("bucket") is not None  # `{bucket: }` is not `year`
            and "kind" not in options
        ):
            return {**options, "kind": "generalize"}
        raise ValueError("generalize takes year or {bucket: N}")
    raise ValueError(f"unknown transform {name!r}; expected {_TRANSFORM_FORMS}")


class FieldRule(_Model):
    path: str
    category: str
    transform: Annotated[TransformSpec | None, BeforeValidator(_transform_as_written)] = None


class ResponseField(_Model):
    path: str


class ResponseSpec(_Model):
    fields: tuple[ResponseField, ...]


_EMPTY_ROUTE_KEYS = {
    "subject": "empty: name the field that identifies the data subject, or remove the key",
    "birth_date": "empty: name the field that holds the subject's birth date, or remove the key",
    "fields": "empty: list the fields the partner may receive, or remove the key (a route "
    "without fields forwards its body unchanged, with content_types)",
    "response": "empty: name the fields the caller may receive, or remove the key",
}


class Route(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: RouteTemplate
    purpose: str
    subject: str | None = None
    records: Annotated[str, AfterValidator(_records_path)] | None = None
    birth_date: str | None = None
    fields: tuple[FieldRule, ...] | None = None
    content_types: Annotated[tuple[MediaType, ...], AfterValidator(_non_empty)] | None = None
    headers: tuple[PassThroughHeader, ...] = ()
    response: ResponseSpec | None = None
    direction: Literal["push"] = "push"

    @field_validator(*_EMPTY_ROUTE_KEYS, mode="before")
    @classmethod
    def _written(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            # `birth_date:` with nothing after it (or only a comment) reads as null: taken as
            # no such key, `minors: deny` had no birth date to act on, a share no subject to
            # record for an access request, a route without `fields` forwards its body as it
            # came, and one without `response` the partner's whole answer.
            raise ValueError(_EMPTY_ROUTE_KEYS[str(info.field_name)])
        return value

    @field_validator("direction", mode="before")
    @classmethod
    def _push_only(cls, value: object) -> object:
        if value == "pull":
            raise ValueError("pull routes are not supported yet; only push")
        return value

    @field_validator("headers")
    @classmethod
    def _unique_headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for name in value:
            if name.lower() in seen:
                raise ValueError(f"{name} is listed twice")
            seen.add(name.lower())
        return value

    @field_validator("content_types")
    @classmethod
    def _unique_types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a content type is listed twice")
        return value


class Contract(_Model):
    partner: Partner
    contract: ContractInfo
    upstream: Upstream
    purposes: Annotated[tuple[Purpose, ...], AfterValidator(_non_empty)]
    categories: tuple[str, ...]
    terms: Terms
    routes: Annotated[tuple[Route, ...], AfterValidator(_non_empty)]


def to_transform(spec: HashSpec | RedactSpec | MaskSpec | GeneralizeSpec) -> Transform:
    """The field filter's transform for one contract transform."""
    from gateway.transforms import GeneralizeBucket, GeneralizeYear, Hash, Mask, Redact

    match spec:
        case HashSpec():
            return Hash()
        case RedactSpec():
            return Redact()
        case MaskSpec():
            return Mask(keep_first=spec.keep_first, keep_last=spec.keep_last)
        case GeneralizeSpec(bucket=None):
            return GeneralizeYear()
        case GeneralizeSpec(bucket=int(size)):
            return GeneralizeBucket(size=size)
    raise TypeError(f"not a transform: {spec!r}")
