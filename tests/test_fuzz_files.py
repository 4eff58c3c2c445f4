"""Fuzzing what an operator writes: contract files, the taxonomy, settings and their overrides,
and consent CSV files. Each gives its result or the gateway's own list of problems, never an
exception of Python's.

Sized for CI; a campaign runs the same tests with many more examples (see tests/test_fuzz.py).
"""

from __future__ import annotations

import codecs
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import yaml
from certs import Authority
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.consent import (
    CSV_HEADER,
    ConsentInputError,
    ConsentRegistry,
    ImportReport,
    apply_json,
    read_csv,
)
from gateway.contract import Problem
from gateway.contractset import load_contract_set
from gateway.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted((ROOT / "contracts").glob("*.yaml"))
CONTRACT_TEXTS = [path.read_text(encoding="utf-8") for path in BUNDLED]
SETTINGS_TEXT = (ROOT / "gateway.example.yaml").read_text(encoding="utf-8")
TAXONOMY_TEXT = """\
categories:
  - {name: health.allergy, sensitive: true}
  - {name: device.ticket}
  - name: device.serial
    sensitive: false
"""
LOAD_SETTINGS = Settings(allow_insecure_upstreams=False)

# Values spliced in place of a key's value or a whole line: YAML's own traps (tags, anchors,
# merge keys, sexagesimals, odd scalars), out-of-range numbers and dates, and the contract's
# own grammars (paths, transforms, URLs) written wrongly.
YAML_TOKENS: Final = [
    "",
    "~",
    "null",
    "yes",
    "0",
    "-1",
    "1e400",
    "-.inf",
    ".nan",
    "0x1F",
    "010",
    "1:30",
    "99999999999999999999999999",
    "2025-02-30",
    "0001-01-01",
    "9999-12-31",
    "2025-01-01T25:00:00",
    "&a x",
    "*a",
    "*missing",
    "!!python/object/apply:os.system ['true']",
    "!!binary aGVsbG8=",
    "!!timestamp 2025-01-01",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!custom x",
    "[" * 40,
    "{a: {b: {c: [1, [2, [3]]]}}}",
    "'unterminated",
    '"\\ud800"',
    '"\\x00"',
    '"\\u2028"',
    "\t",
    "? [a, b]",
    "<<: {x: 1}",
    "|",
    ">-",
    "中文",
    "a" * 3000,
    "[*a, *a, *a, *a]",
    "{}",
    "[]",
    "- - -",
    "---",
    "...",
    "%YAML 1.1",
    "http://x",
    "https://api.example:99999/",
    "https://[::1/",
    "https://user:pw@api.example/",
    "-",
    "{path: a..b, category: business.note}",
    "{path: '**', category: business.note}",
    "{path: 'a[].b[].c', category: business.note}",
    "{path: query., category: business.note}",
    "{mask: {keep_last: -1}}",
    "{mask: {keep_last: 99999999999999999999}}",
    "{generalize: {bucket: 0}}",
    "{generalize: year}",
    "hash",
    "/v1/{a}/{a}",
    "/v1/{",
    "GET",
    "TRACE",
    "identity.id_number",
    "account.password",
    "biometric.face",
]


def _lines_mutated(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        if not lines:
            lines = [draw(st.sampled_from(YAML_TOKENS)) + "\n"]
        at = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        kind = draw(
            st.sampled_from(["value", "value", "value", "delete", "repeat", "swap", "indent"])
        )
        line = lines[at]
        if kind == "value":
            key, colon, _ = line.partition(":")
            token = draw(st.sampled_from(YAML_TOKENS) | st.text(max_size=12))
            lines[at] = f"{key}{colon} {token}\n" if colon else f"{line.rstrip()} {token}\n"
        elif kind == "delete":
            del lines[at]
        elif kind == "repeat":
            lines.insert(at, line)
        elif kind == "swap":
            other = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        else:
            lines[at] = (
                "  " + line if draw(st.booleans()) else line.removeprefix("  ").removeprefix("\t")
            )
    return "".join(lines)


ODD_BYTES: Final = [b"\xef\xbb\xbf", b"\x00", b"\r", b"\t", b"\xff", b"\xed\xa0\x80"]


def _bytes_mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(out)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip" and at < len(out):
            out[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from(ODD_BYTES))
        elif kind == "delete":
            del out[at : at + draw(st.integers(min_value=1, max_value=16))]
        else:
            del out[at:]
    return bytes(out)


@st.composite
def yaml_files(draw: st.DrawFn, texts: list[str]) -> bytes:
    """A bundled file with lines and values changed, then perhaps bytes; or YAML's worst shapes."""
    shape = draw(
        st.sampled_from(["lines", "lines", "lines", "bytes", "both", "alias", "deep", "long path"])
    )
    text = draw(st.sampled_from(texts))
    if shape == "long path" and "path: " in text:
        # A field path as deep as a document may be, or far deeper.
        count = draw(st.integers(min_value=1, max_value=2000))
        segment = draw(st.sampled_from([".a", "[]", "[].a"]))
        return text.replace("path: ", "path: a" + segment * count, 1).encode()
    if shape == "alias":
        # Each level names the one before many times: a few lines, an exponential tree.
        width = draw(st.integers(min_value=2, max_value=12))
        levels = draw(st.integers(min_value=1, max_value=12))
        lines = ["a0: &a0 [x]"] + [
            f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels + 1)
        ]
        return (text + "\n" + "\n".join(lines) + "\n").encode()
    if shape == "deep":
        depth = draw(st.integers(min_value=1, max_value=3000))
        kind = draw(st.sampled_from(["[", "{a: ", "- "]))
        if kind == "- ":
            nested = "".join("  " * n + "-\n" for n in range(min(depth, 400)))
        else:
            nested = kind * depth + "1" + ("]" if kind == "[" else "}") * depth
        return (text + "\nextra: " + nested + "\n").encode()
    if shape in ("lines", "both"):
        text = _lines_mutated(draw, text)
    data = text.encode()
    if shape in ("bytes", "both"):
        data = _bytes_mutated(draw, data)
    return data


def _assert_problems_are_lines(problems: list[Problem], folder: Path) -> None:
    assert problems
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.file.startswith(str(folder)) or problem.file == "settings", problem
        assert problem.message
        assert "\n" not in str(problem), problem


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _load(top: Path, files: dict[str, bytes]) -> tuple[object, list[Problem]]:
    folder = top / "contracts"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    loaded, problems = load_contract_set(folder, LOAD_SETTINGS)
    if loaded is None:
        event("problems")
        _assert_problems_are_lines(problems, folder)
    else:
        event("loaded")
        assert problems == []
        assert set(loaded.contracts) <= {"acme-credit", "cloudvault", "fixit"} | {
            c.contract.partner.id for c in loaded.contracts.values()
        }
    return loaded, problems


def test_the_bundled_contracts_load() -> None:
    loaded, problems = load_contract_set(ROOT / "contracts", LOAD_SETTINGS)
    assert problems == []
    assert loaded is not None
    assert len(loaded.contracts) == len(BUNDLED)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=yaml_files(CONTRACT_TEXTS))
def test_mutated_contract_files_give_a_set_or_problems(folder: Path, data: bytes) -> None:
    _load(folder, {"partner.yaml": data})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=yaml_files([TAXONOMY_TEXT]))
def test_mutated_taxonomy_files_give_a_set_or_problems(folder: Path, data: bytes) -> None:
    _load(folder, {"_taxonomy.yaml": data, "acme.yaml": CONTRACT_TEXTS[0].encode()})


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_as_a_contract_file_give_problems(folder: Path, data: bytes) -> None:
    _load(folder, {"partner.yaml": data})


# --- a partner's TLS files ------------------------------------------------------------------

_PARTNER_CA, _SECOND_CA, _OUR_CA = (Authority(f"Fuzz {n} CA") for n in ("partner", "second", "our"))
_OURS = _OUR_CA.client("gateway-fuzz")
TLS_FILES: Final = {
    "ca.pem": _PARTNER_CA.cert_pem
    + b"# F\xc5\x91tan\xc3\xbas\xc3\xadtv\xc3\xa1ny\n"
    + _SECOND_CA.cert_pem,
    "ours.pem": _OURS.cert_pem,
    "ours.key": _OURS.key_pem,
}
_WITH_TLS = yaml.safe_load(CONTRACT_TEXTS[0])
_WITH_TLS["upstream"]["tls"] = {
    "ca_file": "ca.pem",
    "client_cert_file": "ours.pem",
    "client_key_file": "ours.key",
}
TLS_CONTRACT: Final = yaml.safe_dump(_WITH_TLS, allow_unicode=True).encode()
# Lines a PEM file is broken by, or carries between its blocks.
PEM_LINES: Final = [
    b"-----BEGIN CERTIFICATE-----\n",
    b"-----END CERTIFICATE-----\n",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
    b"Proc-Type: 4,ENCRYPTED\n",
    b"# \xe6\xa0\xb9\xe8\xaf\x81\xe4\xb9\xa6\n",
    b"\xff\xfe\n",
    b"\n",
    b"  ",
]


@st.composite
def tls_files(draw: st.DrawFn) -> dict[str, bytes]:
    """The three files with one to three of them damaged: bytes, lines, another's content."""
    files = dict(TLS_FILES)
    for name in draw(st.lists(st.sampled_from(sorted(files)), min_size=1, max_size=3, unique=True)):
        kind = draw(st.sampled_from(["bytes", "lines", "lines", "another"]))
        if kind == "bytes":
            files[name] = _bytes_mutated(draw, files[name])
        elif kind == "another":
            files[name] = b"".join(
                draw(st.lists(st.sampled_from(list(TLS_FILES.values())), max_size=3))
            )
        else:
            lines = files[name].splitlines(keepends=True)
            for _ in range(draw(st.integers(min_value=1, max_value=4))):
                at = draw(st.integers(min_value=0, max_value=len(lines)))
                if draw(st.booleans()) or not lines:
                    lines.insert(at, draw(st.sampled_from(PEM_LINES)))
                else:
                    del lines[min(at, len(lines) - 1)]
            files[name] = b"".join(lines)
    return files


def test_the_tls_files_as_made_load() -> None:
    # Else every example below would be refused for a reason of the fixture's own.
    with tempfile.TemporaryDirectory() as name:
        top = Path(name)
        (top / "contracts").mkdir()
        for file, data in {"partner.yaml": TLS_CONTRACT, **TLS_FILES}.items():
            (top / "contracts" / file).write_bytes(data)
        loaded, problems = load_contract_set(top / "contracts", LOAD_SETTINGS)
    assert problems == []
    assert loaded is not None


# A flipped byte may turn a name's common name into a country of several letters. cryptography
# reads it with a warning and OpenSSL takes it, as it takes the certificates with `C=USA` that
# CAs have issued: such a certificate is loaded, and the warning is the gateway's notice, never
# Python's (filterwarnings = error would fail the example).
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=tls_files())
def test_damaged_tls_files_give_a_set_or_problems_at_their_keys(
    folder: Path, files: dict[str, bytes]
) -> None:
    _, problems = _load(folder, {"partner.yaml": TLS_CONTRACT, **files})
    # What is wrong is said of the TLS section, never of another key or as an exception.
    assert all(problem.path.startswith("upstream.tls") for problem in problems), problems


# --- settings -------------------------------------------------------------------------------

SETTING_NAMES: Final = [
    "LISTEN_HOST",
    "LISTEN_PORT",
    "CONTRACTS_DIR",
    "JURISDICTION",
    "TIMEZONE",
    "ALLOW_INSECURE_UPSTREAMS",
    "CAP_SHARES",
    "AUTH_ISSUER",
    "AUTH_ALGORITHMS",
    "AUTH_LEEWAY_S",
    "AUTH_PUBLIC_KEY_FILE",
    "AUTH_JWKS_URL",
    "AUTH_HS256_SECRET_ENV",
    "AUTH_TOKEN_CACHE_SIZE",
    "CONSENT_ALGORITHMS",
    "CONSENT_ISSUER",
    "REGISTRY_PATH",
    "SHARE_LOG_PATH",
    "SHARE_LOG_DURABILITY",
    "SHARE_LOG_STDOUT",
    "SHARE_LOG_RETENTION_DAYS",
    "SHARE_LOG_BATCH_INTERVAL_MS",
    "SECRETS_HASH_KEY_ENV",
    "LIMITS_MAX_BODY_BYTES",
    "LIMITS_MAX_JSON_DEPTH",
    "LIMITS_MAX_CONNECTIONS",
    "HASH_KEY",
    "LISTN_PORT",
    "",
]
_ENV_VALUES = st.sampled_from(YAML_TOKENS) | st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), max_size=16
)
_NAMED = st.sampled_from(SETTING_NAMES).map(lambda name: "SHARE_GATEWAY_" + name)
_ENVIRON = st.dictionaries(
    _NAMED
    | _NAMED
    | _NAMED
    | st.text(st.characters(codec="ascii", exclude_characters="\x00="), max_size=6).map(
        lambda name: "SHARE_GATEWAY_" + name.upper()
    ),
    _ENV_VALUES,
    max_size=4,
)


def _settings_or_error(path: Path, environ: dict[str, str]) -> None:
    problems: list[str] = []
    try:
        load_settings(path, environ)
    except SettingsError as exc:
        problems = exc.problems
        event("refused")
        assert problems
    else:
        event("loaded")
    for problem in problems:
        assert problem, problems
        assert "\n" not in problem, problems


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=yaml_files([SETTINGS_TEXT]), environ=_ENVIRON)
def test_mutated_settings_give_settings_or_a_settings_error(
    folder: Path, data: bytes, environ: dict[str, str]
) -> None:
    path = folder / "gateway.yaml"
    path.write_bytes(data)
    _settings_or_error(path, environ)


@settings(max_examples=150, deadline=None)
@given(environ=_ENVIRON)
def test_any_overrides_give_settings_or_a_settings_error(
    folder: Path, environ: dict[str, str]
) -> None:
    path = folder / "empty.yaml"
    path.write_bytes(b"")
    _settings_or_error(path, environ)


# --- consent CSV ----------------------------------------------------------------------------

KEY = b"fuzz-consent-key-" * 2
_FIELD_VALUES = st.sampled_from(
    [
        "u-1",
        "acme",
        "credit_assessment",
        "2025-01-01",
        "2025-01-01T09:00:00+08:00",
        "2025-01-01T09:00",
        "2025-02-30",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+14:00",
        "20250101",
        "2025-W01-1",
        "",
        " ",
        '"',
        '""',
        "a,b",
        "\r\n",
        "\x00",
        "\ufeff",
        "\u2028",
        "Ａ",
        "x" * 300,
        "ref-1",
    ]
) | st.text(max_size=12)


@st.composite
def consent_files(draw: st.DrawFn) -> bytes:
    """A header (perhaps wrong) and rows of any text, quoted or not, in some encoding."""
    header = list(CSV_HEADER)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        header = draw(st.lists(_FIELD_VALUES, max_size=7))
    rows = [header, *draw(st.lists(st.lists(_FIELD_VALUES, max_size=8), max_size=6))]
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    quote_all = draw(st.booleans())
    lines = []
    for row in rows:
        cells = [
            '"' + cell.replace('"', '""') + '"'
            if quote_all or any(c in cell for c in ',"\r\n')
            else cell
            for cell in row
        ]
        # Sometimes broken by hand: a stray quote, a quote left open.
        if cells and draw(st.integers(min_value=0, max_value=7)) == 0:
            cells[0] = draw(st.sampled_from(['"', 'a"b', '"a"b', '"open']))
        lines.append(",".join(cells))
    text = ending.join(lines) + draw(st.sampled_from([ending, ""]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1", "gb18030"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at:]
    return data


def _assert_report(report: ImportReport) -> None:
    if report.ok:
        event("imported")
        assert report.problems == 0
    else:
        event("refused")
        assert (report.granted, report.withdrawn, report.unchanged) == (0, 0, 0)
        assert report.problems >= 1
        for error in report.errors:
            assert error.startswith("line ") or error.startswith("and "), error
            assert "\n" not in error, error


@pytest.fixture(scope="module")
def consent_registry(folder: Path) -> Iterator[ConsentRegistry]:
    with ConsentRegistry(folder / "consent.sqlite", KEY) as registry:
        yield registry


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=consent_files())
def test_any_consent_file_gives_counts_or_problems_by_line(
    consent_registry: ConsentRegistry, data: bytes
) -> None:
    _assert_report(consent_registry._import(read_csv(io.BytesIO(data))))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400))
def test_any_bytes_as_a_consent_file_give_counts_or_problems_by_line(
    consent_registry: ConsentRegistry, data: bytes
) -> None:
    _assert_report(consent_registry._import(read_csv(io.BytesIO(data))))


# The admin API's `POST /_gateway/consent` body, parsed: its grants hold any JSON value.
_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _FIELD_VALUES
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)
VALID_GRANT: Final = {
    "subject": "u-1",
    "partner": "acme",
    "purpose": "credit_assessment",
    "granted_at": "2025-01-01",
    "withdrawn_at": None,
    "reference": "ref-1",
}


@st.composite
def grants(draw: st.DrawFn) -> dict[str, object]:
    """A valid grant with up to three of its fields changed, dropped or added."""
    grant: dict[str, object] = dict(VALID_GRANT)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        name = draw(st.sampled_from([*CSV_HEADER, "extra", ""]))
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            grant.pop(name, None)
        else:
            grant[name] = draw(_JSON_VALUES)
    return grant


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.fixed_dictionaries({"grants": st.lists(grants(), max_size=3)}) | _JSON_VALUES)
def test_any_consent_body_gives_counts_or_problems_by_grant(
    consent_registry: ConsentRegistry, payload: object
) -> None:
    try:
        applied = apply_json(consent_registry, payload, {"acme": ("credit_assessment",)})
    except ConsentInputError as exc:
        problems = exc.problems
        event("refused")
    else:
        problems = []
        event("applied")
        assert set(applied) == {"granted", "withdrawn", "unchanged", "warnings"}
    for problem in problems:
        assert "\n" not in problem, problem
