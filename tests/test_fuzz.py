"""Fuzzing the body parser and the filter: any bytes give a defined 4xx or an allowed document.

The pure target is `bodies.decode` → `jsonbody.parse_json` → `FilterPlan.apply` with the
credit-assessment allow-list; the end-to-end target sends the same inputs through the running
gateway and checks what the partner received. Caller tokens of any header and claims are sent
through it too (their pure target is in tests/test_auth.py).
"""

from __future__ import annotations

import gzip
import re
import time
import zlib
from typing import Any

import orjson
import pytest
from conftest import Gateway, GatewayFactory, contract
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_auth import CHANGES, LEEWAY_S, Change, acceptable, changed_parts, names_a_caller
from tokens import sign_raw

from gateway.bodies import decode
from gateway.errors import BodyTooLarge, GatewayError
from gateway.fieldfilter import AllowRule, compile_plan
from gateway.jsonbody import JSONValue, parse_json
from gateway.pii import scan
from gateway.transforms import GeneralizeBucket, Hash, Mask

HASH_KEY = b"fuzz-partner-key"
MAX_BYTES = 4096
MAX_DEPTH = 8
REFUSALS = {400: "malformed_body", 413: "body_too_large", 415: "unsupported_media_type"}

# The allow-list of the credit-assessment route (tests/conftest.py), with one transform of each
# kind that takes any scalar.
RULES = [
    AllowRule("applicant.name", "identity.name"),
    AllowRule("applicant.id_number", "identity.id_number", Hash()),
    AllowRule("applicant.phone", "contact.phone", Mask(keep_last=4)),
    AllowRule("applicant.monthly_income", "financial.income", GeneralizeBucket(5000)),
    AllowRule("loan_amount", "business.transaction"),
    AllowRule("items[].amount", "business.transaction"),
    AllowRule("tags[]", "business.note"),
    AllowRule("meta.**", "business.note"),
]
PLAN = compile_plan(RULES)
# The same allow-list as a contract route, for the running gateway.
FUZZ_CONTRACT = contract(
    routes=[
        {
            "method": "POST",
            "path": "/v1/assess",
            "purpose": "credit_assessment",
            "subject": "applicant.user_id",
            "fields": [
                {"path": "applicant.name", "category": "identity.name"},
                {
                    "path": "applicant.id_number",
                    "category": "identity.id_number",
                    "transform": "hash",
                },
                {
                    "path": "applicant.phone",
                    "category": "contact.phone",
                    "transform": {"mask": {"keep_last": 4}},
                },
                {
                    "path": "applicant.monthly_income",
                    "category": "financial.income",
                    "transform": {"generalize": {"bucket": 5000}},
                },
                {"path": "loan_amount", "category": "business.transaction"},
                {"path": "items[].amount", "category": "business.transaction"},
                {"path": "tags[]", "category": "business.note"},
                {"path": "meta.**", "category": "business.note"},
            ],
        }
    ]
)

# Generic paths: object keys, and "[]" for any array element.
Path = tuple[str, ...]
LEAVES: dict[Path, str] = {
    ("applicant", "name"): "kept",
    ("applicant", "id_number"): "hash",
    ("applicant", "phone"): "mask",
    ("applicant", "monthly_income"): "bucket",
    ("loan_amount",): "kept",
    ("items", "[]", "amount"): "kept",
    ("tags", "[]"): "kept",
}
SUBTREES: set[Path] = {("meta",)}
PLACES: set[Path] = {leaf[:n] for leaf in (*LEAVES, *SUBTREES) for n in range(len(leaf))}
TRANSFORMED = {
    "hash": re.compile(r"[0-9a-f]{64}"),
    # All but the last four characters are `*`; those four are kept as sent, `*` included.
    "mask": re.compile(r"\**.{0,4}", re.DOTALL),
    "bucket": re.compile(r"-?[0-9]+--?[0-9]+"),
}


def assert_allowed(value: JSONValue, where: Path = ()) -> None:
    """Every scalar of `value` lies at an allowed place, transformed as declared; every object
    and array lies on the way to one."""
    if any(where[: len(tree)] == tree for tree in SUBTREES):
        return
    if isinstance(value, dict):
        assert where in PLACES, where
        for key, item in value.items():
            assert_allowed(item, (*where, key))
    elif isinstance(value, list):
        assert where in PLACES, where
        for item in value:
            assert_allowed(item, (*where, "[]"))
    else:
        action = LEAVES.get(where)
        assert action is not None, where
        if action in TRANSFORMED and value is not None:
            assert isinstance(value, str), (where, value)
            assert TRANSFORMED[action].fullmatch(value), (where, value)


def parse_and_filter(raw: bytes, coding: str = "identity") -> dict[str, JSONValue] | GatewayError:
    """The pure pipeline of a request body; a refusal is returned, anything else raised."""
    try:
        plain = decode(raw, coding, limit=MAX_BYTES, too_large=BodyTooLarge)
        doc = parse_json(plain, max_depth=MAX_DEPTH)
    except GatewayError as error:
        return error
    return PLAN.apply(doc, {}, hash_key=HASH_KEY, scanner=scan).document


def assert_defined(outcome: dict[str, JSONValue] | GatewayError) -> None:
    event("refused" if isinstance(outcome, GatewayError) else "filtered")
    if isinstance(outcome, GatewayError):
        assert REFUSALS.get(outcome.status) == outcome.code, (outcome.status, outcome.code)
    else:
        assert_allowed(outcome)
        assert orjson.loads(orjson.dumps(outcome)) == outcome


# --- strategies -----------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "applicant",
        "name",
        "id_number",
        "phone",
        "monthly_income",
        "user_id",
        "loan_amount",
        "items",
        "amount",
        "tags",
        "meta",
        "Name",
        "name ",
        "",
    ]
) | st.text(max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_SMALL = st.lists(_SCALARS, max_size=3) | st.dictionaries(_KEYS, _SCALARS, max_size=3)
# Up to three levels deep, which is cheap to draw; deeper nesting comes from the mutations.
_VALUES = (
    _SCALARS
    | _SMALL
    | st.lists(_SMALL, max_size=3)
    | st.dictionaries(_KEYS, _SCALARS | _SMALL, max_size=3)
)
# The route names its data subject `applicant.user_id`: most documents carry one.
_APPLICANTS = st.builds(
    lambda extra, user_id: {**extra, **user_id},
    st.dictionaries(_KEYS, _VALUES, max_size=5),
    st.fixed_dictionaries({}, optional={"user_id": st.text(min_size=1, max_size=8)}),
)
_DOCUMENTS = st.fixed_dictionaries(
    {"applicant": _APPLICANTS},
    optional={
        "loan_amount": _SCALARS,
        "items": st.lists(st.dictionaries(_KEYS, _VALUES, max_size=3), max_size=3),
        "tags": st.lists(_VALUES, max_size=3),
        "meta": _VALUES,
    },
)


@st.composite
def mutated_json(draw: st.DrawFn) -> bytes:
    """A valid document, serialised, then bytes flipped, inserted, deleted or repeated."""
    data = bytearray(orjson.dumps(draw(_DOCUMENTS)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "repeat"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from(SNIPPETS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        else:
            data[at:at] = data[at : at + draw(st.integers(min_value=1, max_value=16))]
    return bytes(data)


# Fragments that hit the parser's own refusals when spliced into a document.
SNIPPETS = [
    b'"',
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"NaN",
    b"1e400",
    b"123456789012345678901234567890",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xed\xa0\x80",
    b"[[[[[[[[[",
    b'{"a":1,"a":2}',
    b",",
    b"}",
]


@st.composite
def compressed(draw: st.DrawFn) -> tuple[bytes, str]:
    """A mutated document under gzip or deflate, sometimes padded to a bomb, sometimes corrupt."""
    plain = draw(mutated_json())
    if draw(st.booleans()):
        plain += b" " * draw(st.integers(min_value=0, max_value=2 * MAX_BYTES))
    coding = draw(st.sampled_from(["gzip", "deflate"]))
    data = bytearray(gzip.compress(plain) if coding == "gzip" else zlib.compress(plain))
    if draw(st.booleans()) and data:
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[at] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(data), coding


# --- the pure target ------------------------------------------------------------------------------


@settings(max_examples=450, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_a_refusal_or_an_allowed_document(raw: bytes) -> None:
    assert_defined(parse_and_filter(raw))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_json())
def test_mutated_documents_give_a_refusal_or_an_allowed_document(raw: bytes) -> None:
    assert_defined(parse_and_filter(raw))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compressed())
def test_compressed_bodies_give_a_refusal_or_an_allowed_document(case: tuple[bytes, str]) -> None:
    raw, coding = case
    assert_defined(parse_and_filter(raw, coding))


def test_the_checker_catches_what_the_filter_must_never_send() -> None:
    leaks: list[Any] = [
        {"applicant": {"user_id": "u-1"}},
        {"Applicant": {"name": "W"}},
        {"applicant": {"id_number": "110105198806052719"}},
        {"items": [{"amount": 1, "note": "x"}]},
        {"tags": [{"nested": 1}]},
        {"applicant": {"name": {"first": "W"}}},
    ]
    for leak in leaks:
        try:
            assert_allowed(leak)
        except AssertionError:
            continue
        raise AssertionError(f"the checker let {leak!r} through")
    assert_allowed({"applicant": {"name": "W", "id_number": "a" * 64}, "meta": {"x": [1, {}]}})


# --- through the running gateway ------------------------------------------------------------------


def _partner_saw_only_allowed_fields(gw: Gateway) -> None:
    [seen] = gw.partner.received
    assert seen.headers.getall("Content-Type") == ["application/json"]
    document = seen.json()
    assert isinstance(document, dict)
    assert_allowed(document)


_BODIES = mutated_json() | st.binary(max_size=256)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    """One gateway for every example of a run, with the pure target's byte and depth limits."""
    limits = {"max_body_bytes": MAX_BYTES, "max_json_depth": MAX_DEPTH}
    return await make_gateway([FUZZ_CONTRACT], settings={"limits": limits})


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=_BODIES,
    padding=st.sampled_from([0, 0, 0, MAX_BYTES]),
    coding=st.sampled_from(["identity", "gzip"]),
)
async def test_fuzzed_bodies_through_the_gateway(
    gateway: Gateway, raw: bytes, padding: int, coding: str
) -> None:
    gw = gateway
    gw.partner.received.clear()
    raw += b" " * padding  # trailing white space: the same document, over the byte limit
    body = gzip.compress(raw) if coding == "gzip" else raw
    headers = {"Content-Type": "application/json"}
    if coding != "identity":
        headers["Content-Encoding"] = coding
    response = await gw.share("POST", "/acme/v1/assess", data=body, headers=headers)
    event(f"status {response.status}")
    if response.status == 200:
        _partner_saw_only_allowed_fields(gw)
        assert gw.log.records[-1].decision == "shared"
    else:
        error = (await response.json())["error"]
        assert REFUSALS.get(response.status) == error["code"], error
        assert gw.partner.received == []
        assert gw.log.records[-1].reason == error["code"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=CHANGES)
async def test_fuzzed_tokens_through_the_gateway(gateway: Gateway, changes: list[Change]) -> None:
    gw = gateway
    gw.partner.received.clear()
    assert gw.runtime.verifier.leeway_s == LEEWAY_S
    now = time.time()
    header, payload = changed_parts(changes, now)
    token = sign_raw(header, payload, gw.key)
    response = await gw.share(
        "POST",
        "/acme/v1/assess",
        json={"applicant": {"user_id": "u-1"}, "loan_amount": 5},
        token=token,
    )
    scope = payload.get("scope")
    granted = isinstance(scope, str) and not {
        "share:acme:*",
        "share:acme:credit_assessment",
    }.isdisjoint(scope.split(" "))
    if acceptable(header, payload, now) and names_a_caller(payload):
        expected = (200, None) if granted else (403, "scope_denied")
    else:
        expected = (401, "invalid_token")
    event(f"status {expected[0]}")
    if response.status == 200:
        assert expected == (200, None)
        assert len(gw.partner.received) == 1
        assert gw.log.records[-1].decision == "shared"
    else:
        error = (await response.json())["error"]
        assert (response.status, error["code"]) == expected, error
        assert gw.partner.received == []
        assert gw.log.records[-1].reason == error["code"]
