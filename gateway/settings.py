"""Gateway settings: `gateway.yaml`, safe defaults, `SHARE_GATEWAY_<SECTION>_<KEY>` overrides."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from gateway.caps import EVERY_OTHER_PARTNER, share_of
from gateway.names import EnvName, PartnerId
from gateway.yamlfile import MAX_FILE_BYTES, YamlFileError, load_yaml, parse_yaml_bytes, printable

ENV_PREFIX = "SHARE_GATEWAY_"

# Algorithms a caller or consent token may be signed with. `none` and anything symmetric
# other than HS256 are absent on purpose.
AsymmetricAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
Algorithm = AsymmetricAlgorithm | Literal["HS256"]


# How long a request's head or body may take to arrive. A slowloris connection is held that
# long, and the drain at shutdown waits that long for a body still arriving (then the slowest
# contract's `timeout_s`, itself at most 300 s): beyond five minutes the value is a typo
# (15000 for 15), never a client worth waiting for.
MAX_READ_TIMEOUT_S = 300
# An idle keep-alive connection holds one of `max_connections`; beyond an hour it is only held.
MAX_KEEPALIVE_TIMEOUT_S = 3600
MAX_RETENTION_DAYS = 36_500
# The longest request line or header field, and the most header fields, a request may have.
MAX_HEAD_FIELD_BYTES = 1_048_576
MAX_HEADERS = 4096
# The JWKS is fetched every 5 minutes in any case (`auth.JWKS_MAX_AGE_S`), and that fetch
# restarts the interval: a longer one would stop an unknown kid from ever causing a fetch.
MAX_JWKS_REFRESH_MIN_INTERVAL_S = 300


def _no_nul(path: Path) -> Path:
    # The operating system takes a path up to its first NUL: Python refuses it at every use.
    if "\0" in str(path):
        raise ValueError("a path cannot hold a NUL character")
    return path


def _written(value: object) -> object:
    # Path("") is ".": an empty path (an override left blank) would name the settings folder,
    # and every use of it fail later with a message about something else.
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


FilePath = Annotated[Path, BeforeValidator(_written), AfterValidator(_no_nul)]

_RATIO = re.compile(r"([0-9]+)/([0-9]+)")


def _cap_share(value: object) -> Fraction:
    # Read exactly: 1/3 of a daily cap of 300 is 100, where the float 0.333... would give 99.
    if isinstance(value, bool):
        raise ValueError("true or false is not a share (YAML reads yes, on, no, off so)")
    if isinstance(value, int):
        share = Fraction(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("a share is a finite number")
        share = Fraction(repr(value))  # as written: 0.1 is 1/10, not the float's binary value
    elif isinstance(value, str) and (ratio := _RATIO.fullmatch(value)):
        try:
            numerator, denominator = (int(part) for part in ratio.groups())
        except ValueError as exc:
            # Python's own words would tell the operator to raise an interpreter limit.
            raise ValueError(
                f"n/d with more than {sys.get_int_max_str_digits()} digits in n or d"
            ) from exc
        if denominator == 0:
            raise ValueError("n/d with a denominator of 0 is no share")
        share = Fraction(numerator, denominator)
    else:
        raise ValueError("not a share: a decimal (0.5) or n/d with positive integers (1/3)")
    if not 0 < share <= 1:
        # 0 would share nothing and more than 1 more than was agreed: neither is a part.
        raise ValueError("a share is more than 0 and at most 1 (the whole cap)")
    return share


_PARTNER_ID: TypeAdapter[str] = TypeAdapter(PartnerId)


def _partner_or_every_other(value: str) -> str:
    if value == EVERY_OTHER_PARTNER:
        return value
    try:
        return _PARTNER_ID.validate_python(value)
    except ValidationError as exc:
        raise ValueError(
            "not a partner id (1-64 lower-case letters, digits and -, not starting or ending "
            'with -), nor "*" (every partner not named)'
        ) from exc


CapShare = Annotated[Fraction, BeforeValidator(_cap_share)]
CapShareKey = Annotated[str, AfterValidator(_partner_or_every_other)]


class _Section(BaseModel):
    # `.inf` would pass every `ge`/`gt` bound and switch a deadline off (`.nan` fails them only by
    # accident, with a message about the bound): no setting is ever infinite or not a number.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_number(cls, value: object, info: ValidationInfo) -> object:
        # Pydantic reads true as 1: `port: yes` (a boolean in YAML) listened on port 1, and
        # `body_read_timeout_s: on` cut bodies off after a second.
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if bool not in (annotation, *get_args(annotation)):
                raise ValueError("true or false is not a number (YAML reads yes, on, no, off so)")
        return value


class ListenSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value:
            # The server reads an empty host as every interface: a sidecar meant for loopback
            # (`SHARE_GATEWAY_LISTEN_HOST=` left blank) would take shares from the network.
            raise ValueError("must not be empty (every interface is written 0.0.0.0 or ::)")
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        try:
            socket.inet_aton(value)
        except OSError:
            pass
        else:
            # The resolver reads `0` as 0.0.0.0 and `127.1` as 127.0.0.1: a name that is an
            # address in another spelling would listen where nothing in the file says.
            raise ValueError(
                "an IPv4 address in a shorthand (0, 127.1, 0x7f.1): write its four decimal parts"
            )
        try:
            encoded = value.encode("idna")
        except UnicodeError as exc:  # found only when the server starts, as a traceback
            raise ValueError(
                "not an IP address or a host name (a label is empty or over 63 characters)"
            ) from exc
        if any(c <= 0x20 or c == 0x7F for c in encoded):
            raise ValueError("not an IP address or a host name")
        return value


class KeySettings(_Section):
    """Where the keys that sign tokens come from: exactly one source."""

    algorithms: tuple[Algorithm, ...] = ("RS256", "ES256")
    public_key_file: FilePath | None = None
    jwks_file: FilePath | None = None
    jwks_url: str | None = None
    hs256_secret_env: EnvName | None = None
    leeway_s: float = Field(default=30, ge=0, le=300)
    # At least a second: every token with an invented kid would otherwise fetch the JWKS again,
    # one fetch at a time, each waiting caller holding a pending-share slot.
    jwks_refresh_min_interval_s: float = Field(default=60, ge=1, le=MAX_JWKS_REFRESH_MIN_INTERVAL_S)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        sources = [
            name
            for name in ("public_key_file", "jwks_file", "jwks_url", "hs256_secret_env")
            if getattr(self, name) is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "exactly one of public_key_file, jwks_file, jwks_url, hs256_secret_env is required"
                + (f" (got {', '.join(sources)})" if sources else "")
            )
        symmetric = self.hs256_secret_env is not None
        if symmetric and set(self.algorithms) != {"HS256"}:
            raise ValueError("hs256_secret_env allows only algorithms: [HS256]")
        if not symmetric and "HS256" in self.algorithms:
            # An HS256 token verified with a public key as the secret is the classic key-confusion
            # attack: asymmetric key sources never admit a symmetric algorithm.
            raise ValueError("HS256 is only allowed with hs256_secret_env")
        if not self.algorithms:
            raise ValueError("algorithms must not be empty")
        return self


class AuthSettings(KeySettings):
    issuer: str
    audience: str
    token_cache_size: int = Field(default=10_000, ge=0)


class ConsentSettings(KeySettings):
    algorithms: tuple[Algorithm, ...] = ("RS256",)
    issuer: str | None = None
    audience: str | None = None


class ShareLogSettings(_Section):
    path: FilePath = Path("var/share-log.sqlite")
    durability: Literal["batched", "strict"] = "batched"
    stdout: bool = True
    # The cut is `now - retention_days`: past about 700,000 days it is before the year 1, and
    # `logs prune` failed on it. A century is longer than any law asks.
    retention_days: int = Field(default=1095, ge=1095, le=MAX_RETENTION_DAYS)
    batch_interval_ms: float = Field(default=5, gt=0, le=1000)
    batch_max_records: int = Field(default=512, ge=1)
    checkpoint_every: int = Field(default=1000, ge=1)


class RegistrySettings(_Section):
    path: FilePath = Path("var/consent.sqlite")


class SecretsSettings(_Section):
    hash_key_env: EnvName = "SHARE_GATEWAY_HASH_KEY"


class LimitsSettings(_Section):
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # orjson writes at most 254 levels: a deeper document could be read but not passed on.
    max_json_depth: int = Field(default=64, ge=1, le=254)
    max_response_bytes: int = Field(default=10_485_760, ge=1)
    max_query_params: int = Field(default=64, ge=0)
    body_read_timeout_s: float = Field(default=15, gt=0, le=MAX_READ_TIMEOUT_S)
    header_read_timeout_s: float = Field(default=10, gt=0, le=MAX_READ_TIMEOUT_S)
    keepalive_timeout_s: float = Field(default=15, ge=0, le=MAX_KEEPALIVE_TIMEOUT_S)
    max_connections: int = Field(default=1024, ge=1)
    max_pending_requests: int = Field(default=512, ge=1)
    # Connections to partners: open at once (in use or idle), and in use to one origin. The
    # second below the first keeps partners that hang from holding every connection.
    max_upstream_connections: int = Field(default=256, ge=1)
    # Unset: a quarter of the ceiling (64 of 256), so that lowering the ceiling alone is valid.
    max_upstream_connections_per_origin: int | None = Field(default=None, ge=1)
    # aiohttp's parser takes these as machine words: past 2**64 it refuses every connection
    # (logged, never answered) while the gateway reports itself started. A head that large is no
    # caller's: the bounds stop a typo long before.
    max_line_size: int = Field(default=8190, ge=256, le=MAX_HEAD_FIELD_BYTES)
    max_field_size: int = Field(default=8190, ge=256, le=MAX_HEAD_FIELD_BYTES)
    max_headers: int = Field(default=64, ge=8, le=MAX_HEADERS)

    @model_validator(mode="after")
    def _origin_cap_within_ceiling(self) -> Self:
        per_origin = self.max_upstream_connections_per_origin
        if per_origin is not None and per_origin > self.max_upstream_connections:
            raise ValueError(
                f"max_upstream_connections_per_origin ({per_origin})"
                f" must not exceed max_upstream_connections ({self.max_upstream_connections})"
            )
        return self

    @property
    def upstream_connections_per_origin(self) -> int:
        per_origin = self.max_upstream_connections_per_origin
        return max(1, self.max_upstream_connections // 4) if per_origin is None else per_origin


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    listen: ListenSettings = ListenSettings()
    contracts_dir: FilePath = Path("contracts")
    jurisdiction: str = Field(default="CN", pattern=r"^[A-Z]{2}$")
    timezone: str = "Asia/Shanghai"
    allow_insecure_upstreams: bool = False
    auth: AuthSettings | None = None
    consent: ConsentSettings | None = None
    registry: RegistrySettings = RegistrySettings()
    share_log: ShareLogSettings = ShareLogSettings()
    secrets: SecretsSettings = SecretsSettings()
    limits: LimitsSettings = LimitsSettings()
    # This gateway's part of each partner's agreed rate and daily caps, by partner id (`*`:
    # every partner not named); the whole cap where none applies.
    cap_shares: dict[CapShareKey, CapShare] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            # Not echoed: an override's value is never shown, whatever it holds.
            raise ValueError("unknown time zone (an IANA name, such as Asia/Shanghai)") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def cap_share(self, partner_id: str) -> Fraction:
        """The part of `partner_id`'s agreed caps this gateway enforces."""
        return share_of(self.cap_shares, partner_id)


class SettingsError(Exception):
    """The settings file or an override is invalid; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        # A key of the file may hold a line break or an escape sequence: one line each, still.
        problems = [printable(problem) for problem in problems]
        super().__init__("\n".join(problems))
        self.problems = problems


def _section_models() -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        for choice in (field.annotation, *get_args(field.annotation)):
            if isinstance(choice, type) and issubclass(choice, BaseModel):
                models[name] = choice
    return models


_SECTION_MODELS = _section_models()
# Longest names first: were there ever a `share` section, `SHARE_GATEWAY_SHARE_LOG_PATH` would
# still be `share_log.path`.
_SECTIONS = tuple(sorted(_SECTION_MODELS, key=len, reverse=True))
_SCALARS = tuple(name for name in Settings.model_fields if name not in _SECTION_MODELS)

Target = tuple[str] | tuple[str, str]

# Kubernetes gives every pod `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_8080_TCP` and the like for
# each Service in its namespace, so a Service named `share-gateway` (or `share-gateway-consent`)
# puts variables under the prefix that no operator wrote.
_SERVICE_LINK_SUFFIX = re.compile(
    r"_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)


def _is_service_link(variable: str, environ: Mapping[str, str]) -> bool:
    # Kubernetes sets `<SERVICE>_SERVICE_HOST` with every other link variable: without it,
    # `SHARE_GATEWAY_LISTN_PORT` is a misspelt override, not a Service's port.
    return any(
        _SERVICE_LINK_SUFFIX.fullmatch(variable, i) and f"{variable[:i]}_SERVICE_HOST" in environ
        for i in range(len(ENV_PREFIX) - 1, len(variable))
        if variable[i] == "_"
    )


# Most likely a secret's variable (a contract's token, say) that nothing names, or a misspelling.
_NO_SUCH_SETTING = (
    "no such setting (a secret's variable is named like an override only when "
    "secrets.hash_key_env or an hs256_secret_env names it)"
)


def _target(variable: str) -> Target | None:
    """The setting `SHARE_GATEWAY_<SECTION>_<KEY>` or `SHARE_GATEWAY_<KEY>` overrides, if any."""
    if not variable.startswith(ENV_PREFIX):
        return None
    rest = variable[len(ENV_PREFIX) :].lower()
    if rest in _SCALARS:
        return (rest,)
    for section in _SECTIONS:
        if rest.startswith(section + "_"):
            return (section, rest[len(section) + 1 :])
    return None


def _field(target: Target) -> FieldInfo | None:
    if len(target) == 1:
        return Settings.model_fields.get(target[0])
    return _SECTION_MODELS[target[0]].model_fields.get(target[1])


def _secret_variables(raw: Mapping[str, Any], environ: Mapping[str, str]) -> frozenset[str]:
    """The variables settings name as holding a secret (`hash_key_env`, `hs256_secret_env`).

    Their names are the operator's choice, and may well read as an override
    (`SHARE_GATEWAY_SECRETS_HASH_KEY`): taken as one, the secret would stop start-up as an
    unknown setting, or be parsed, or be taken as a setting's value.
    """
    named: set[str] = set()
    for section, model in _SECTION_MODELS.items():
        in_file = raw.get(section)
        for key, field in model.model_fields.items():
            if key.endswith("_env"):
                file_value = in_file.get(key) if isinstance(in_file, dict) else None
                named.update(v for v in (field.default, file_value) if isinstance(v, str))
    # An override of such a name counts as well (the file's name is kept too: that variable
    # may still hold the secret it held before the override was set).
    for variable, text in environ.items():
        target = _target(variable)
        if variable not in named and target is not None and target[-1].endswith("_env"):
            named.add(text)
    return frozenset(named)


def _apply_env(
    raw: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[Target, str], list[str]]:
    """Overlay `SHARE_GATEWAY_<SECTION>_<KEY>` variables; return where each one went, and the
    problems of those that could not be read.

    Values are taken as text, which the settings' types convert (`9090`, `true`); only a
    setting that takes a list parses its value, as strict YAML (`[RS256, ES256]`). A variable
    that settings name as a secret's source is never an override, whatever its name, nor is a
    Kubernetes Service's link variable; any other variable under the prefix must name a
    setting, so a misspelt one stops start-up rather than leave the setting as it was. No
    value is ever echoed in a problem.
    """
    secrets = _secret_variables(raw, environ)
    origins: dict[Target, str] = {}
    problems: list[str] = []
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in secrets:
            continue
        target = _target(variable)
        field = _field(target) if target is not None else None
        if target is None or field is None:
            if not _is_service_link(variable, environ):
                problems.append(f"{variable}: {_NO_SUCH_SETTING}")
            continue
        try:
            value = _env_value(text, field)
        except ValueError as exc:
            problems.append(f"{variable}: {exc}")
            continue
        origins[target] = variable
        if len(target) == 1:
            raw[target[0]] = value
        else:
            section, key = target
            current = raw.get(section)
            raw[section] = {**(current if isinstance(current, dict) else {}), key: value}
    return origins, problems


def _env_value(text: str, field: FieldInfo | None) -> object:
    annotation = field.annotation if field is not None else None
    origins = {get_origin(a) for a in (annotation, *get_args(annotation))}
    if dict in origins:
        return _env_yaml(text, dict, "a mapping", '{"*": 1/3, acme: 0.5}')
    if not origins & {tuple, list}:
        return text
    return _env_yaml(text, list, "a list", "[A, B]")


def _env_yaml(text: str, kind: type[object], what: str, example: str) -> object:
    try:
        value = load_yaml(text)
    except YamlFileError as exc:
        raise ValueError(
            f"not {what} YAML reads (strictly, as the file): write it as {example}"
        ) from exc
    if not isinstance(value, kind):
        raise ValueError(f"not {what}: write it as {example}")
    return value


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def rel(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    update: dict[str, Any] = {
        "contracts_dir": rel(settings.contracts_dir),
        "share_log": settings.share_log.model_copy(update={"path": rel(settings.share_log.path)}),
        "registry": settings.registry.model_copy(update={"path": rel(settings.registry.path)}),
    }
    for name in ("auth", "consent"):
        section: KeySettings | None = getattr(settings, name)
        if section is None:
            continue
        files = {
            key: rel(value)
            for key in ("public_key_file", "jwks_file")
            if (value := getattr(section, key)) is not None
        }
        update[name] = section.model_copy(update=files)
    return settings.model_copy(update=update)


def _read_file(path: Path) -> object:
    """The settings file, parsed as a contract is: strictly (a repeated key, `010` or `1:30` is
    an error, never a silent choice between two readings), at most 1 MiB, and with problems
    that tell where, never a value (the file holds the names of secrets, and a secret may be
    pasted in their place). Unlike a contract it is read once, at the operator's word: a pipe
    (`--config <(envsubst < gateway.yaml)`) or `/dev/null` is read as given."""
    try:
        with path.open("rb") as file:
            document = parse_yaml_bytes(file.read(MAX_FILE_BYTES + 1))
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except YamlFileError as exc:
        raise SettingsError(
            [
                f"{path}: {key}: {message}" if key else f"{path}: {message}"
                for key, message in exc.problems
            ]
        ) from exc
    return document


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `path` (or `gateway.yaml` if present), then the environment.

    Relative paths are resolved against the settings file's folder, or the working directory
    when there is no file, or it is not a regular file: a pipe's path
    (`--config <(envsubst < gateway.yaml)` reads `/dev/fd/63`) says nothing of where the
    contracts are.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is None and Path("gateway.yaml").is_file():
        path = Path("gateway.yaml")
    if path is not None:
        loaded = _read_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError([f"{path}: the top level must be a mapping"])
        raw = loaded or {}
        resolved = path.resolve()
        if resolved.is_file():
            base = resolved.parent
    origins, problems = _apply_env(raw, environ)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        where = str(path) if path is not None else "settings"
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            # A value from the environment is reported under its variable, not the file.
            variable = next((v for k, v in origins.items() if loc[: len(k)] == k), None)
            place = f"{variable}" if variable else f"{where}: {'.'.join(loc) or '(top)'}"
            problems.append(f"{place}: {err['msg']}")
        raise SettingsError(problems) from exc
    if problems:
        raise SettingsError(problems)
    return _resolve_paths(settings, base)
