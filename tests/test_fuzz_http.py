"""Fuzzing what a caller or an operator types: request targets and headers through the running
gateway, the admin API's query strings, and the `logs` commands' options. Each gives a defined
refusal (a 4xx, exit 2) or an answer, never a 500 or a traceback.

Sized for CI; a campaign runs the same tests with many more examples (see tests/test_fuzz.py).
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

import orjson
import pytest
from conftest import Gateway, GatewayFactory, RawResponse, raw_request
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_sharelog_commands import HASH_KEY, KEY_ENV, T0, share

from gateway.cli import build_parser
from gateway.contractset import load_contract_set
from gateway.errors import GatewayError
from gateway.explain import RouteTextError, explain
from gateway.policy import Policy, compile_policy
from gateway.settings import Settings, ShareLogSettings
from gateway.sharelog import ShareOutcome
from gateway.sharelog.store import ShareLog

ADMIN = "gateway:admin"
SHARE_PARAMS: Final = [
    "partner",
    "purpose",
    "decision",
    "reason",
    "caller",
    "share_id",
    "since",
    "until",
    "subject",
    "limit",
    "cursor",
    "offset",
]
# Time expressions as `--since`/`--until` and `since=`/`until=` read them, valid and nearly so.
TIMES: Final = [
    "now",
    "30m",
    "24h",
    "7d",
    "2w",
    "0s",
    "9" * 30 + "d",
    "9" * 5000 + "s",
    "2025-03-01",
    "20250301",
    "2025-W09",
    "2025-W09-1",
    "2025-W53-7",
    "2025-02-30",
    "2025-03-01T09:00",
    "2025-03-01T09:00:00+08:00",
    "2025-03-01T09:00:00Z",
    "2025-03-01 09:00",
    "2025-03-01T24:00",
    "0001-01-01",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31",
    "9999-12-31T23:59:59-23:59",
    "2025-03-01T09:00:00+99:00",
    "7 d",
    " 7d",
    "7d ",
    "-7d",
    "+7d",
    "7D",
    "７d",
    "1_0d",
    "7.5h",
    "",
    " ",
    "\udcff",
    "\x00",
]
_TEXT = st.text(max_size=12) | st.text(
    st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udc80", "\ud800"]), max_size=6
)
_TIMES = st.sampled_from(TIMES) | _TEXT
_NUMBERS = st.sampled_from(
    ["0", "1", "100", "1000", "1001", "-1", "+1", " 1", "１", "1_0", "9" * 40, "0" * 50 + "5"]
)


# --- the `logs` commands ---------------------------------------------------------------------


@pytest.fixture
async def log_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A share log of a few shares about alice and bob, and the key its subjects are under."""
    monkeypatch.setenv(KEY_ENV, HASH_KEY)
    configured = Settings(
        share_log=ShareLogSettings(path=tmp_path / "share-log.sqlite", stdout=False)
    )
    share_log = await ShareLog.open(configured.share_log, HASH_KEY.encode())
    try:
        for n in range(4):
            await share_log.record(share(f"s-{n}", T0 + timedelta(hours=n)))
            await share_log.record_outcome(ShareOutcome(f"s-{n}", "delivered", 200, 1, 1.0))
        await share_log.record(share("s-9", T0, subjects=("bob",)))
    finally:
        await share_log.close()
    return configured


def _run(
    argv: list[str], configured: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of the command; argparse's usage errors included."""
    capsys.readouterr()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        exited = exc.code
    else:
        exited = None
    if exited is not None:
        out, err = capsys.readouterr()
        assert exited == 2
        assert "error:" in err, err
        return 2, out, ""
    code = args.handler(args, configured)
    assert isinstance(code, int)
    out, err = capsys.readouterr()
    return code, out, err


_CURSOR = re.compile(r"--cursor (\S+)")


def _a_cursor(configured: Settings, capsys: pytest.CaptureFixture[str], *more: str) -> str:
    code, out, err = _run(["logs", "query", "--limit", "1", *more], configured, capsys)
    found = _CURSOR.search(out + err)
    assert (code, found is not None) == (0, True), (code, err)
    return found.group(1) if found else ""


def _bytes_of(text: str) -> bytes:
    """UTF-8, lone surrogates included: a mutated text may hold any code point."""
    return text.encode(errors="surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(chars)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if kind == "replace" and at < len(chars):
            chars[at] = draw(st.characters())
        elif kind == "insert":
            chars.insert(at, draw(st.characters() | st.sampled_from(["=", "%", "\udcff"])))
        elif kind == "delete":
            del chars[at : at + 1]
        else:
            del chars[at:]
    return "".join(chars)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_logs_options_give_rows_or_a_usage_error(
    log_settings: Settings, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    command = data.draw(st.sampled_from(["query", "query", "summary", "subject"]))
    argv = ["logs", command]
    options = {
        "since": _TIMES,
        "until": _TIMES,
        "limit": _NUMBERS,
        "offset": _NUMBERS,
        "partner": _TEXT,
    }
    if command != "summary":
        options["cursor"] = mutated(_a_cursor(log_settings, capsys)) | _TEXT
    if command == "query":
        options["subject"] = st.sampled_from(["alice", "bob", " alice", "ALICE"]) | _TEXT
    for name in data.draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=4)):
        argv.append(f"--{name}={data.draw(options[name], label=name)}")
    if command == "subject":
        argv += ["--", data.draw(st.sampled_from(["alice", "bob"]) | _TEXT, label="subject")]
    code, out, err = _run(argv, log_settings, capsys)
    event(f"exit {code}")
    assert "Traceback" not in out + err
    if code == 2 and err:  # the command's own usage error; argparse's was checked by _run
        assert err.startswith(f"share-gateway logs {command}: "), err
        assert err.count("\n") == 1, err
    else:
        assert code in (0, 2), (code, err)


# --- the admin API ---------------------------------------------------------------------------

# Query strings are written as bytes: percent-encoded or raw, valid UTF-8 or not.
_PIECES = st.sampled_from(
    [b"%", b"%2", b"%zz", b"%FF", b"%C3", b"%00", b"+", b"&", b"=", b"==", b";", b"#", b"?"]
) | st.binary(min_size=1, max_size=3).filter(lambda raw: not set(raw) & set(b"\r\n #"))


@st.composite
def query_strings(draw: st.DrawFn, names: list[str], cursor: str | None = None) -> bytes:
    pairs: list[bytes] = []
    values = (
        st.sampled_from(["shared", "denied", "acme", "u-1", "alice", "credit_assessment", "7d"])
        | _TIMES
        | _NUMBERS
    )
    if cursor is not None:
        values = values | st.just(cursor) | mutated(cursor)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        name = draw(st.sampled_from(names) if draw(st.integers(0, 5)) else st.text(max_size=4))
        value = quote(draw(values), safe="", errors="surrogatepass").encode("ascii")
        pairs.append(quote(name, errors="surrogatepass").encode("ascii") + b"=" + value)
    raw = b"&".join(pairs)
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + draw(_PIECES) + raw[at:]
    return raw


@pytest.fixture
async def admin_gateway(make_gateway: GatewayFactory) -> Gateway:
    """A gateway with a share log of a few shares and a consent registry, one for every example."""
    gw = await make_gateway(durable_log=True)
    for n in range(3):
        body = {"applicant": {"user_id": f"u-{n}", "name": "W"}, "loan_amount": n}
        assert (await gw.share("POST", "/acme/v1/assess", json=body)).status == 200
    gw.partner.received.clear()
    return gw


async def _admin_get(gw: Gateway, target: bytes) -> tuple[int, object]:
    token = gw.token(ADMIN)
    answer = await raw_request(
        gw, "GET", target, headers=[("Authorization", f"Bearer {token}")], authorized=False
    )
    event(f"status {answer.status}")
    assert answer.status < 500, (answer.status, answer.body)
    body = answer.json() if answer.body else None
    if answer.status >= 400 and body is not None:
        assert isinstance(body, dict)
        assert isinstance(body["error"]["code"], str)
    return answer.status, body


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_shares_query_gives_a_page_or_a_400(
    admin_gateway: Gateway, data: st.DataObject
) -> None:
    gw = admin_gateway
    first = await gw.client.get(
        "/_gateway/shares?limit=1", headers={"Authorization": f"Bearer {gw.token(ADMIN)}"}
    )
    cursor = (await first.json())["next"]
    query = data.draw(query_strings(SHARE_PARAMS, cursor), label="query")
    status, body = await _admin_get(gw, b"/_gateway/shares?" + query)
    assert status in (200, 400), status
    if status == 200:
        assert isinstance(body, dict)
        assert isinstance(body["shares"], list)
        assert len(body["shares"]) <= body["limit"]
        # Every row is one the filters asked for (a `#` ends the query: the rest is a fragment).
        sent = query.partition(b"#")[0].decode("latin-1")
        for name, value in parse_qsl(sent, keep_blank_values=True):
            if name in ("partner", "purpose", "decision", "reason", "caller", "share_id"):
                assert all(row[name] == value for row in body["shares"]), (name, value)
    assert gw.partner.received == []


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=query_strings(["subject", "subject", "subject", "partner"]))
async def test_any_consent_query_gives_grants_or_a_400(
    admin_gateway: Gateway, query: bytes
) -> None:
    status, body = await _admin_get(admin_gateway, b"/_gateway/consent?" + query)
    assert status in (200, 400), status
    if status == 200:
        assert isinstance(body, dict)
        assert isinstance(body["grants"], list)


# --- request targets and headers through the gateway -----------------------------------------

# Routes of the base contract, each with the query parameters it names.
ROUTES: Final = {
    ("POST", "/v1/assess"): {"page"},
    ("GET", "/v1/reports/{}"): {"format"},
    ("PUT", "/v1/documents/{}"): set[str](),
    ("POST", "/v1/notes"): set[str](),
}
_TEMPLATES = {
    (method, re.compile(re.escape(path).replace(r"\{\}", r"[^/]+"))): names
    for (method, path), names in ROUTES.items()
}
TARGETS: Final = [
    b"/acme/v1/assess",
    b"/acme/v1/assess?page=2",
    b"/acme/v1/reports/r-1?format=pdf",
    b"/acme/v1/documents/d-1",
    b"/acme/v1/notes",
    b"/acme/v1/reports/%2e%2e",
    b"/acme/v1/reports/..%2f..%2fadmin",
    b"/acme//v1/assess",
    b"/acme/v1/assess/",
    b"/ACME/v1/assess",
    b"/acme/v1/assess;x=1",
    b"/acme/v1/assess%3Fpage=1",
    b"/acme/v1/reports/%00",
    b"/acme/v1/reports/%ff",
    b"/acme/v1/reports/\xc3\xa9",
    b"/acme/v1/reports/r?format=a&format=b",
    b"/acme/v1/reports/r?format",
    b"/acme/v1/reports/r?=x",
    b"/acme/v1/reports/r?format=%zz",
    b"/acme/v1/reports/r?page=1&format=1&secret=x",
    b"http://127.0.0.1/acme/v1/assess",
    b"//acme/v1/assess",
    b"*",
    b"/",
    b"/_gateway/../acme/v1/assess",
    b"/acme/../_gateway/health",
    b"/acme/v1/reports/r#frag",
]
HEADERS: Final = [
    ("Content-Type", "application/json"),
    ("Content-Type", "application/json; charset=latin-1"),
    ("Content-Type", "application/vnd.x+json"),
    ("Content-Type", "application/pdf"),
    ("Content-Type", "text/plain"),
    ("Content-Type", ""),
    ("Content-Type", "application/json, text/plain"),
    ("Content-Encoding", "gzip"),
    ("Content-Encoding", "identity"),
    ("Content-Encoding", "br"),
    ("Transfer-Encoding", "chunked"),
    ("Transfer-Encoding", "gzip, chunked"),
    ("Expect", "100-continue"),
    ("X-Share-Purpose", "credit_assessment"),
    ("X-Share-Purpose", "service_delivery"),
    ("X-Share-Purpose", ""),
    ("X-Consent-Token", "x.y.z"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Cookie", "a=b"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip"),
    ("Host", "partner.example"),
    ("Authorization", "Bearer x"),
    ("Connection", "keep-alive, Upgrade"),
    ("Upgrade", "websocket"),
    ("Range", "bytes=0-1"),
]
_HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=12)


def _final(answer: RawResponse) -> RawResponse:
    """The final answer after any interim `100 Continue` (`Expect: 100-continue`)."""
    while answer.status == 100:
        head, _, payload = answer.body.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }
        answer = RawResponse(int(status_line.split(" ")[1]), headers, payload)
    return answer


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


# Requests the contract allows, with parameters it does not name: half the draws start here.
_ALLOWED = st.sampled_from(
    [
        ("POST", "/acme/v1/assess?page={}&{}={}"),
        ("GET", "/acme/v1/reports/{}?format={}&{}={}"),
    ]
).flatmap(
    lambda shape: st.tuples(
        st.just(shape[0]),
        st.lists(st.text(st.characters(codec="utf-8"), max_size=6), min_size=4, max_size=4).map(
            lambda parts: shape[1].format(*(quote(p, safe="") or "x" for p in parts)).encode()
        ),
    )
)
_ANY = st.tuples(
    st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    st.sampled_from(TARGETS) | mutated(TARGETS[2].decode()).map(_bytes_of),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request=_ALLOWED | _ANY,
    piece=st.none() | st.none() | st.tuples(st.integers(min_value=0, max_value=40), _PIECES),
    headers=st.lists(
        st.sampled_from(HEADERS)
        | st.sampled_from(HEADERS)
        | st.tuples(st.sampled_from([h for h, _ in HEADERS]), _HEADER_TEXT)
        | st.tuples(_HEADER_TEXT, _HEADER_TEXT),
        max_size=2,
    ),
)
async def test_any_target_and_headers_give_a_4xx_or_a_filtered_share(
    gateway: Gateway,
    request: tuple[str, bytes],
    piece: tuple[int, bytes] | None,
    headers: list[tuple[str, str]],
) -> None:
    gw = gateway
    method, target = request
    gw.partner.received.clear()
    if piece is not None:
        at, raw = piece
        target = target[:at] + raw + target[at:]
    headers = [(name, value) for name, value in headers if name.strip() and ":" not in name]
    body = orjson.dumps({"applicant": {"user_id": "u-1", "name": "W", "phone": "1"}, "x": 1})
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    answer = _final(await raw_request(gw, method, target, headers=headers, body=body))
    code = answer.json()["error"]["code"] if answer.status >= 400 and answer.body else ""
    event(f"status {answer.status} {code}")
    assert answer.status < 500, (answer.status, answer.body)
    if answer.status >= 300 or method == "OPTIONS":
        assert gw.partner.received == []
        return
    [seen] = gw.partner.received
    path, _, query = seen.target.partition("?")
    allowed = [
        names for (m, p), names in _TEMPLATES.items() if m == seen.method and p.fullmatch(path)
    ]
    assert allowed, seen.target
    assert {name for name, _ in parse_qsl(query, keep_blank_values=True)} <= allowed[0]
    assert urlsplit(seen.target).path == path
    assert "cookie" not in seen.headers
    assert "x-forwarded-for" not in seen.headers
    if seen.body and seen.headers.get("Content-Type", "").endswith("json"):
        forwarded = seen.json()
        assert "x" not in forwarded
        assert "user_id" not in forwarded.get("applicant", {})


# --- `contracts explain` ---------------------------------------------------------------------

_BUNDLED = Path(__file__).resolve().parent.parent / "contracts"
EXPLAIN_ROUTES: Final = [
    ("acme-credit", "POST /v1/assess", "credit_assessment"),
    ("acme-credit", "POST /v1/assess/batch", "credit_assessment"),
    ("cloudvault", "PUT /v1/objects/o-1?owner_user_id=u-1", "service_delivery"),
    ("cloudvault", "POST /v1/objects/o-1/metadata", "service_delivery"),
    ("cloudvault", "GET /v1/objects/o-1?version=2", "service_delivery"),
    ("fixit", "POST /v1/diagnostics", "technical_maintenance"),
    ("fixit", "POST /v1/incidents", "security_monitoring"),
]


@st.composite
def explain_requests(draw: st.DrawFn) -> tuple[str, str, str]:
    partner_id, route, purpose = draw(st.sampled_from(EXPLAIN_ROUTES))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        purpose = draw(st.sampled_from(["service_delivery", "", "*"]) | _TEXT)
    return partner_id, _as_argv(draw(mutated(route))), _as_argv(purpose)


def _as_argv(text: str) -> str:
    """`text` as a command line argument holding its UTF-8 bytes arrives: a byte that is not
    UTF-8 as a lone surrogate of U+DC80-U+DCFF, never another."""
    return text.encode(errors="surrogatepass").decode(errors="surrogateescape")


@functools.cache
def bundled_policy() -> Policy:
    loaded, problems = load_contract_set(_BUNDLED, Settings())
    assert loaded is not None, problems
    return compile_policy(loaded, zone=ZoneInfo("UTC"), master_key=b"k" * 32, require_secrets=False)


_BODIES = st.sampled_from(
    [
        None,
        b"",
        b"{}",
        b'{"applicant": {"user_id": "u-1", "name": "W", "id_number": "110105198806052719"}}',
        b'{"applicants": [{"user_id": "u-1"}, {"user_id": "u-2"}], "note": "13800138000"}',
        b'{"device": {"serial": "x"}, "description": "call 13800138000"}',
    ]
).flatmap(lambda body: st.just(body) if body is None else mutated(body.decode()).map(_bytes_of))


@settings(max_examples=150, deadline=None)
@given(request=explain_requests(), body=_BODIES | st.binary(max_size=64))
def test_any_explain_request_gives_an_answer_a_denial_or_a_usage_error(
    request: tuple[str, str, str], body: bytes | None
) -> None:
    partner_id, route_text, purpose = request
    partner = bundled_policy().partners[partner_id]
    outcome: str | GatewayError
    try:
        outcome = explain(partner, route_text, purpose, body, now=T0, max_depth=64).route.label
    except RouteTextError as exc:
        outcome = str(exc)
        event("usage error")
    except GatewayError as error:
        outcome = error
        event(f"denied {error.status}")
    else:
        event("allowed")
    if isinstance(outcome, GatewayError):
        assert 400 <= outcome.status < 500, (outcome.status, outcome.code)
    else:
        assert outcome
        assert "\n" not in outcome
