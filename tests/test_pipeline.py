"""End to end through the gateway: what the partner received for each kind of request."""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import hashlib
import hmac
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, tzinfo
from datetime import time as clock
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import orjson
import pytest
import structlog
import yaml
from aiohttp import ClientError, web
from conftest import (
    BASE_CONTRACT,
    HASH_KEY,
    PARTNER_HEADERS,
    PARTNER_TOKEN,
    Gateway,
    GatewayFactory,
    assert_refused,
    contract,
    raw_request,
)
from multidict import CIMultiDict
from tokens import SigningKey, claims, mint, rsa_key, sign_raw, unsigned, write_jwks

from gateway import pipeline
from gateway.app import close_runtime
from gateway.errors import MalformedBody, ShareLogUnavailable
from gateway.jsonbody import JSONValue, parse_json
from gateway.keys import keyed_hash, partner_hash_key
from gateway.metrics import REGISTRY
from gateway.pii import scan
from gateway.pipeline import response_headers
from gateway.runtime import Runtime
from gateway.sharelog.memory import MemoryShareLog
from gateway.sharelog.record import ShareOutcome, ShareRecord

SCOPE = "share:acme:*"
ASSESS = "/acme/v1/assess"
ID_NUMBER = "110105198806052719"
JSON = {"Content-Type": "application/json"}
SMALL_BODY_LIMIT = {"limits": {"max_body_bytes": 1000}}


def applicant(**extra: Any) -> dict[str, Any]:
    """A body /v1/assess accepts (it names its data subject), plus `extra`."""
    return {"applicant": {"user_id": "u-1", "name": "Wang"}, "loan_amount": 5000, **extra}


def routes(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The base contract's routes followed by `extra` ones."""
    base: list[dict[str, Any]] = BASE_CONTRACT["routes"]
    return [*base, *extra]


async def test_allowed_share_reaches_the_partner_filtered(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST",
        "/acme/v1/assess?page=2&debug=1",
        json={
            "applicant": {
                "user_id": "u-1",
                "name": "Wang",
                "id_number": ID_NUMBER,
                "phone": "13800138000",
                "email": "w@example.com",
                "monthly_income": 18000,
            },
            "loan_amount": 5000,
            "secret": {"x": 1},
        },
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.method == "POST"
    assert seen.target == "/v1/assess?page=2"
    assert seen.json() == {
        "applicant": {
            "name": "Wang",
            "id_number": keyed_hash(partner_hash_key(HASH_KEY.encode(), "acme"), ID_NUMBER),
            "phone": "*******8000",
            "monthly_income": 18000,
        },
        "loan_amount": 5000,
    }
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Content-Length"] == str(len(seen.body))
    assert seen.headers["Authorization"] == f"Bearer {PARTNER_TOKEN}"
    assert seen.headers["X-Share-Purpose"] == "credit_assessment"
    assert seen.headers["X-Data-Retention-Days"] == "30"
    assert seen.headers["X-Data-Onward-Transfer"] == "prohibited"
    share_id = response.headers["X-Share-Id"]
    assert seen.headers["X-Share-Id"] == share_id
    assert response.headers["Server"] == "share-gateway"
    assert await response.json() == {}  # the partner's {"ok": true} has no field the route allows
    [record] = gw.log.records
    assert (record.share_id, record.decision, record.reason) == (share_id, "shared", "shared")
    assert (record.partner, record.purpose, record.route) == (
        "acme",
        "credit_assessment",
        "POST /v1/assess",
    )
    assert record.caller == "svc-billing"
    assert record.bytes_sent == len(seen.body)
    assert record.records == 1
    assert len(record.subject_refs) == 1
    assert record.fields_sent == (
        "applicant.id_number",
        "applicant.monthly_income",
        "applicant.name",
        "applicant.phone",
        "loan_amount",
        "query.page",
    )
    assert record.fields_transformed == ("applicant.id_number", "applicant.phone")
    assert record.fields_stripped == (
        "applicant.email",
        "applicant.user_id",
        "query.debug",
        "secret",
    )
    assert record.categories_sent == (
        "business.reference",
        "business.transaction",
        "contact.phone",
        "financial.income",
        "identity.id_number",
        "identity.name",
    )
    [outcome] = gw.log.outcomes
    assert (outcome.share_id, outcome.outcome, outcome.upstream_status) == (
        share_id,
        "delivered",
        200,
    )


@pytest.mark.parametrize(
    ("location", "cross_border", "mechanism"),
    [
        ("CN", {"allowed": False}, None),
        ("SG", {"allowed": True, "mechanism": "standard_contract"}, "standard_contract"),
    ],
    ids=["home", "abroad"],
)
async def test_the_share_record_names_where_the_data_went_and_the_transfer_mechanism(
    make_gateway: GatewayFactory,
    location: str,
    cross_border: dict[str, Any],
    mechanism: str | None,
) -> None:
    gw = await make_gateway(
        [contract(upstream={"location": location}, terms={"cross_border": cross_border})]
    )
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200, await response.text()
    [record] = gw.log.records
    assert (record.upstream_location, record.cross_border_mechanism) == (location, mechanism)


# --- 1. every row of the SPEC 4 table, and the order of the checks -----------------------------


async def test_unknown_partner_is_404_before_any_token_check(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.client.post(
        "/nobody/v1/assess",
        data=orjson.dumps(applicant()),
        headers={**JSON, "X-Share-Purpose": "credit_assessment"},
    )
    await assert_refused(gw, response, 404, "unknown_partner")
    assert "WWW-Authenticate" not in response.headers
    assert gw.log.records[-1].partner is None


async def test_unknown_partner_with_a_bad_token_is_still_404(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", "/nobody/v1/assess", json=applicant(), token="not-a-jwt")
    await assert_refused(gw, response, 404, "unknown_partner")


async def test_partner_ids_are_case_sensitive(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", "/ACME/v1/assess", json=applicant())
    await assert_refused(gw, response, 404, "unknown_partner")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer-less token", "Bearer a.b.c"],
)
async def test_missing_or_malformed_authorization_is_401(
    make_gateway: GatewayFactory, authorization: str | None
) -> None:
    gw = await make_gateway()
    headers = {**JSON, "X-Share-Purpose": "credit_assessment"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await gw.client.post(ASSESS, data=orjson.dumps(applicant()), headers=headers)
    await assert_refused(gw, response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_scope_for_another_purpose_or_partner_is_scope_denied(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    for scope in ("share:acme:service_delivery", "share:other:*", "share:acme", "gateway:admin"):
        response = await gw.share("POST", ASSESS, json=applicant(), scope=scope)
        await assert_refused(gw, response, 403, "scope_denied")
    response = await gw.share(
        "POST", ASSESS, json=applicant(), scope="share:acme:credit_assessment"
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/acme/v1/unknown"),
        ("GET", ASSESS),
        ("DELETE", ASSESS),
        ("PATCH", ASSESS),
        ("POST", "/acme/v1/assess/extra"),
        ("POST", "/acme/v1"),
        ("POST", "/acme/V1/assess"),
        ("POST", "/acme/v1/Assess"),
    ],
)
async def test_undeclared_route_or_method_is_route_denied(
    make_gateway: GatewayFactory, method: str, path: str
) -> None:
    gw = await make_gateway()
    body = None if method in {"GET", "DELETE"} else applicant()
    response = await gw.share(method, path, json=body)
    await assert_refused(gw, response, 403, "route_denied")


@pytest.mark.parametrize(
    "purpose",
    [
        None,  # the header is missing
        "",
        "marketing",  # not approved in the contract (the token's scope is share:acme:*)
        "service_delivery",  # approved, but /v1/assess is declared for credit_assessment
        "Credit_Assessment",
    ],
)
async def test_missing_unapproved_or_mismatched_purpose_is_purpose_denied(
    make_gateway: GatewayFactory, purpose: str | None
) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, json=applicant(), purpose=purpose)
    await assert_refused(gw, response, 403, "purpose_denied")


@pytest.mark.parametrize("purpose", [None, "", "marketing", "credit_assessment"])
# `share:acme2:*` is another partner's whose id merely starts with this one's (`acme`).
@pytest.mark.parametrize("scope", ["share:other:*", "share:acme2:*"])
async def test_a_token_for_another_partner_is_scope_denied_whatever_the_purpose(
    make_gateway: GatewayFactory, purpose: str | None, scope: str
) -> None:
    # SPEC 4 judges the scope first: a missing purpose does not hide that the token grants
    # nothing of this partner's.
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, json=applicant(), purpose=purpose, scope=scope)
    await assert_refused(gw, response, 403, "scope_denied")


@pytest.mark.parametrize(
    ("purpose", "scope", "code", "recorded"),
    [
        # The header is the caller's free text: refused, it is never kept in the share log.
        ("13800138000 Zhang San", SCOPE, "purpose_denied", None),
        ("13800138000", "share:acme:13800138000", "purpose_denied", None),
        ("13800138000", "share:acme:credit_assessment", "scope_denied", None),
        # A purpose the contract approves is a name it defines: kept, also when refused.
        ("service_delivery", SCOPE, "purpose_denied", "service_delivery"),
        ("service_delivery", "share:acme:credit_assessment", "scope_denied", "service_delivery"),
    ],
)
async def test_a_refused_purpose_is_recorded_only_as_a_name_the_contract_approves(
    make_gateway: GatewayFactory, purpose: str, scope: str, code: str, recorded: str | None
) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, json=applicant(), purpose=purpose, scope=scope)
    await assert_refused(gw, response, 403, code)
    assert gw.log.records[-1].purpose == recorded


@pytest.mark.parametrize(
    "dates",
    [
        {"status": "suspended"},
        {"status": "terminated"},
        {"effective": "2020-01-01", "expires": "2021-12-31"},  # expired
        {"effective": "2098-01-01", "expires": "2099-12-31"},  # not yet in force
    ],
    ids=["suspended", "terminated", "expired", "not_yet_effective"],
)
async def test_inactive_contract_is_refused(
    make_gateway: GatewayFactory, dates: dict[str, str]
) -> None:
    gw = await make_gateway([contract(contract=dates)])
    response = await gw.share("POST", ASSESS, json=applicant())
    await assert_refused(gw, response, 403, "contract_inactive")
    assert gw.log.records[-1].contract_id == "DPA-1"


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
async def test_a_contract_without_end_in_sight_is_in_force(
    make_gateway: GatewayFactory, zone: str
) -> None:
    gw = await make_gateway(
        [contract(contract={"effective": "0001-01-01", "expires": "9999-12-31"})],
        settings={"timezone": zone},
    )
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200, await response.text()


async def test_body_over_the_limit_by_content_length_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    body = orjson.dumps(applicant(meta={"pad": "x" * 1200}))
    response = await gw.share("POST", ASSESS, data=body, headers=JSON)
    await assert_refused(gw, response, 413, "body_too_large")


async def test_chunked_body_over_the_limit_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"applicant": {"user_id": "u-1"}, "meta": {"pad": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}}'

    response = await gw.client.post(
        ASSESS,
        data=chunks(),
        headers={
            **JSON,
            "Authorization": f"Bearer {gw.token()}",
            "X-Share-Purpose": "credit_assessment",
        },
    )
    await assert_refused(gw, response, 413, "body_too_large")


async def test_chunked_body_within_the_limit_is_shared(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"applicant": {"user_id": "u-1",'
        yield b' "name": "Wang"}, "loan_amount": 7}'

    response = await gw.client.post(
        ASSESS,
        data=chunks(),
        headers={
            **JSON,
            "Authorization": f"Bearer {gw.token()}",
            "X-Share-Purpose": "credit_assessment",
        },
    )
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.body == b'{"applicant":{"name":"Wang"},"loan_amount":7}'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/json",
        "application/json; charset=utf-16",
        "application/json; charset=utf-7",
        "application/json; charset=latin-1",
        "application/json; boundary=x",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/+json",
        "application/json, text/plain",
        "json",
    ],
)
async def test_non_json_content_type_is_415(
    make_gateway: GatewayFactory, content_type: str
) -> None:
    gw = await make_gateway()
    body = orjson.dumps(applicant())
    response = await gw.share("POST", ASSESS, data=body, headers={"Content-Type": content_type})
    await assert_refused(gw, response, 415, "unsupported_media_type")


async def test_missing_content_type_is_415(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.client.post(
        ASSESS,
        data=orjson.dumps(applicant()),
        headers={"Authorization": f"Bearer {gw.token()}", "X-Share-Purpose": "credit_assessment"},
        skip_auto_headers=["Content-Type"],
    )
    await assert_refused(gw, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
async def test_json_content_types_are_accepted_and_sent_as_application_json(
    make_gateway: GatewayFactory, content_type: str
) -> None:
    gw = await make_gateway()
    body = orjson.dumps(applicant())
    response = await gw.share("POST", ASSESS, data=body, headers={"Content-Type": content_type})
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.headers.getall("Content-Type") == ["application/json"]


async def test_upstream_error_and_timeout_are_502_and_504(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(upstream={"timeout_s": 0.3})])
    gw.partner.reply.delay_s = 1.0
    response = await gw.share("POST", ASSESS, json=applicant())
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (504, "upstream_timeout")
    assert response.headers["X-Share-Id"] == body["error"]["share_id"]
    await gw.partner.close()  # now nothing listens on the partner's port
    response = await gw.share("POST", ASSESS, json=applicant())
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (502, "upstream_error")
    assert [o.outcome for o in gw.log.outcomes] == ["timeout", "error"]


async def test_a_bad_token_is_401_before_an_undeclared_route(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", "/acme/v1/nowhere", json=applicant(), token="garbage")
    await assert_refused(gw, response, 401, "invalid_token")


async def test_a_bad_scope_is_403_before_a_bad_body(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST",
        ASSESS,
        data=b'{"a": 1, "a": 2',
        headers={"Content-Type": "text/plain"},
        scope="share:other:*",
    )
    await assert_refused(gw, response, 403, "scope_denied")


async def test_an_undeclared_route_is_403_before_a_bad_body(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST", "/acme/v1/other", data=b"{", headers={"Content-Type": "text/plain"}
    )
    await assert_refused(gw, response, 403, "route_denied")


async def test_an_inactive_contract_is_403_before_an_oversized_body(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(contract={"status": "suspended"})], settings=SMALL_BODY_LIMIT)
    response = await gw.share("POST", ASSESS, data=b"x" * 5000, headers=JSON)
    await assert_refused(gw, response, 403, "contract_inactive")


async def test_a_contract_that_expires_while_the_body_arrives_shares_nothing(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = ZoneInfo("Asia/Shanghai")
    today = datetime.now(zone).date()
    gw = await make_gateway([contract(contract={"expires": today.isoformat()})])
    head_at = datetime.combine(today, clock(23, 59, 59), zone)
    body_at = head_at + timedelta(seconds=11)  # within body_read_timeout_s, the next day

    class Clock(datetime):
        calls = 0

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Clock:
            cls.calls += 1
            moment = head_at if cls.calls == 1 else body_at
            return cast(Clock, moment.astimezone(tz))

    monkeypatch.setattr("gateway.pipeline.datetime", Clock)
    response = await gw.share("POST", ASSESS, json=applicant())
    await assert_refused(gw, response, 403, "contract_inactive")
    assert Clock.calls >= 2  # judged when the request came in, and again with its body


PHONE = "13800138000"


@pytest.mark.parametrize(
    ("target", "headers", "code"),
    [
        (f"/p{PHONE}/v1/assess", [], "unknown_partner"),
        (f"/acme/v1/assess/{PHONE}x", [], "route_denied"),
        (f"/acme/v1/assess?a{PHONE}=1&a{PHONE}=2", [], "malformed_request"),
        (ASSESS, [("X-Share-Purpose", f"p{PHONE}")], "purpose_denied"),
        (ASSESS, [("Content-Type", f"application/json; charset=x{PHONE}")], None),
        (ASSESS, [("Content-Type", f"text/x{PHONE}")], None),
        (ASSESS, [("Content-Encoding", f"x{PHONE}")], None),
    ],
    ids=["partner", "path", "query_name", "purpose", "charset", "media_type", "encoding"],
)
async def test_a_refusal_never_echoes_what_the_caller_wrote(
    make_gateway: GatewayFactory, target: str, headers: list[tuple[str, str]], code: str | None
) -> None:
    # What a caller wrote may be personal data, and the caller's logs keep the gateway's
    # error messages: a refusal names the header or the parameter, never its value.
    gw = await make_gateway()
    purpose = None if any(n == "X-Share-Purpose" for n, _ in headers) else "credit_assessment"
    if not any(n == "Content-Type" for n, _ in headers):
        headers = [*headers, ("Content-Type", "application/json")]
    response = await raw_request(
        gw, "POST", target, headers=headers, body=orjson.dumps(applicant()), purpose=purpose
    )
    assert 400 <= response.status < 500
    assert PHONE.encode() not in response.body
    if code is not None:
        assert response.json()["error"]["code"] == code


async def test_a_purpose_header_that_is_not_utf8_is_refused_not_a_500(
    make_gateway: GatewayFactory,
) -> None:
    # A byte that is not UTF-8 reads as a lone surrogate, which JSON cannot hold: the refusal
    # that named it could not be written, and the caller got a bare 500.
    gw = await make_gateway()
    token = gw.token("share:acme:credit_assessment")
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        headers=[
            ("Authorization", f"Bearer {token}"),
            ("Content-Type", "application/json"),
            ("X-Share-Purpose", "\xff credit"),
        ],
        body=orjson.dumps(applicant()),
        purpose=None,
        authorized=False,
    )
    await assert_refused(gw, response, 403, "scope_denied")


async def test_an_oversized_body_is_413_before_its_content_type(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    response = await gw.share(
        "POST", ASSESS, data=b"x" * 5000, headers={"Content-Type": "text/plain"}
    )
    await assert_refused(gw, response, 413, "body_too_large")


async def _chunked(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 100):
        yield b"x" * 100


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", ASSESS), ("PUT", "/acme/v1/documents/doc-1")],
    ids=["json_route", "upload_route"],
)
async def test_an_oversized_chunked_body_is_413_before_its_content_type(
    make_gateway: GatewayFactory, method: str, target: str
) -> None:
    # No Content-Length: the size is known only once the body is read, and it still decides.
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    response = await gw.client.request(
        method,
        target,
        data=_chunked(5000),
        headers={
            "Content-Type": "text/plain",
            "Authorization": f"Bearer {gw.token()}",
            "X-Share-Purpose": "credit_assessment",
        },
    )
    await assert_refused(gw, response, 413, "body_too_large")


async def test_a_suspended_contract_answers_before_a_repeated_pass_through_header(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(contract={"status": "suspended"})])
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        headers=[("Accept", "a/b"), ("Accept", "c/d"), ("Content-Type", "application/json")],
        body=b'{"applicant": {"user_id": "u-1"}}',
    )
    await assert_refused(gw, response, 403, "contract_inactive")


async def test_a_wrong_content_type_is_415_before_a_malformed_body(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, data=b"{{{", headers={"Content-Type": "text/plain"})
    await assert_refused(gw, response, 415, "unsupported_media_type")


# --- 2. bodies that are not strict JSON ---------------------------------------------------------

A = b'"applicant": {"user_id": "u-1"}'

BAD_BODIES: dict[str, bytes] = {
    "duplicate_key": b"{" + A + b', "loan_amount": 1, "loan_amount": 2}',
    "duplicate_key_escaped": b"{" + A + b', "\\u006coan_amount": 1, "loan_amount": 2}',
    "duplicate_key_nested": b'{"applicant": {"user_id": "u-1", "name": "a", "name": "b"}}',
    "duplicate_key_in_array": b"{" + A + b', "items": [{"amount": 1, "amount": 2}]}',
    "duplicate_subject_key": b'{"applicant": {"user_id": "u-1", "user_id": "u-2"}}',
    "nan": b"{" + A + b', "loan_amount": NaN}',
    "infinity": b"{" + A + b', "loan_amount": Infinity}',
    "minus_infinity": b"{" + A + b', "loan_amount": -Infinity}',
    "overflowing_float": b"{" + A + b', "loan_amount": 1e400}',
    "overflowing_negative_float": b"{" + A + b', "loan_amount": -1e400}',
    "30_digit_integer": b"{" + A + b', "loan_amount": 123456789012345678901234567890}',
    "lone_high_surrogate": b'{"applicant": {"user_id": "u-1", "name": "\\ud800"}}',
    "lone_low_surrogate": b'{"applicant": {"user_id": "u-1", "name": "\\udc00x"}}',
    "swapped_surrogates": b'{"applicant": {"user_id": "u-1", "name": "\\udc00\\ud800"}}',
    "invalid_utf8": b'{"applicant": {"user_id": "u-1", "name": "\xff\xfe"}}',
    "overlong_utf8": b'{"applicant": {"user_id": "u-1", "name": "\xc0\xaf"}}',
    "utf8_encoded_surrogate": b'{"applicant": {"user_id": "u-1", "name": "\xed\xa0\x80"}}',
    "utf8_bom": b"\xef\xbb\xbf{" + A + b"}",
    "utf16_with_bom": ('{"applicant": {"user_id": "u-1"}}').encode("utf-16"),
    "utf16_le": ('{"applicant": {"user_id": "u-1"}}').encode("utf-16-le"),
    "utf32": ('{"applicant": {"user_id": "u-1"}}').encode("utf-32"),
    "nul_byte": b'{"applicant": {"user_id": "u-1\x00"}}',
    "trailing_garbage": b"{" + A + b"} x",
    "second_document": b"{" + A + b"}{" + A + b"}",
    "trailing_comma_after_document": b"{" + A + b"},",
    "trailing_comma_in_object": b"{" + A + b",}",
    "truncated": b"{" + A,
    "empty": b"",
    "whitespace_only": b"  \r\n ",
    "top_level_array": b"[{" + A + b"}]",
    "top_level_number": b"1",
    "top_level_string": b'"applicant"',
    "top_level_null": b"null",
    "top_level_true": b"true",
    "single_quotes": b"{'applicant': {'user_id': 'u-1'}}",
    "comment": b"{" + A + b" /* note */}",
    "leading_zero": b"{" + A + b', "loan_amount": 01}',
    "unescaped_control_character": b'{"applicant": {"user_id": "u-1", "name": "a\x01b"}}',
    "hex_number": b"{" + A + b', "loan_amount": 0x10}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_malformed_body_is_400_and_nothing_is_forwarded(
    make_gateway: GatewayFactory, body: bytes
) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, data=body, headers=JSON)
    await assert_refused(gw, response, 400, "malformed_body")


async def test_nesting_deeper_than_the_limit_is_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings={"limits": {"max_json_depth": 4}})
    # depth 4: the document, meta, meta.a, meta.a.b
    response = await gw.share("POST", ASSESS, json=applicant(meta={"a": {"b": {}}}))
    assert response.status == 200
    assert gw.partner.received[-1].json()["meta"] == {"a": {"b": {}}}
    gw.partner.received.clear()
    response = await gw.share("POST", ASSESS, json=applicant(meta={"a": {"b": {"c": []}}}))
    await assert_refused(gw, response, 400, "malformed_body")


async def test_a_stalled_body_is_cut_off(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings={"limits": {"body_read_timeout_s": 0.2}})
    port = gw.client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST {ASSESS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {gw.token()}\r\nX-Share-Purpose: credit_assessment\r\n"
        "Content-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode() + b'{"applicant": {"user_id": "u-1"')  # and then nothing more
    await writer.drain()
    try:
        # The server may linger to drain the rest of the body, so read just the answer.
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = next(
            int(line.split(b":")[1])
            for line in answer_head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = orjson.loads(await asyncio.wait_for(reader.readexactly(length), timeout=10))
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer_head.startswith(b"HTTP/1.1 408 ")
    assert answer["error"]["code"] == "request_timeout"
    assert gw.partner.received == []
    assert (gw.log.records[-1].decision, gw.log.records[-1].reason) == ("denied", "request_timeout")


async def test_hostile_nesting_is_400_not_a_crash(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = b"{" + A + b', "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await gw.share("POST", ASSESS, data=body, headers=JSON)
    await assert_refused(gw, response, 400, "malformed_body")


async def test_the_forwarded_body_is_the_reserialisation_never_the_original(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    original = (
        b'{ "applicant" :{ "user_id":"u-1" , "name" : "\\u738b\\u0020\\/x" } ,\n'
        b'\t"loan_amount" : 5000 , "tags":[ "a" ,"b" ] }  \n'
    )
    response = await gw.share("POST", ASSESS, data=original, headers=JSON)
    assert response.status == 200
    [seen] = gw.partner.received
    assert (
        seen.body == '{"applicant":{"name":"王 /x"},"loan_amount":5000,"tags":["a","b"]}'.encode()
    )


async def test_large_exact_integers_are_kept_exactly(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = (
        b"{"
        + A
        + b', "loan_amount": 18446744073709551615, "items": [{"amount": -9223372036854775808}]}'
    )
    response = await gw.share("POST", ASSESS, data=body, headers=JSON)
    assert response.status == 200
    assert gw.partner.received[0].body == (
        b'{"applicant":{},"loan_amount":18446744073709551615,'
        b'"items":[{"amount":-9223372036854775808}]}'
    )


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
    ],
)
async def test_compressed_body_is_decoded_and_forwarded_plain(
    make_gateway: GatewayFactory, coding: str, encode: Callable[[bytes], bytes]
) -> None:
    gw = await make_gateway()
    body = encode(orjson.dumps(applicant(secret="s")))
    response = await gw.share(
        "POST", ASSESS, data=body, headers={**JSON, "Content-Encoding": coding}
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.body == b'{"applicant":{"name":"Wang"},"loan_amount":5000}'
    assert "Content-Encoding" not in seen.headers


async def test_gzip_bomb_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    plain = orjson.dumps(applicant(meta={"pad": "0" * 200_000}))
    bomb = gzip.compress(plain)
    assert len(bomb) < 1000
    response = await gw.share(
        "POST", ASSESS, data=bomb, headers={**JSON, "Content-Encoding": "gzip"}
    )
    await assert_refused(gw, response, 413, "body_too_large")


@pytest.mark.parametrize(
    "coding", ["br", "zstd", "compress", "gzip, gzip", "gzip, br", "identity, gzip"]
)
async def test_unsupported_content_encoding_is_415(
    make_gateway: GatewayFactory, coding: str
) -> None:
    gw = await make_gateway()
    body = gzip.compress(orjson.dumps(applicant()))
    response = await gw.share(
        "POST", ASSESS, data=body, headers={**JSON, "Content-Encoding": coding}
    )
    await assert_refused(gw, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(orjson.dumps(applicant()))[:-12],  # truncated
        gzip.compress(orjson.dumps(applicant())) + b"trailing",
        orjson.dumps(applicant()),  # says gzip, is not
    ],
    ids=["truncated", "trailing_data", "not_gzip"],
)
async def test_broken_gzip_is_400(make_gateway: GatewayFactory, body: bytes) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST", ASSESS, data=body, headers={**JSON, "Content-Encoding": "gzip"}
    )
    await assert_refused(gw, response, 400, "malformed_body")


async def test_gzip_of_a_malformed_document_is_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = gzip.compress(b"{" + A + b', "a": 1, "a": 2}')
    response = await gw.share(
        "POST", ASSESS, data=body, headers={**JSON, "Content-Encoding": "gzip"}
    )
    await assert_refused(gw, response, 400, "malformed_body")


async def test_missing_subject_is_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, json={"applicant": {"name": "Wang"}})
    await assert_refused(gw, response, 400, "malformed_body")


async def test_a_body_on_a_get_route_is_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share("GET", "/acme/v1/reports/r-1", data=b"{}", headers=JSON)
    await assert_refused(gw, response, 400, "malformed_body")


async def test_a_body_on_a_delete_route_is_400(make_gateway: GatewayFactory) -> None:
    delete = {
        "method": "DELETE",
        "path": "/v1/reports/{report_id}",
        "purpose": "credit_assessment",
        "fields": [{"path": "query.format", "category": "business.reference"}],
    }
    gw = await make_gateway([contract(routes=routes(delete))])
    body = b'{"applicant": {"user_id": "u-1"}}'
    response = await gw.share("DELETE", "/acme/v1/reports/r-1", data=body, headers=JSON)
    await assert_refused(gw, response, 400, "malformed_body")
    assert (await response.json())["error"]["message"] == "a DELETE share carries no body"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        (JSON, 400, "malformed_body"),
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ],
    ids=["json", "not_json"],
)
async def test_an_empty_body_on_a_json_route_is_refused(
    make_gateway: GatewayFactory, headers: dict[str, str], status: int, code: str
) -> None:
    gw = await make_gateway()
    # /v1/notes names no data subject: only the body itself can refuse the share.
    response = await gw.share(
        "POST", "/acme/v1/notes", data=b"", headers=headers, purpose="service_delivery"
    )
    await assert_refused(gw, response, status, code)


# --- 3. headers ---------------------------------------------------------------------------------

CALLER_ONLY_HEADERS = {
    "Cookie": "session=caller-session",
    "X-Forwarded-For": "10.1.2.3",
    "X-Forwarded-Host": "internal.example",
    "X-Forwarded-Proto": "http",
    "Forwarded": "for=10.1.2.3;host=internal.example",
    "X-Real-IP": "10.1.2.3",
    "Via": "1.1 internal-proxy",
    "X-Share-Id": "forged-share-id",
    "X-Share-Purpose-Override": "marketing",
    "X-Data-Onward-Transfer": "allowed",
    "X-Data-Retention-Days": "9999",
    "X-Custom": "anything",
    "X-Consent-Token": "a.b.c",
    "Accept-Encoding": "br",
    "Proxy-Authorization": "Basic eDp5",
    "Origin": "https://evil.example",
    "Referer": "https://internal.example/page",
}


async def test_only_allowed_headers_reach_the_partner(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST",
        ASSESS,
        json=applicant(),
        headers={**CALLER_ONLY_HEADERS, "Accept": "application/json", "User-Agent": "billing/1.2"},
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert sorted(name.lower() for name in seen.headers) == sorted(PARTNER_HEADERS)
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"] == "billing/1.2"
    assert seen.headers["Host"] == f"127.0.0.1:{gw.partner.port}"
    assert seen.headers.getall("Authorization") == [f"Bearer {PARTNER_TOKEN}"]
    assert seen.headers.getall("X-Share-Id") == [response.headers["X-Share-Id"]]
    assert seen.headers["X-Share-Id"] != "forged-share-id"
    assert seen.headers.getall("X-Data-Onward-Transfer") == ["prohibited"]
    assert seen.headers.getall("X-Data-Retention-Days") == ["30"]


async def test_terms_allowing_onward_transfer_say_so_to_the_partner(
    make_gateway: GatewayFactory,
) -> None:
    terms = {**BASE_CONTRACT["terms"], "onward_transfer": True, "retention_days": 7}
    gw = await make_gateway([contract(terms=terms)])
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.headers.getall("X-Data-Onward-Transfer") == ["allowed"]
    assert seen.headers.getall("X-Data-Retention-Days") == ["7"]


async def test_a_passed_on_header_keeps_no_identifier(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(routes=routes(CHECKED_ROUTE))])
    response = await gw.share(
        "POST",
        "/acme/v1/checked",
        json={"loan_amount": 1},
        headers={
            "User-Agent": "billing/1.2 (13800138000; 11010519491231002X)",
            # Addresses are left alone in the User-Agent only (its versions look like them).
            "Idempotency-Key": "k-13900139000 from 10.20.30.40",
            "Accept": "application/json",
        },
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    phone = "[REDACTED:contact.phone]"
    assert seen.headers["User-Agent"] == f"billing/1.2 ({phone}; [REDACTED:identity.id_number])"
    assert seen.headers["Idempotency-Key"] == f"k-{phone} from [REDACTED:device.ip]"
    assert seen.headers["Accept"] == "application/json"
    record = gw.log.records[-1]
    assert record.pii_redactions == {"contact.phone": 2, "identity.id_number": 1, "device.ip": 1}


async def test_a_browsers_user_agent_passes_whole(make_gateway: GatewayFactory) -> None:
    # Its versions read like IPv4 addresses; they are versions, and nothing is redacted.
    agent = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/124.0.0.0 Safari/537.36"
    gw = await make_gateway([contract(routes=routes(CHECKED_ROUTE))])
    response = await gw.share(
        "POST", "/acme/v1/checked", json={"loan_amount": 1}, headers={"User-Agent": agent}
    )
    assert response.status == 200, await response.text()
    assert gw.partner.received[-1].headers["User-Agent"] == agent
    assert gw.log.records[-1].pii_redactions == {}


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("13800138000", "contact.phone"),
        ("11010519491231002X", "identity.id_number"),
        ("110105-1949-1231-002X", "identity.id_number"),
        ("110105850304123", "identity.id_number"),  # first generation, 15 digits
        ("6222021234567894", "financial.bank_account"),
    ],
)
async def test_a_path_value_holding_an_identifier_is_refused(
    make_gateway: GatewayFactory, value: str, found: str
) -> None:
    gw = await make_gateway()
    response = await gw.share("GET", f"/acme/v1/reports/{value}")
    await assert_refused(gw, response, 400, "malformed_request")
    message = (await response.json())["error"]["message"]
    assert f"the path value for {{report_id}} holds personal data ({found})" in message
    assert gw.log.records[-1].route == "GET /v1/reports/{report_id}"
    # An ordinary id, digits included, goes through.
    response = await gw.share("GET", "/acme/v1/reports/r-2025-0042")
    assert response.status == 200, await response.text()
    assert gw.partner.received[-1].target == "/v1/reports/r-2025-0042"


@pytest.mark.parametrize(
    ("given", "passed"),
    [
        ({"Retry-After": "120 "}, {"Retry-After": "120"}),
        (
            {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"},
            {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"},
        ),
        (
            {"Retry-After": "Wednesday, 21-Oct-26 07:28:00 GMT"},
            {"Retry-After": "Wednesday, 21-Oct-26 07:28:00 GMT"},
        ),
        ({"Retry-After": "Wed Oct 21 07:28:00 2026"}, {"Retry-After": "Wed Oct 21 07:28:00 2026"}),
        ({"Retry-After": "soon, call 13800138000"}, {}),
        ({"Retry-After": "120; call 13800138000"}, {}),  # a number first is not the whole value
        ({"Cache-Control": 'public, max-age="0"'}, {"Cache-Control": "public, max-age=0"}),
        ({"Cache-Control": "No-Store , MAX-AGE=5"}, {"Cache-Control": "no-store, max-age=5"}),
        ({"Cache-Control": 'public, x-note="13800138000"'}, {"Cache-Control": "no-store"}),
        ({"Cache-Control": "public, max-age=soon"}, {"Cache-Control": "no-store"}),
        (
            [("Cache-Control", "public, max-age=60"), ("Cache-Control", "private")],
            {"Cache-Control": "public, max-age=60, private"},
        ),
        ([("Retry-After", "120"), ("Retry-After", "120 ")], {"Retry-After": "120"}),
        # Two values where one belongs: neither is passed on.
        ([("Retry-After", "120"), ("Retry-After", "5")], {}),
        ([("ETag", '"a"'), ("ETag", '"b"')], {}),
        ([("Content-Type", "text/plain"), ("Content-Type", "text/html")], {}),
    ],
)
def test_answer_headers_pass_in_their_own_grammar(
    given: dict[str, str] | list[tuple[str, str]], passed: dict[str, str]
) -> None:
    assert response_headers(CIMultiDict(given), b"", filtered=False) == passed


@pytest.mark.parametrize(
    ("given", "body", "passed"),
    [
        ([("Content-Type", "application/problem+json")], b"{}", "application/problem+json"),
        ([("Content-Type", "application/vnd.x+json")], b"{}", "application/json"),
        (
            [("Content-Type", "application/json"), ("Content-Type", "text/html")],
            b"{}",
            "application/json",
        ),
        # A body dropped or empty: its type is not passed on, and need not even parse.
        ([("Content-Type", "text/html;")], b"", None),
    ],
)
def test_a_filtered_answer_is_typed_as_the_gateways_own_json(
    given: list[tuple[str, str]], body: bytes, passed: str | None
) -> None:
    headers = response_headers(CIMultiDict(given), body, filtered=True)
    assert headers.get("Content-Type") == passed


CHECKED_ROUTE = {
    "method": "POST",
    "path": "/v1/checked",
    "purpose": "credit_assessment",
    "headers": ["X-Checksum-Sha256", "Idempotency-Key"],
    "fields": [{"path": "loan_amount", "category": "business.transaction"}],
}


async def test_a_header_the_route_names_is_passed_through(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(routes=routes(CHECKED_ROUTE))])
    response = await gw.share(
        "POST",
        "/acme/v1/checked",
        json={"loan_amount": 1},
        headers={"X-Checksum-Sha256": "abc", "idempotency-key": "k-1", "X-Custom": "no"},
    )
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.headers["X-Checksum-Sha256"] == "abc"
    assert seen.headers["Idempotency-Key"] == "k-1"
    assert "X-Custom" not in seen.headers
    # Another route does not let that header through.
    await gw.share("POST", ASSESS, json=applicant(), headers={"X-Checksum-Sha256": "abc"})
    assert "X-Checksum-Sha256" not in gw.partner.received[-1].headers


async def test_a_header_the_callers_connection_names_stays_behind(
    make_gateway: GatewayFactory,
) -> None:
    # RFC 9110 7.6.1: a proxy removes what `Connection` names, even a header the route passes.
    gw = await make_gateway([contract(routes=routes(CHECKED_ROUTE))])
    response = await raw_request(
        gw,
        "POST",
        "/acme/v1/checked",
        headers=[
            ("Content-Type", "application/json"),
            ("Connection", "keep-alive, x-checksum-SHA256"),
            ("X-Checksum-Sha256", "abc"),
            ("Idempotency-Key", "k-1"),
            ("User-Agent", "probe/1"),
            ("Connection", " User-Agent "),
        ],
        body=b'{"loan_amount": 1}',
    )
    assert response.status == 200, response.body
    [seen] = gw.partner.received
    assert seen.headers["Idempotency-Key"] == "k-1"
    assert "X-Checksum-Sha256" not in seen.headers
    assert "User-Agent" not in seen.headers
    assert seen.json() == {"loan_amount": 1}


async def test_a_route_naming_content_type_still_sends_only_the_gateways(
    make_gateway: GatewayFactory,
) -> None:
    route = {**CHECKED_ROUTE, "headers": ["Content-Type"]}
    gw = await make_gateway([contract(routes=routes(route))])
    response = await gw.share(
        "POST",
        "/acme/v1/checked",
        data=b'{"loan_amount": 1}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    assert gw.partner.received[0].headers.getall("Content-Type") == ["application/json"]


@pytest.mark.parametrize("name", ["Accept", "X-Checksum-Sha256"])
async def test_a_repeated_pass_through_header_is_refused(
    make_gateway: GatewayFactory, name: str
) -> None:
    gw = await make_gateway([contract(routes=routes(CHECKED_ROUTE))])
    response = await raw_request(
        gw,
        "POST",
        "/acme/v1/checked",
        headers=[("Content-Type", "application/json"), (name, "a"), (name, "b")],
        body=b'{"loan_amount": 1}',
    )
    await assert_refused(gw, response, 400, "malformed_request")


@pytest.mark.parametrize(
    "value",
    [
        "电话１３８００１３８０００".encode("gbk"),  # "phone 13800138000", as GBK types it
        "Zürich/1.0".encode("latin-1"),
    ],
    ids=["gbk", "latin1"],
)
async def test_a_passed_on_header_that_is_not_utf8_is_refused(
    make_gateway: GatewayFactory, value: bytes
) -> None:
    # Not UTF-8, the value cannot be scanned, and would go out as it came.
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        headers=[("Content-Type", "application/json"), ("User-Agent", value.decode("latin-1"))],
        body=orjson.dumps(applicant()),
    )
    await assert_refused(gw, response, 400, "malformed_request")
    assert response.json()["error"]["message"] == "the user-agent header is not UTF-8"


async def test_a_repeated_user_agent_never_reaches_the_partner(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        headers=[("Content-Type", "application/json"), ("User-Agent", "a"), ("User-Agent", "b")],
        body=orjson.dumps(applicant()),
    )
    assert response.status == 400  # the HTTP parser itself refuses a repeated User-Agent
    assert gw.partner.received == []


async def test_repeated_purpose_header_is_refused(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        headers=[
            ("Content-Type", "application/json"),
            ("X-Share-Purpose", "credit_assessment"),
        ],
        body=orjson.dumps(applicant()),
    )
    await assert_refused(gw, response, 400, "malformed_request")


@pytest.mark.parametrize(
    ("auth", "environ", "expected"),
    [
        (
            {"type": "bearer", "token_env": "ACME_TOKEN"},
            {},
            ("Authorization", f"Bearer {PARTNER_TOKEN}"),
        ),
        (
            {"type": "basic", "username": "platform", "password_env": "ACME_PASSWORD"},
            {"ACME_PASSWORD": "p@ss:wörd"},
            (
                "Authorization",
                "Basic " + base64.b64encode("platform:p@ss:wörd".encode()).decode(),
            ),
        ),
        (
            {"type": "header", "name": "X-Api-Key", "value_env": "ACME_KEY"},
            {"ACME_KEY": "key-123"},
            ("X-Api-Key", "key-123"),
        ),
        ({"type": "none"}, {}, None),
    ],
    ids=["bearer", "basic", "header", "none"],
)
async def test_upstream_credentials_replace_the_callers(
    make_gateway: GatewayFactory,
    auth: dict[str, str],
    environ: dict[str, str],
    expected: tuple[str, str] | None,
) -> None:
    gw = await make_gateway([contract(upstream={"auth": auth})], environ=environ)
    response = await gw.share("POST", ASSESS, json=applicant(), headers={"X-Api-Key": "caller's"})
    assert response.status == 200
    [seen] = gw.partner.received
    if expected is None:
        assert "Authorization" not in seen.headers
        assert "X-Api-Key" not in seen.headers
    else:
        name, value = expected
        assert seen.headers.getall(name) == [value]
        if name != "Authorization":
            assert "Authorization" not in seen.headers
    # The caller's own token never travels on.
    assert gw.token() not in str(dict(seen.headers))


async def test_partner_cookies_and_location_stay_behind(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.partner.answer(
        200,
        {"score": 700},
        **{
            "Set-Cookie": "partner-session=1; Path=/",
            "Location": "http://10.0.0.7/internal",
            "Server": "partner/1.0",
            "X-Internal-Trace": "t-1",
            "Retry-After": "3",
        },
    )
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200
    assert await response.json() == {"score": 700}
    assert "Set-Cookie" not in response.headers
    assert "Location" not in response.headers
    assert "X-Internal-Trace" not in response.headers
    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-Share-Id"] == gw.log.records[-1].share_id
    assert response.headers["Content-Type"].startswith("application/json")
    assert not gw.client.session.cookie_jar.filter_cookies(gw.client.make_url("/"))


# --- 4. path tricks -------------------------------------------------------------------------------

MALFORMED_TARGETS = [
    "/acme/v1/../v1/assess",
    "/acme/v1/./assess",
    "/acme/./v1/assess",
    "/acme/v1/assess/..",
    "/acme/v1/assess/.",
    "/acme/v1/%2e%2e/v1/assess",
    "/acme/v1/%2E/assess",
    "/acme/%2e%2e/acme/v1/assess",
    "/acme/v1%2fassess",
    "/acme/v1%2Fassess",
    "/acme%2fv1/assess",
    "/acme/v1%5cassess",
    "/acme/v1%5Cassess",
    "/acme/v1\\assess",
    "/acme/v1/%252e%252e/assess",
    "/acme/v1%252fassess",
    "/acme/v1/%61ssess",
    "/acme//v1/assess",
    "//acme/v1/assess",
    "/acme/v1/assess//",
    "/acme/v1/assess/",
    "/acme/v1/assess;jsessionid=1",
    "/acme/v1/assess#fragment",
    "/acme/v1;x=1/assess",
    "/acme;x/v1/assess",
    "/acme/v1/assess%00",
    "/acme/v1/assess%00.json",
    "/acme/v1/assess%20",
    "/acme/v1/assess%",
    "/acme/v1/assess:x",
    "/acme/v1/assess@evil",
    "/acme",
    "/acme/",
    "/acme/v1/assess?page=1&page=2",
    "/acme/v1/assess?page=1&&x=2",
    "/acme/v1/assess?page=%zz",
    "/acme/v1/assess?page=%ff",
]


@pytest.mark.parametrize("target", MALFORMED_TARGETS)
async def test_ambiguous_targets_are_400_and_nothing_is_forwarded(
    make_gateway: GatewayFactory, target: str
) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        target,
        headers=[("Content-Type", "application/json")],
        body=orjson.dumps(applicant()),
    )
    await assert_refused(gw, response, 400, "malformed_request")


@pytest.mark.parametrize(
    "target",
    [
        "/acme/v1/reports/..",
        "/acme/v1/reports/.",
        "/acme/v1/reports/%2e%2e",
        "/acme/v1/reports/a%2fb",
        "/acme/v1/reports/a%5cb",
        "/acme/v1/reports/",
        "/acme/v1/reports/r-1;x",
    ],
)
async def test_placeholder_segments_take_no_tricks(
    make_gateway: GatewayFactory, target: str
) -> None:
    gw = await make_gateway()
    response = await raw_request(gw, "GET", target)
    await assert_refused(gw, response, 400, "malformed_request")


@pytest.mark.parametrize(
    "target",
    [
        # ASCII and UTF-8 bytes aiohttp's own parser may refuse before the gateway sees them
        b"/acme/v1/assess\x00",
        b"/acme/v1/ass\xc3\xa9ss",
        b"/acme/v1/assess\t",
    ],
    ids=["raw_nul", "raw_utf8", "raw_tab"],
)
async def test_raw_bytes_in_the_target_never_reach_the_partner(
    make_gateway: GatewayFactory, target: bytes
) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        target,
        headers=[("Content-Type", "application/json")],
        body=orjson.dumps(applicant()),
    )
    assert response.status == 400
    assert gw.partner.received == []


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/acme/V1/assess", 403, "route_denied"),
        ("/acme/v1/ASSESS", 403, "route_denied"),
        ("/ACME/v1/assess", 404, "unknown_partner"),
        ("/Acme/v1/assess", 404, "unknown_partner"),
        ("/acme/v1/assess/extra", 403, "route_denied"),
        ("/acme/v1/assess.json", 403, "route_denied"),
        ("/acme/v1/assess~", 403, "route_denied"),
    ],
)
async def test_case_and_suffix_variants_match_nothing(
    make_gateway: GatewayFactory, target: str, status: int, code: str
) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        target,
        headers=[("Content-Type", "application/json")],
        body=orjson.dumps(applicant()),
    )
    await assert_refused(gw, response, status, code)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("post", ASSESS),
        ("POST", "*"),
        ("POST", "/_gateway/../acme/v1/assess"),
    ],
    ids=["lowercase_method", "asterisk_form", "ops_prefix_dot_segments"],
)
async def test_targets_outside_the_share_routes_never_reach_the_partner(
    make_gateway: GatewayFactory, method: str, target: str
) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        method,
        target,
        headers=[("Content-Type", "application/json")],
        body=orjson.dumps(applicant()),
    )
    assert response.status in {400, 404}
    assert gw.partner.received == []
    assert gw.log.records == []  # never a share: refused by the HTTP parser or the ops router


@pytest.mark.parametrize(
    "target",
    [
        "http://{gateway}/acme/v1/assess",
        "http://evil.example/acme/v1/assess",
        "https://evil.example:443/acme/v1/assess",
        "http://{partner}/v1/assess",
        "http://{partner}",
        "http://evil.example?acme=1",
    ],
)
async def test_absolute_form_targets_are_refused(make_gateway: GatewayFactory, target: str) -> None:
    # With no path at all, aiohttp's router answered 404 itself: no record, its name in `Server`.
    gw = await make_gateway()
    target = target.format(
        gateway=f"127.0.0.1:{gw.client.server.port}", partner=f"127.0.0.1:{gw.partner.port}"
    )
    response = await raw_request(
        gw,
        "POST",
        target,
        headers=[("Content-Type", "application/json")],
        body=orjson.dumps(applicant()),
    )
    await assert_refused(gw, response, 400, "malformed_request")


@pytest.mark.parametrize("target", ["127.0.0.1:1", "{partner}"])
async def test_connect_is_refused_with_a_record(make_gateway: GatewayFactory, target: str) -> None:
    gw = await make_gateway()
    target = target.format(partner=f"127.0.0.1:{gw.partner.port}")
    response = await raw_request(gw, "CONNECT", target)
    await assert_refused(gw, response, 400, "malformed_request")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "10.0.0.1", "localhost"])
async def test_a_foreign_host_header_changes_nothing_upstream(
    make_gateway: GatewayFactory, host: str
) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        host=host,
        headers=[("Content-Type", "application/json")],
        body=orjson.dumps(applicant()),
    )
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.target == "/v1/assess"
    assert seen.headers.getall("Host") == [f"127.0.0.1:{gw.partner.port}"]


# --- 5. query parameters --------------------------------------------------------------------------

LOOKUP_ROUTE = {
    "method": "GET",
    "path": "/v1/lookup/{kind}",
    "purpose": "credit_assessment",
    "fields": [
        {"path": "query.page", "category": "business.reference"},
        {
            "path": "query.phone",
            "category": "contact.phone",
            "transform": {"mask": {"keep_last": 4}},
        },
        {"path": "query.id", "category": "identity.id_number", "transform": "hash"},
        {
            "path": "query.income",
            "category": "financial.income",
            "transform": {"generalize": {"bucket": 5000}},
        },
        {"path": "query.q", "category": "business.note"},
    ],
}


async def test_query_parameters_are_filtered_and_transformed(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(routes=routes(LOOKUP_ROUTE))])
    response = await gw.share(
        "GET",
        f"/acme/v1/lookup/people?page=2&phone=13800138000&id={ID_NUMBER}&income=18000"
        "&q=a%20b%26c%3Dd&debug=1&user_id=u-1",
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    path, _, query = seen.target.partition("?")
    assert path == "/v1/lookup/people"
    hashed = keyed_hash(partner_hash_key(HASH_KEY.encode(), "acme"), ID_NUMBER)
    assert parse_qsl(query, keep_blank_values=True, strict_parsing=True) == [
        ("page", "2"),
        ("phone", "*******8000"),
        ("id", hashed),
        ("income", "15000-19999"),
        ("q", "a b&c=d"),
    ]
    assert seen.body == b""
    assert "Content-Type" not in seen.headers
    [record] = gw.log.records
    assert record.fields_stripped == ("query.debug", "query.user_id")
    assert record.fields_transformed == ("query.id", "query.income", "query.phone")


@pytest.mark.parametrize("income", ["-" + "9" * 4300, "9" * 4300, "1" + "0" * 5000])
async def test_a_query_number_too_long_to_bucket_is_stripped_not_a_500(
    make_gateway: GatewayFactory, income: str
) -> None:
    # Like any value the transform cannot handle: the parameter is stripped, the rest is shared.
    gw = await make_gateway([contract(routes=routes(LOOKUP_ROUTE))])
    response = await gw.share("GET", f"/acme/v1/lookup/people?page=2&income={income}")
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.target == "/v1/lookup/people?page=2"
    [record] = gw.log.records
    assert record.decision == "shared"
    assert record.fields_stripped == ("query.income",)
    assert record.fields_transformed == ()


async def test_a_route_without_query_fields_drops_every_parameter(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST", "/acme/v1/notes?note=x&user=u-1", json={"note": "hi"}, purpose="service_delivery"
    )
    assert response.status == 200
    assert gw.partner.received[0].target == "/v1/notes"


async def test_repeated_query_parameter_is_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(routes=routes(LOOKUP_ROUTE))])
    for query in ("page=1&page=2", "phone=1&debug=1&phone=2", "debug=1&debug=2"):
        response = await gw.share("GET", f"/acme/v1/lookup/x?{query}")
        await assert_refused(gw, response, 400, "malformed_request")


async def test_too_many_query_parameters_is_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        [contract(routes=routes(LOOKUP_ROUTE))], settings={"limits": {"max_query_params": 3}}
    )
    response = await gw.share("GET", "/acme/v1/lookup/x?a=1&b=2&c=3&d=4")
    await assert_refused(gw, response, 400, "malformed_request")


# --- 6. the field filter end to end ---------------------------------------------------------------


async def test_arrays_subtrees_and_scalars_are_filtered_as_declared(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    body = {
        "applicant": {"user_id": "u-1", "name": {"first": "W", "last": "X"}, "phone": ["138"]},
        "items": [
            {"amount": 1, "sku": "s-1"},
            {"amount": {"value": 2}},
            "not an object",
            {"sku": "s-3"},
        ],
        "tags": ["a", 1, None, True, {"x": 1}, ["y"], 2.5],
        "meta": {"a": {"b": [1, {"c": "d"}]}, "e": None},
        "loan_amount": {"value": 1},
    }
    response = await gw.share("POST", ASSESS, json=body)
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.json() == {
        "applicant": {},
        "items": [{"amount": 1}, {}, {}],
        "tags": ["a", 1, None, True, 2.5],
        "meta": {"a": {"b": [1, {"c": "d"}]}, "e": None},
    }
    [record] = gw.log.records
    assert record.fields_sent == ("items[].amount", "meta.**", "tags[]")
    assert record.fields_stripped == (
        "applicant.name",
        "applicant.phone",
        "applicant.user_id",
        "items[]",
        "items[].amount",
        "items[].sku",
        "loan_amount",
        "tags[]",
    )
    assert record.fields_transformed == ()


async def test_empty_containers_stay_and_key_order_is_kept(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    data = (
        b'{"tags": [], "loan_amount": 1, "meta": {}, "items": [{}],'
        b' "applicant": {"phone": "13800138000", "user_id": "u-1", "name": "W", "email": "e"}}'
    )
    response = await gw.share("POST", ASSESS, data=data, headers=JSON)
    assert response.status == 200
    assert gw.partner.received[0].body == (
        b'{"tags":[],"loan_amount":1,"meta":{},"items":[{}],'
        b'"applicant":{"phone":"*******8000","name":"W"}}'
    )


async def test_keys_are_exact_and_case_sensitive(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = {
        "applicant": {"user_id": "u-1", "Name": "W", "name ": "W", "name.x": "W"},
        "Loan_amount": 1,
        "loan_amount ": 2,
    }
    response = await gw.share("POST", ASSESS, json=body)
    assert response.status == 200
    assert gw.partner.received[0].json() == {"applicant": {}}


async def test_hash_is_keyed_per_partner(make_gateway: GatewayFactory) -> None:
    first = contract()
    second = contract(partner={"id": "acme-two"}, contract={"id": "DPA-2"})
    gw = await make_gateway([first, second])
    scope = "share:acme:* share:acme-two:*"
    body = applicant()
    body["applicant"]["id_number"] = ID_NUMBER
    for partner_id in ("acme", "acme-two", "acme"):
        response = await gw.share("POST", f"/{partner_id}/v1/assess", json=body, scope=scope)
        assert response.status == 200
    one, two, again = (seen.json()["applicant"]["id_number"] for seen in gw.partner.received)
    assert one == again  # stable for one partner, so it can match its own records
    assert one != two  # different for another, so two partners cannot join their data
    master = HASH_KEY.encode()
    assert one == keyed_hash(partner_hash_key(master, "acme"), ID_NUMBER)
    assert two == keyed_hash(partner_hash_key(master, "acme-two"), ID_NUMBER)
    assert ID_NUMBER.encode() not in b"".join(seen.body for seen in gw.partner.received)
    # Worked out here from the documented construction, not by the gateway's own functions:
    # HMAC-SHA256 under HMAC-SHA256(master key, "share-gateway/partner/<id>"). Without the
    # master key nobody can recompute it, even knowing the partner's id.
    partner_key = hmac.new(master, b"share-gateway/partner/acme", hashlib.sha256).digest()
    assert one == hmac.new(partner_key, ID_NUMBER.encode(), hashlib.sha256).hexdigest()


async def test_free_text_is_scanned_for_personal_data(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST",
        "/acme/v1/notes",
        json={"note": "call 13800138000 or mail w@example.com"},
        purpose="service_delivery",
    )
    assert response.status == 200
    note = gw.partner.received[0].json()["note"]
    assert "13800138000" not in note
    assert "w@example.com" not in note
    assert "[REDACTED:" in note
    assert sum(gw.log.records[0].pii_redactions.values()) == 2


async def test_a_masked_note_never_carries_a_phone_number_to_the_partner(
    make_gateway: GatewayFactory,
) -> None:
    doc = contract()
    doc["routes"][3]["fields"] = [
        {"path": "note", "category": "business.note", "transform": {"mask": {"keep_first": 40}}}
    ]
    gw = await make_gateway([doc])
    note = "call the customer on 13812345678 about the booking"
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200
    [received] = gw.partner.received
    assert received.json() == {"note": "call the customer on [REDACTED:contact.p" + "*" * 23}
    assert b"1381234" not in received.body
    [record] = gw.log.records
    assert record.pii_redactions == {"contact.phone": 1}


async def test_internationalised_addresses_in_free_text_never_reach_the_partner(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    email = "[REDACTED:contact.email]"
    note = "请发邮件给：张伟@例子.中国，抄送 zhang.wei@公司.cn、用户@bücher.de 和 josé@correo.es。"
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200
    # A `**` subtree: its keys and strings are free text too.
    meta = {"联系人": {"邮箱": "Пишите: иван@пример.рф", "山田@例え.jp": "担当"}}
    response = await gw.share("POST", ASSESS, json=applicant(meta=meta))
    assert response.status == 200
    notes, assess = gw.partner.received
    assert notes.json() == {"note": f"请发邮件给：{email}，抄送 {email}、{email} 和 {email}。"}
    assert assess.json()["meta"] == {"联系人": {"邮箱": f"Пишите: {email}", email: "担当"}}
    sent = notes.body + assess.body
    for address in (
        "张伟@例子.中国",
        "zhang.wei@公司.cn",
        "用户@bücher.de",
        "josé@correo.es",
        "иван@пример.рф",
        "山田@例え.jp",
    ):
        local, domain = address.split("@")
        assert local.encode() not in sent
        assert domain.encode() not in sent
    assert [record.pii_redactions for record in gw.log.records] == [
        {"contact.email": 4},
        {"contact.email": 2},
    ]


async def test_invisible_characters_inside_a_number_do_not_hide_it(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    note = (
        "call 138\u200b0013\u200b8000 or 1\u20603\u20609\u206000139000, id 110105\u00ad19491231002X"
    )
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.json()["note"] == (
        "call [REDACTED:contact.phone] or [REDACTED:contact.phone], "
        "id [REDACTED:identity.id_number]"
    )
    assert gw.log.records[0].pii_redactions == {"contact.phone": 2, "identity.id_number": 1}


async def test_controls_and_default_ignorable_characters_inside_a_number_do_not_hide_it(
    make_gateway: GatewayFactory,
) -> None:
    # The combining grapheme joiner, a variation selector, a Hangul filler, NUL and DEL are
    # drawn as nothing, like the zero-width space.
    gw = await make_gateway()
    note = (
        "call 138\u034f0013\u034f8000, 139\ufe0f00139000 or 137\u316400137000, "
        "id 110105\x00198806052715, 110105\x7f19491231002X"
    )
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.json()["note"] == (
        "call [REDACTED:contact.phone], [REDACTED:contact.phone] or [REDACTED:contact.phone], "
        "id [REDACTED:identity.id_number], [REDACTED:identity.id_number]"
    )
    assert gw.log.records[0].pii_redactions == {"contact.phone": 3, "identity.id_number": 2}


async def test_numbers_grouped_with_unicode_spaces_and_dashes_never_reach_the_partner(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    thin, em_dash = "\u2009", "\u2014"
    number = "11010519491231002X"  # a valid one, with its check digit
    id_number = thin.join((number[:6], number[6:14], number[14:]))
    phone = em_dash.join(("138", "0013", "8000"))
    note = f"guardian ID {id_number}, call {phone}"
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.json()["note"] == (
        "guardian ID [REDACTED:identity.id_number], call [REDACTED:contact.phone]"
    )
    assert number[6:14].encode() not in seen.body
    assert gw.log.records[0].pii_redactions == {"contact.phone": 1, "identity.id_number": 1}


@pytest.mark.parametrize(
    "shape",
    [
        "{0} {1} {2} {3}",  # 6-4-4-4, as on many forms
        "{0}-{1}-{2}-{3}",
        "{0}\u2009{1}{2}{3}",  # 6-12, a thin space
        "{0}/{1}{2}/{3}",  # 6-8-4, slashes
        "{0}/{1}/{2}-{3}",
    ],
)
async def test_an_id_number_in_groups_in_a_note_never_reaches_the_partner(
    make_gateway: GatewayFactory, shape: str
) -> None:
    gw = await make_gateway()
    number = "11010520160304105X"  # a child's, born 2016-03-04
    written = shape.format(number[:6], number[6:10], number[10:14], number[14:])
    note = f"guardian of child, ID {written}; order 202403041230451234"
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.json()["note"] == (
        "guardian of child, ID [REDACTED:identity.id_number]; order 202403041230451234"
    )
    assert gw.log.records[0].pii_redactions == {"identity.id_number": 1}


async def test_a_first_generation_id_number_in_a_note_never_reaches_the_partner(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    # 15 digits (born 1985-03-04), plain and grouped 6-6-3; beside them 15- to 18-digit numbers
    # that are no ID number (no province 86 or 20; month 13) go as they are.
    note = (
        "old card 110105850304123, also written 110105-850304-123; "
        "IMEI 861234567890123, order 202403041230451, ref 110105 851304 123, "
        "ext 13800138000-1234"
    )
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": note}, purpose="service_delivery"
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.json()["note"] == (
        "old card [REDACTED:identity.id_number], also written [REDACTED:identity.id_number]; "
        "IMEI 861234567890123, order 202403041230451, ref 110105 851304 123, "
        "ext [REDACTED:contact.phone]-1234"
    )
    assert gw.log.records[0].pii_redactions == {"identity.id_number": 2, "contact.phone": 1}


# A partner's answer of `OFFLOAD_BODY_BYTES` or more is parsed and filtered in the same threads.


def report(size: int, *, band: str = "B") -> bytes:
    """A partner's answer of exactly `size` bytes: a score, and reasons whose codes are kept and
    whose texts (naming the applicant) are stripped, padded by a stripped key."""
    reasons = [
        {"code": f"R{i}", "text": f"late payment by Wang at bank {i}"} for i in range(size // 60)
    ]
    doc: dict[str, Any] = {"band": band, "score": 712, "reasons": reasons, "padding": ""}
    doc["padding"] = "x" * (size - len(orjson.dumps(doc)))
    raw = orjson.dumps(doc)
    assert len(raw) == size
    return raw


def held_answers(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """(entered, held): an answer whose band starts with `HOLD` is held in its parse, once
    `entered` is set, until the test sets `held`."""
    entered, held = threading.Event(), threading.Event()

    def parse(raw: bytes, *, max_depth: int) -> dict[str, JSONValue]:
        if raw.startswith(b'{"band":"' + HOLD.encode()):
            entered.set()
            # In the event loop, nothing else is answered until this wait runs out.
            held.wait(5)
        return parse_json(raw, max_depth=max_depth)

    monkeypatch.setattr(pipeline, "parse_json", parse)
    return entered, held


def delivered(outcome: ShareOutcome) -> tuple[object, ...]:
    """An outcome but for what differs between two shares of the same answer: id and time."""
    return (outcome.outcome, outcome.upstream_status, outcome.bytes_received)


async def test_a_big_answer_held_in_a_thread_holds_up_no_other_share_nor_health(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    entered, held = held_answers(monkeypatch)
    gw.partner.answer(200, report(2 * pipeline.OFFLOAD_BODY_BYTES, band=HOLD))
    big = asyncio.create_task(gw.share("POST", ASSESS, json=applicant()))
    assert await asyncio.to_thread(entered.wait, 5)
    gw.partner.answer(200, {"score": 1, "band": "A"})
    small = await gw.share("POST", ASSESS, json=applicant())
    health = await gw.client.get("/_gateway/health")
    big_still_held = not big.done()
    held.set()
    response = await big
    assert (small.status, health.status, response.status) == (200, 200, 200)
    assert big_still_held
    assert await small.json() == {"score": 1}
    answer = await response.json()
    assert (answer["score"], len(answer["reasons"])) == (712, 2 * pipeline.OFFLOAD_BODY_BYTES // 60)
    assert answer["reasons"][0] == {"code": "R0"}
    assert [o.upstream_status for o in gw.log.outcomes] == [200, 200]


@pytest.mark.parametrize(
    ("size", "status", "worker"),
    [
        (pipeline.OFFLOAD_BODY_BYTES - 1, 200, False),
        (pipeline.OFFLOAD_BODY_BYTES, 200, True),
        (4 * pipeline.OFFLOAD_BODY_BYTES, 422, True),
    ],
    ids=["below", "at", "error-answer"],
)
async def test_a_big_answer_filtered_in_a_thread_is_answered_as_in_the_loop(
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    status: int,
    worker: bool,
) -> None:
    gw = await make_gateway()
    gw.partner.answer(status, report(size), **{"Content-Type": "application/problem+json"})
    threads = parsed_in(monkeypatch)
    answers = []
    for _ in ("maybe in a thread", "in the loop"):
        response = await gw.share("POST", ASSESS, json=applicant())
        headers = {k: v for k, v in response.headers.items() if k not in {"X-Share-Id", "Date"}}
        answers.append((response.status, headers, await response.read()))
        in_the_loop(monkeypatch)
    # Each share parses its request body (in the loop), then the partner's answer.
    here = threading.current_thread().name
    assert [name != here for name in threads] == [False, worker, False, False]
    assert answers[0] == answers[1]
    assert answers[0][0] == status
    assert answers[0][1]["Content-Type"] == "application/problem+json"
    answer = orjson.loads(answers[0][2])
    assert (set(answer), len(answer["reasons"])) == ({"score", "reasons"}, size // 60)
    outcome, outcome_in_loop = gw.log.outcomes
    assert delivered(outcome) == delivered(outcome_in_loop) == ("delivered", status, size)


@pytest.mark.parametrize(
    ("status", "answered"),
    [(200, 502), (500, 500)],
    ids=["success-is-502", "error-loses-its-body"],
)
@pytest.mark.parametrize("broken", ["duplicate-keys", "cut-short"])
async def test_a_big_answer_that_does_not_parse_in_a_thread_is_answered_as_in_the_loop(
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    answered: int,
    broken: str,
) -> None:
    gw = await make_gateway()
    raw = report(2 * pipeline.OFFLOAD_BODY_BYTES)
    raw = b'{"score":1,' + raw[1:] if broken == "duplicate-keys" else raw[:-2]
    gw.partner.answer(status, raw)
    threads = parsed_in(monkeypatch)
    answers = []
    for _ in ("in a thread", "in the loop"):
        response = await gw.share("POST", ASSESS, json=applicant())
        body = await response.read()
        error = orjson.loads(body)["error"] if body else {}
        kept = {k: v for k, v in error.items() if k != "share_id"}
        answers.append((response.status, response.headers.get("Content-Type"), kept, body == b""))
        in_the_loop(monkeypatch)
    assert threads[1] != threading.current_thread().name
    assert answers[0] == answers[1]
    if answered == 502:
        assert answers[0][2]["code"] == "upstream_error"
    else:
        assert answers[0] == (500, None, {}, True)
    assert [r.decision for r in gw.log.records] == ["shared", "shared"]
    outcome, outcome_in_loop = gw.log.outcomes
    assert delivered(outcome) == delivered(outcome_in_loop) == ("delivered", status, len(raw))


async def test_a_fault_while_filtering_a_big_answer_in_a_thread_is_502_with_its_outcome(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    gw.partner.answer(200, report(2 * pipeline.OFFLOAD_BODY_BYTES))
    threads: list[str] = []

    def broken(raw: bytes, *, max_depth: int) -> dict[str, JSONValue]:
        if raw.startswith(b'{"band"'):
            threads.append(threading.current_thread().name)
            raise RecursionError("a fault of the gateway's own")
        return parse_json(raw, max_depth=max_depth)

    monkeypatch.setattr(pipeline, "parse_json", broken)
    with structlog.testing.capture_logs() as logs:
        response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 502
    body = await response.json()
    assert body["error"]["code"] == "upstream_error"
    assert response.headers["X-Share-Id"] == body["error"]["share_id"]
    assert threads[0] != threading.current_thread().name
    [outcome] = gw.log.outcomes
    assert (outcome.share_id, outcome.outcome, outcome.upstream_status) == (
        body["error"]["share_id"],
        "delivered",
        200,
    )
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["response_filter_failed"]


async def test_a_share_cancelled_while_its_answer_is_in_a_thread_still_records_its_outcome(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    entered, held = held_answers(monkeypatch)
    handlers: list[asyncio.Task[Any]] = []
    forward = pipeline.forward

    async def forwarding(flow: pipeline.Flow, runtime: Runtime) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        return await forward(flow, runtime)

    monkeypatch.setattr(pipeline, "forward", forwarding)
    gw.partner.answer(200, report(2 * pipeline.OFFLOAD_BODY_BYTES, band=HOLD))
    big = asyncio.create_task(gw.share("POST", ASSESS, json=applicant()))
    assert await asyncio.to_thread(entered.wait, 5)
    handlers[0].cancel()  # as the server does with the shares left when it stops
    held.set()
    with pytest.raises(ClientError):
        await big
    # The partner has the share: what became of it is recorded all the same.
    [record] = gw.log.records
    [outcome] = gw.log.outcomes
    assert (outcome.share_id, outcome.outcome, outcome.upstream_status) == (
        record.share_id,
        "delivered",
        200,
    )
    # The thread is free again for the next big answer.
    gw.partner.answer(200, report(2 * pipeline.OFFLOAD_BODY_BYTES))
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200, await response.text()
    assert (await response.json())["score"] == 712


# --- 7. the partner's answer ----------------------------------------------------------------------


async def test_response_fields_are_filtered(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.partner.answer(
        200,
        {
            "score": 712,
            "band": "B",
            "applicant_name": "Wang",
            "reasons": [{"code": "R1", "text": "late payment at bank X"}, {"text": "x"}],
        },
    )
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200
    assert await response.read() == b'{"score":712,"reasons":[{"code":"R1"},{}]}'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>ok</html>", "text/html"),
        (b'{"score": 1, "score": 2}', "application/json"),
        (b'{"score": 1}', "text/plain"),
        (b"[1]", "application/json"),
    ],
    ids=["html", "duplicate_keys", "json_as_text", "array"],
)
async def test_unfilterable_success_answer_is_502(
    make_gateway: GatewayFactory, body: bytes, content_type: str
) -> None:
    gw = await make_gateway()
    gw.partner.answer(200, body, **{"Content-Type": content_type})
    response = await gw.share("POST", ASSESS, json=applicant())
    data = await response.read()
    assert response.status == 502
    assert orjson.loads(data)["error"]["code"] == "upstream_error"
    assert b"score" not in data
    assert b"html" not in data
    assert len(gw.partner.received) == 1  # the share itself was made and recorded
    assert gw.log.records[-1].decision == "shared"


@pytest.mark.parametrize("status", [200, 202, 204])
async def test_an_empty_answer_needs_no_filtering(
    make_gateway: GatewayFactory, status: int
) -> None:
    gw = await make_gateway()
    gw.partner.answer(status, b"")
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == status
    assert await response.read() == b""
    assert gw.log.outcomes[-1].upstream_status == status


async def test_without_a_response_plan_the_answer_passes_unchanged(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    answer = b"plain \x00\xff bytes, {not json"
    gw.partner.answer(201, answer, **{"Content-Type": "application/octet-stream"})
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": "n"}, purpose="service_delivery"
    )
    assert response.status == 201
    assert await response.read() == answer
    assert response.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("status", [400, 404, 409, 422, 500, 503])
async def test_partner_errors_come_back_with_their_status(
    make_gateway: GatewayFactory, status: int
) -> None:
    gw = await make_gateway()
    gw.partner.answer(status, {"score": 0, "debug": "stack trace with Wang"})
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == status
    assert await response.json() == {"score": 0}  # filtered like any answer on this route
    assert response.headers["X-Share-Id"] == gw.log.records[-1].share_id
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", status)


async def test_partner_error_that_cannot_be_filtered_loses_its_body(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    gw.partner.answer(500, b"Traceback: Wang 110105198806052719", **{"Content-Type": "text/plain"})
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 500
    assert await response.read() == b""


@pytest.mark.parametrize("status", [401, 407])
async def test_a_partner_refusing_the_gateways_credentials_is_502(
    make_gateway: GatewayFactory, status: int
) -> None:
    # Passed on, a 401 would tell the caller its own token failed: it would renew it and send
    # the same personal data again.
    gw = await make_gateway()
    gw.partner.answer(status, {"score": 1}, **{"WWW-Authenticate": "Bearer"})
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_error"
    assert "WWW-Authenticate" not in response.headers
    assert len(gw.partner.received) == 1
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", status)


async def test_a_fault_while_filtering_the_answer_is_502_with_its_outcome(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The partner has the share: its outcome is recorded, and the caller gets the share id and
    # nothing of the answer, never a bare 500 and a share left `pending`.
    gw = await make_gateway()
    gw.partner.answer(200, {"score": 1, "private": "x"})

    def broken(*args: object) -> bytes:
        raise RecursionError("a fault of the gateway's own")

    monkeypatch.setattr("gateway.pipeline.filter_response", broken)
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 502
    body = await response.json()
    assert body["error"]["code"] == "upstream_error"
    assert response.headers["X-Share-Id"] == body["error"]["share_id"]
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", 200)


@pytest.mark.parametrize(
    ("broken", "outcome"),
    [("gateway.pipeline.upstream_request", "error"), ("send", "possibly_delivered")],
    ids=["before_sending", "while_sending"],
)
async def test_a_fault_while_sending_is_502_with_its_outcome(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, broken: str, outcome: str
) -> None:
    # Not a failure the partner client knows (those are UpstreamFailure): still the spec's
    # 502 with the share id, and an outcome, never aiohttp's bare 500 and a share left
    # `pending`. Once the send began, bytes may have left: the partner may have the share.
    gw = await make_gateway()

    def fault(*args: object) -> object:
        raise UnicodeError("label empty or too long: 13800138000")

    async def failing_send(*args: object) -> object:
        fault()
        raise AssertionError("unreachable")

    if broken == "send":
        monkeypatch.setattr(gw.runtime.upstream, "send", failing_send)
    else:
        monkeypatch.setattr(broken, fault)
    with structlog.testing.capture_logs() as logs:
        response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 502
    body = await response.json()
    assert body["error"]["code"] == "upstream_error"
    assert response.headers["X-Share-Id"] == body["error"]["share_id"]
    assert [r.decision for r in gw.log.records] == ["shared"]
    [recorded] = gw.log.outcomes
    assert (recorded.share_id, recorded.outcome) == (body["error"]["share_id"], outcome)
    assert gw.partner.received == []
    [failed] = [entry for entry in logs if entry["event"] == "upstream_send_failed"]
    assert failed["error"] == "UnicodeError"
    assert "13800138000" not in repr(logs)


async def test_partner_429_comes_back_with_retry_after(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.partner.answer(429, {"error": "slow down"}, **{"Retry-After": "17"})
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": "n"}, purpose="service_delivery"
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "17"
    assert await response.json() == {"error": "slow down"}


# --- 8. uploads -----------------------------------------------------------------------------------

PDF = b"%PDF-1.7\n" + bytes(range(256)) + b'\r\n{"applicant": 1}\n%%EOF'
UPLOAD = "/acme/v1/documents/doc-1"


async def test_upload_forwards_the_exact_bytes(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "PUT", UPLOAD + "?owner=u-1", data=PDF, headers={"Content-Type": "application/pdf"}
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert (seen.method, seen.target, seen.body) == ("PUT", "/v1/documents/doc-1", PDF)
    assert seen.headers["Content-Type"] == "application/pdf"
    assert seen.headers["Content-Length"] == str(len(PDF))
    [record] = gw.log.records
    assert (record.decision, record.route, record.bytes_sent) == (
        "shared",
        "PUT /v1/documents/{doc_id}",
        len(PDF),
    )
    # Unread, the body went whole and may hold any personal category the contract names; the
    # document's id went in the URL.
    assert record.fields_sent == ("**", "path.doc_id")
    assert set(record.categories_sent) >= {"identity.id_number", "contact.phone"}
    assert record.fields_stripped == ("query.owner",)  # never forwarded, and the record says so


async def test_upload_passes_the_header_its_route_names(make_gateway: GatewayFactory) -> None:
    upload = {
        "method": "PUT",
        "path": "/v1/files/{file_id}",
        "purpose": "credit_assessment",
        "content_types": ["application/pdf", "image/png"],
        "headers": ["X-Checksum-Sha256"],
    }
    gw = await make_gateway([contract(routes=routes(upload))])
    response = await gw.share(
        "PUT",
        "/acme/v1/files/f-1",
        data=b"\x89PNG\r\n",
        headers={"Content-Type": "image/png", "X-Checksum-Sha256": "c0ffee", "X-Custom": "x"},
    )
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.body == b"\x89PNG\r\n"
    assert seen.headers["X-Checksum-Sha256"] == "c0ffee"
    assert "X-Custom" not in seen.headers
    # What the partner received of the caller's headers is named in the record, as fields are.
    assert gw.log.records[-1].fields_sent == ("**", "header.x-checksum-sha256", "path.file_id")


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ('application/pdf; name="Wang ID card.pdf"', "application/pdf"),
        ("Application/PDF", "application/pdf"),
        ("text/plain; charset=UTF-8; filename=wang.txt", "text/plain; charset=utf-8"),
        ('text/plain; charset="Wang 13800138000"', "text/plain"),
    ],
)
async def test_upload_content_type_parameters_stay_behind(
    make_gateway: GatewayFactory, sent: str, forwarded: str
) -> None:
    upload = {
        "method": "PUT",
        "path": "/v1/files/{file_id}",
        "purpose": "credit_assessment",
        "content_types": ["application/pdf", "text/plain"],
    }
    gw = await make_gateway([contract(routes=routes(upload))])
    response = await gw.share(
        "PUT", "/acme/v1/files/f-1", data=b"bytes", headers={"Content-Type": sent}
    )
    assert response.status == 200
    assert gw.partner.received[0].headers.getall("Content-Type") == [forwarded]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/zip", "text/plain", "application/pdfx", "image/png"],
)
async def test_upload_with_an_unlisted_type_is_415(
    make_gateway: GatewayFactory, content_type: str
) -> None:
    gw = await make_gateway()
    response = await gw.share("PUT", UPLOAD, data=PDF, headers={"Content-Type": content_type})
    await assert_refused(gw, response, 415, "unsupported_media_type")


async def test_upload_without_a_content_type_is_415(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.client.put(
        UPLOAD,
        data=PDF,
        headers={"Authorization": f"Bearer {gw.token()}", "X-Share-Purpose": "credit_assessment"},
        skip_auto_headers=["Content-Type"],
    )
    await assert_refused(gw, response, 415, "unsupported_media_type")


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_upload_with_a_content_encoding_is_415(
    make_gateway: GatewayFactory, coding: str
) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "PUT",
        UPLOAD,
        data=gzip.compress(PDF),
        headers={"Content-Type": "application/pdf", "Content-Encoding": coding},
    )
    await assert_refused(gw, response, 415, "unsupported_media_type")


async def test_upload_over_the_limit_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    response = await gw.share(
        "PUT", UPLOAD, data=b"%PDF" + b"x" * 2000, headers={"Content-Type": "application/pdf"}
    )
    await assert_refused(gw, response, 413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(30):
            yield b"x" * 100

    response = await gw.client.put(
        UPLOAD,
        data=chunks(),
        headers={
            "Content-Type": "application/pdf",
            "Authorization": f"Bearer {gw.token()}",
            "X-Share-Purpose": "credit_assessment",
        },
    )
    await assert_refused(gw, response, 413, "body_too_large")


# --- the share log ------------------------------------------------------------------------------


async def test_no_share_without_a_record(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.log.available = False
    response = await gw.share("POST", ASSESS, json=applicant())
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (503, "share_log_unavailable")
    assert response.headers["X-Share-Id"] == body["error"]["share_id"]
    assert gw.partner.received == []
    assert gw.log.records == []


async def test_a_refusal_the_share_log_cannot_record_is_still_answered_and_logged(
    make_gateway: GatewayFactory,
) -> None:
    # Nothing is shared, so the caller gets the refusal it earned, not a 503 or a bare 500;
    # the record that could not be written is named in the gateway's own log.
    gw = await make_gateway()
    gw.log.available = False
    with structlog.testing.capture_logs() as lines:
        response = await gw.share("POST", ASSESS, json=applicant(), purpose="marketing")
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (403, "purpose_denied")
    assert gw.partner.received == []
    failed = [line for line in lines if line["event"] == "share_record_failed"]
    assert [(f["share_id"], f["reason"]) for f in failed] == [
        (response.headers["X-Share-Id"], "purpose_denied")
    ]


async def test_a_share_whose_record_took_too_long_is_not_sent(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart looks for the shares in a rate's window only so far back: one that went out
    # later than that after its decision would be missed.
    monkeypatch.setattr(pipeline, "MAX_RECORD_WAIT_S", 0.05)
    gw = await make_gateway([contract(terms={"max_records_per_day": 1})])
    recorded = gw.log.record

    async def stalled(record: ShareRecord) -> None:
        await asyncio.sleep(0.2)  # a disk that held the commit (an fsync) that long
        await recorded(record)

    monkeypatch.setattr(gw.log, "record", stalled)
    with structlog.testing.capture_logs() as lines:
        response = await gw.share("POST", ASSESS, json=applicant())
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (503, "share_log_unavailable")
    assert "nothing was sent" in body["error"]["message"]
    assert gw.partner.received == []
    share_id = response.headers["X-Share-Id"]
    assert [(r.share_id, r.decision) for r in gw.log.records] == [(share_id, "shared")]
    outcome = gw.log.outcome_of(share_id)
    assert outcome is not None
    assert outcome.outcome == "error"  # never left: counts for no cap
    assert any(line["event"] == "share_record_late" for line in lines)

    monkeypatch.setattr(gw.log, "record", recorded)
    assert (await gw.share("POST", ASSESS, json=applicant())).status == 200  # the day's one
    assert len(gw.partner.received) == 1


# Refusals that come after the body was filtered: the record must not claim what was not sent.
LATE_REFUSALS = {
    "consent_required": contract(
        partner={"relationship": "third_party"},
        terms={"sensitive": {"allowed": ["identity.id_number"], "consent_required": True}},
        routes=BASE_CONTRACT["routes"][:1],  # each route of a third party names its subject
    ),
    "minor_denied": contract(terms={"minors": "deny"}),
    "quota_exceeded": contract(terms={"max_records_per_day": 1}),
}
CHILD_ID = "110105201801010019"  # a valid resident ID number of a child born in 2018


@pytest.mark.parametrize("reason", sorted(LATE_REFUSALS))
async def test_a_late_refusal_records_no_field_as_sent(
    make_gateway: GatewayFactory, reason: str
) -> None:
    gw = await make_gateway([LATE_REFUSALS[reason]])
    doc = {"applicant": {"user_id": "u-1", "name": "Wang", "id_number": CHILD_ID}}
    if reason == "quota_exceeded":  # the day's one record goes first
        assert (await gw.share("POST", ASSESS, json=doc)).status == 200
        gw.partner.received.clear()
    response = await gw.share("POST", ASSESS, json=doc)
    await assert_refused(gw, response, 403 if reason != "quota_exceeded" else 429, reason)
    record = gw.log.records[-1]  # assert_refused: no field named as sent
    assert record.subject_refs  # whom it was about stays recorded
    assert record.fields_stripped == ()


class OutcomeLossLog(MemoryShareLog):
    """Keeps records but cannot write outcomes."""

    async def record_outcome(self, outcome: ShareOutcome) -> None:
        raise ShareLogUnavailable("the share log cannot be written")

    def submit_outcome(self, outcome: ShareOutcome) -> None:
        raise ShareLogUnavailable("the share log cannot be written")


async def test_a_lost_outcome_still_answers_with_the_partners_reply(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(share_log=OutcomeLossLog())
    gw.partner.answer(200, {"score": 700})
    response = await gw.share("POST", ASSESS, json=applicant())
    assert response.status == 200
    assert await response.json() == {"score": 700}
    assert len(gw.partner.received) == 1
    assert [r.decision for r in gw.log.records] == ["shared"]


# --- 9. caller tokens -----------------------------------------------------------------------------

UNTRUSTED = rsa_key(kid="idp-1")  # claims the trusted key's id, signs with another key
SECOND_TRUSTED = rsa_key(kid="idp-0")

TOKENS: dict[str, Callable[[SigningKey], str]] = {
    "expired": lambda k: mint(k, scope=SCOPE, now=time.time() - 3600, ttl_s=60),
    "not_yet_valid": lambda k: mint(k, scope=SCOPE, nbf=int(time.time()) + 3600),
    "issued_in_the_future": lambda k: mint(k, scope=SCOPE, now=time.time() + 3600),
    "wrong_audience": lambda k: mint(k, scope=SCOPE, audience="another-service"),
    "audience_list_without_ours": lambda k: mint(k, scope=SCOPE, audience=["a", "b"]),
    "wrong_issuer": lambda k: mint(k, scope=SCOPE, issuer="https://idp.evil.example"),
    "missing_exp": lambda k: mint(k, scope=SCOPE, omit=["exp"]),
    "missing_iss": lambda k: mint(k, scope=SCOPE, issuer=None),
    "missing_aud": lambda k: mint(k, scope=SCOPE, audience=None),
    "alg_none": lambda k: unsigned(scope=SCOPE),
    "alg_none_with_signature": lambda k: sign_raw(
        {"typ": "JWT", "alg": "none"}, claims(scope=SCOPE), k, sign_as="RS256"
    ),
    "hs256_signed_with_the_public_key": lambda k: sign_raw(
        {"typ": "JWT", "alg": "HS256", "kid": k.kid}, claims(scope=SCOPE), secret=k.public_pem()
    ),
    "rs256_header_on_another_key": lambda k: mint(UNTRUSTED, scope=SCOPE),
    "ps256_not_allowed": lambda k: mint(k.with_algorithm("PS256"), scope=SCOPE),
    "tampered_claims": lambda k: _tamper(mint(k, scope="share:other:*")),
    "garbage": lambda k: "not-a-jwt",
}


def _tamper(token: str) -> str:
    header, _payload, signature = token.split(".")
    forged = base64.urlsafe_b64encode(orjson.dumps(claims(scope=SCOPE))).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("make_token", TOKENS.values(), ids=TOKENS.keys())
async def test_invalid_tokens_are_401(
    make_gateway: GatewayFactory, idp_key: SigningKey, make_token: Callable[[SigningKey], str]
) -> None:
    gw = await make_gateway()
    response = await gw.share("POST", ASSESS, json=applicant(), token=make_token(idp_key))
    await assert_refused(gw, response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert gw.log.records[-1].caller is None


async def test_unknown_kid_is_401_with_a_jwks_file(
    make_gateway: GatewayFactory, idp_key: SigningKey, tmp_path: Path
) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", idp_key, SECOND_TRUSTED)
    gw = await make_gateway(settings={"auth": {"public_key_file": None, "jwks_file": jwks}})
    for trusted in (idp_key, SECOND_TRUSTED):  # both configured keys work
        token = mint(trusted, scope=SCOPE)
        response = await gw.share("POST", ASSESS, json=applicant(), token=token)
        assert response.status == 200
    gw.partner.received.clear()
    for token in (
        mint(idp_key.with_kid("idp-9"), scope=SCOPE),  # a kid the set does not hold
        mint(idp_key.with_kid(None), scope=SCOPE),  # no kid, and two keys are trusted
        mint(UNTRUSTED, scope=SCOPE),  # a trusted kid on a token another key signed
        mint(idp_key, scope=SCOPE, headers={"kid": "idp-0"}),  # the other trusted key's kid
    ):
        response = await gw.share("POST", ASSESS, json=applicant(), token=token)
        await assert_refused(gw, response, 401, "invalid_token")


async def test_two_authorization_headers_are_401(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    token = gw.token()
    response = await raw_request(
        gw,
        "POST",
        ASSESS,
        headers=[("Content-Type", "application/json"), ("Authorization", f"Bearer {token}")],
        body=orjson.dumps(applicant()),
    )
    await assert_refused(gw, response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_upload_with_two_content_encodings_is_refused(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await raw_request(
        gw,
        "PUT",
        "/acme/v1/documents/d1",
        headers=[
            ("Content-Type", "application/pdf"),
            ("Content-Encoding", "identity"),
            ("Content-Encoding", "gzip"),
        ],
        body=gzip.compress(b"%PDF-1.7"),
    )
    await assert_refused(gw, response, 400, "malformed_request")


# --- big bodies: worked on in a thread, the loop free for every other request ------------------

BATCH_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/batch",
    "purpose": "credit_assessment",
    "records": "applicants[]",
    "subject": "applicants[].user_id",
    "fields": [
        {"path": "applicants[].name", "category": "identity.name"},
        {"path": "applicants[].id_number", "category": "identity.id_number", "transform": "hash"},
        {"path": "applicants[].note", "category": "business.note"},
    ],
}
# A scanned string starting with this is held in the scanner until the test lets it go.
HOLD = "hold:"


def batch(size: int, *, without_subject: bool = False) -> bytes:
    """A batch body of exactly `size` bytes: applicants whose notes hold phone numbers (redacted)
    and whose e-mail addresses are stripped, padded by a stripped key; the last applicant
    without its user id if `without_subject`."""
    applicants = [
        {
            "user_id": f"u-{i}",
            "name": "Wang",
            "id_number": ID_NUMBER,
            "email": f"wang{i}@example.com",
            "note": f"call 1380013{i:04d} after lunch",
        }
        for i in range(size // 200)
    ]
    if without_subject:
        del applicants[-1]["user_id"]
    doc: dict[str, Any] = {"applicants": applicants, "padding": ""}
    doc["padding"] = "x" * (size - len(orjson.dumps(doc)))
    raw = orjson.dumps(doc)
    assert len(raw) == size
    return raw


def hold_scans(gw: Gateway) -> tuple[threading.Event, threading.Event, list[bool]]:
    """(entered, held, released): a text starting with `HOLD` is held in its scan, once
    `entered` is set, until the test sets `held`; `released` says for each whether it was set
    within 5 s. In the event loop (or behind a single thread) nothing the test waits for could
    be answered meanwhile: the wait runs out instead."""
    entered, held = threading.Event(), threading.Event()
    released: list[bool] = []

    def scanner(text: str, allowed: frozenset[str]) -> tuple[str, dict[str, int]]:
        if text.startswith(HOLD):
            entered.set()
            released.append(held.wait(5))
        return scan(text, allowed)

    gw.runtime.scanner = scanner
    return entered, held, released


def fault_in_scans(gw: Gateway) -> None:
    """A text starting with `fault:` makes the scanner fail, as a fault of the gateway's own."""

    def scanner(text: str, allowed: frozenset[str]) -> tuple[str, dict[str, int]]:
        if text.startswith("fault:"):
            raise RecursionError("a fault of the gateway's own")
        return scan(text, allowed)

    gw.runtime.scanner = scanner


async def refused_twice(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, status: int, code: str, path: str, **share: Any
) -> list[dict[str, Any]]:
    """The error of two identical shares, each refused `status` `code`: the first worked on as
    the test set it up (in a thread), the second in the loop; without their share ids."""
    answers = []
    for _ in ("in a thread", "in the loop"):
        response = await gw.share("POST", path, **share)
        await assert_refused(gw, response, status, code)
        error = (await response.json())["error"]
        answers.append({k: v for k, v in error.items() if k != "share_id"})
        in_the_loop(monkeypatch)
    return answers


def parsed_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads the request bodies are parsed in, from now on."""
    threads: list[str] = []

    def spy(raw: bytes, *, max_depth: int) -> dict[str, JSONValue]:
        threads.append(threading.current_thread().name)
        return parse_json(raw, max_depth=max_depth)

    monkeypatch.setattr(pipeline, "parse_json", spy)
    return threads


def in_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every body from now on is worked on in the event loop, as every body once was."""
    monkeypatch.setattr(pipeline, "OFFLOAD_BODY_BYTES", 2**62)


def decided(record: ShareRecord) -> dict[str, object]:
    """A record but for what differs between two shares of the same request: id and time."""
    fields = {name: getattr(record, name) for name in ShareRecord.__slots__}
    return {k: v for k, v in fields.items() if k not in {"share_id", "ts"}}


async def test_a_big_body_held_in_a_thread_holds_up_no_other_share_nor_health(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    entered, held, released = hold_scans(gw)
    body = applicant(tags=[HOLD + "x" * pipeline.OFFLOAD_BODY_BYTES])
    big = asyncio.create_task(gw.share("POST", ASSESS, json=body))
    assert await asyncio.to_thread(entered.wait, 5)
    small = await gw.share("POST", ASSESS, json=applicant(tags=["small"]))
    health = await gw.client.get("/_gateway/health")
    big_still_held = not big.done()
    held.set()
    response = await big
    assert (small.status, health.status, response.status) == (200, 200, 200)
    assert big_still_held
    assert released == [True]
    assert [seen.json()["tags"][0][:5] for seen in gw.partner.received] == ["small", HOLD]


@pytest.mark.parametrize(
    ("size", "coding", "worker"),
    [
        (pipeline.OFFLOAD_BODY_BYTES - 1, "identity", False),
        (pipeline.OFFLOAD_BODY_BYTES, "identity", True),
        # A few hundred bytes on the wire: what is parsed and scanned is what counts.
        (pipeline.OFFLOAD_BODY_BYTES, "gzip", True),
    ],
    ids=["below", "at", "gzip"],
)
async def test_a_big_body_worked_on_in_a_thread_is_shared_as_in_the_loop(
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    coding: str,
    worker: bool,
) -> None:
    gw = await make_gateway([contract(routes=routes(BATCH_ROUTE))])
    threads = parsed_in(monkeypatch)
    raw = batch(size)
    data = gzip.compress(raw) if coding == "gzip" else raw
    headers = {**JSON, "Content-Encoding": coding}
    response = await gw.share("POST", "/acme/v1/batch", data=data, headers=headers)
    assert response.status == 200, await response.text()
    in_the_loop(monkeypatch)
    response = await gw.share("POST", "/acme/v1/batch", data=data, headers=headers)
    assert response.status == 200, await response.text()
    assert [name != threading.current_thread().name for name in threads] == [worker, False]
    sent, sent_in_loop = gw.partner.received
    assert sent.body == sent_in_loop.body
    assert sent.headers["Content-Type"] == sent_in_loop.headers["Content-Type"]
    applicants = sent.json()["applicants"]
    assert len(applicants) == size // 200
    assert applicants[0]["note"] == "call [REDACTED:contact.phone] after lunch"
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)
    assert (record.records, len(record.subject_refs)) == (size // 200, size // 200)
    assert record.pii_redactions == {"contact.phone": size // 200}


@pytest.mark.parametrize("without_subject", [False, True], ids=["duplicate-keys", "no-subject"])
async def test_a_big_body_refused_in_a_thread_is_refused_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, without_subject: bool
) -> None:
    gw = await make_gateway([contract(routes=routes(BATCH_ROUTE))])
    threads = parsed_in(monkeypatch)
    size = 2 * pipeline.OFFLOAD_BODY_BYTES
    raw = batch(size, without_subject=without_subject)
    if not without_subject:
        raw = b'{"padding":"",' + raw[1:]
    answers = await refused_twice(
        gw, monkeypatch, 400, "malformed_body", "/acme/v1/batch", data=raw, headers=JSON
    )
    assert threads[0] != threading.current_thread().name
    assert answers[0] == answers[1]
    assert answers[0]["message"].startswith("record" if without_subject else "the body has dup")
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)
    # Refused for one record, a batch is still about the people the others name.
    named = size // 200 - 1 if without_subject else 0
    assert len(record.subject_refs) == named


async def test_a_share_cancelled_while_its_body_is_in_a_thread_sends_nothing(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    entered, held, _ = hold_scans(gw)
    handlers: list[asyncio.Task[Any]] = []
    read_payload = pipeline.read_payload

    async def reading(flow: pipeline.Flow, request: web.Request, runtime: Runtime) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await read_payload(flow, request, runtime)

    monkeypatch.setattr(pipeline, "read_payload", reading)
    big = asyncio.create_task(
        gw.share("POST", ASSESS, json=applicant(tags=[HOLD + "x" * pipeline.OFFLOAD_BODY_BYTES]))
    )
    assert await asyncio.to_thread(entered.wait, 5)
    handlers[0].cancel()  # as the server does with the shares left when it stops
    held.set()
    with pytest.raises(ClientError):
        await big
    # The thread is free again for the next big body.
    body = applicant(tags=["next" + "x" * pipeline.OFFLOAD_BODY_BYTES])
    response = await gw.share("POST", ASSESS, json=body)
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert seen.json()["tags"][0].startswith("next")
    [record] = gw.log.records
    assert record.share_id == response.headers["X-Share-Id"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_big_compressed_body_that_inflates_past_the_cap_is_413_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    limit = 100_000
    gw = await make_gateway(settings={"limits": {"max_body_bytes": limit}})
    threads = parsed_in(monkeypatch)
    # Random hex halves at best: tens of KiB on the wire, in the thread's hands, and well over
    # the cap once inflated.
    raw = orjson.dumps(applicant(tags=[os.urandom(limit // 2).hex()]))
    data = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
    assert pipeline.OFFLOAD_BODY_BYTES <= len(data) < limit < len(raw)
    headers = {**JSON, "Content-Encoding": coding}
    answers = await refused_twice(
        gw, monkeypatch, 413, "body_too_large", ASSESS, data=data, headers=headers
    )
    assert answers[0] == answers[1]
    assert threads == []  # refused before a byte of it was parsed
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)


CHILD_ID_NUMBER = "110105202001011237"  # born 1 January 2020


async def test_a_child_outside_a_big_batchs_records_is_refused_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    guarantor = {"path": "guarantor.id_number", "category": "identity.id_number"}
    route = {**BATCH_ROUTE, "fields": [*BATCH_ROUTE["fields"], guarantor]}
    gw = await make_gateway([contract(routes=routes(route), terms={"minors": "deny"})])
    threads = parsed_in(monkeypatch)
    doc = orjson.loads(batch(2 * pipeline.OFFLOAD_BODY_BYTES))
    raw = orjson.dumps({**doc, "guarantor": {"id_number": CHILD_ID_NUMBER}})
    answers = await refused_twice(
        gw, monkeypatch, 403, "minor_denied", "/acme/v1/batch", data=raw, headers=JSON
    )
    assert threads[0] != threading.current_thread().name
    assert answers[0] == answers[1]
    assert "outside the records" in answers[0]["message"]
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)


async def test_a_big_body_about_no_subject_counts_its_records_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    threads = parsed_in(monkeypatch)
    body = {"note": "x" * pipeline.OFFLOAD_BODY_BYTES}
    for _ in ("in a thread", "in the loop"):
        response = await gw.share("POST", "/acme/v1/notes", json=body, purpose="service_delivery")
        assert response.status == 200, await response.text()
        in_the_loop(monkeypatch)
    assert threads[0] != threading.current_thread().name
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)
    # A business note is no personal data, and the route names no subject: nothing to count.
    assert record.records == 0


async def test_a_fault_while_working_on_a_big_body_is_recorded_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()

    fault_in_scans(gw)
    threads = parsed_in(monkeypatch)
    body = applicant(tags=["fault:" + "x" * pipeline.OFFLOAD_BODY_BYTES])
    answers = []
    for _ in ("in a thread", "in the loop"):
        with structlog.testing.capture_logs() as logs:
            response = await gw.share("POST", ASSESS, json=body)
        assert response.status == 500
        error = (await response.json())["error"]
        answers.append({k: v for k, v in error.items() if k != "share_id"})
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["share_failed"]
        in_the_loop(monkeypatch)
    assert threads[0] != threading.current_thread().name
    assert answers[0] == answers[1]
    assert gw.partner.received == []
    record, record_in_loop = gw.log.records
    assert (record.decision, record.reason) == ("error", "internal_error")
    assert decided(record) == decided(record_in_loop)
    # The fault came after the body was read: the record is about the applicant it names.
    assert len(record.subject_refs) == 1


def fields_stripped(partner: str) -> float:
    counted = REGISTRY.get_sample_value("share_gateway_fields_stripped_total", {"partner": partner})
    return counted or 0.0


async def test_a_big_batch_refused_after_its_filter_counts_what_it_stripped_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway([contract(routes=routes(BATCH_ROUTE))])
    threads = parsed_in(monkeypatch)
    raw = batch(2 * pipeline.OFFLOAD_BODY_BYTES, without_subject=True)
    counted = []
    for _ in ("in a thread", "in the loop"):
        before = fields_stripped("acme")
        response = await gw.share("POST", "/acme/v1/batch", data=raw, headers=JSON)
        await assert_refused(gw, response, 400, "malformed_body")
        counted.append(fields_stripped("acme") - before)
        in_the_loop(monkeypatch)
    assert threads[0] != threading.current_thread().name
    # The filter ran before the record without a subject refused the batch.
    assert counted[0] == counted[1] > 0


PROFILE_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/profiles/{user_id}",
    "purpose": "credit_assessment",
    "subject": "path.user_id",
    "fields": [{"path": "tags[]", "category": "business.note"}],
}


@pytest.mark.parametrize("fault", [False, True], ids=["shared", "fault"])
async def test_a_big_body_about_the_subject_its_path_names_is_recorded_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, fault: bool
) -> None:
    gw = await make_gateway([contract(routes=routes(PROFILE_ROUTE))])

    fault_in_scans(gw)
    threads = parsed_in(monkeypatch)
    body = {"tags": [("fault:" if fault else "") + "x" * pipeline.OFFLOAD_BODY_BYTES]}
    for _ in ("in a thread", "in the loop"):
        response = await gw.share("POST", "/acme/v1/profiles/u-7", json=body)
        assert response.status == (500 if fault else 200), await response.text()
        in_the_loop(monkeypatch)
    assert threads[0] != threading.current_thread().name
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)
    assert len(record.subject_refs) == 1
    assert record.records == (0 if fault else 1)


async def test_a_big_body_held_in_one_thread_leaves_the_other_to_the_next_big_body(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    entered, held, released = hold_scans(gw)
    crafted = applicant(tags=[HOLD + "x" * pipeline.OFFLOAD_BODY_BYTES])
    big = asyncio.create_task(gw.share("POST", ASSESS, json=crafted))
    assert await asyncio.to_thread(entered.wait, 5)
    other = await gw.share("POST", ASSESS, json=applicant(tags=["y" * pipeline.OFFLOAD_BODY_BYTES]))
    big_still_held = not big.done()
    held.set()
    response = await big
    assert (other.status, response.status) == (200, 200)
    assert big_still_held
    assert released == [True]


async def test_the_body_threads_end_when_the_runtime_closes(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    workers: list[threading.Thread] = []

    def spy(raw: bytes, *, max_depth: int) -> dict[str, JSONValue]:
        workers.append(threading.current_thread())
        return parse_json(raw, max_depth=max_depth)

    monkeypatch.setattr(pipeline, "parse_json", spy)
    body = applicant(tags=["x" * pipeline.OFFLOAD_BODY_BYTES])
    response = await gw.share("POST", ASSESS, json=body)
    assert response.status == 200, await response.text()
    worker = workers[0]  # the request's body; the partner's small answer is parsed in the loop
    assert worker is not threading.current_thread()
    assert worker.is_alive()  # kept for the next big body
    await gw.client.close()
    await close_runtime(gw.runtime)
    assert not worker.is_alive()


async def test_a_big_body_sends_the_query_its_route_allows_as_in_the_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    threads = parsed_in(monkeypatch)
    body = applicant(tags=["x" * pipeline.OFFLOAD_BODY_BYTES])
    for _ in ("in a thread", "in the loop"):
        response = await gw.share("POST", ASSESS + "?page=2&debug=1", json=body)
        assert response.status == 200, await response.text()
        in_the_loop(monkeypatch)
    assert threads[0] != threading.current_thread().name
    sent, sent_in_loop = gw.partner.received
    assert sent.target == sent_in_loop.target == "/v1/assess?page=2"
    record, record_in_loop = gw.log.records
    assert decided(record) == decided(record_in_loop)


async def test_a_big_body_refused_in_a_thread_is_freed_when_its_share_ends(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(routes=routes(BATCH_ROUTE))])
    # Parsed and filtered, then refused for its last record: the whole body was worked on.
    raw = batch(2 * pipeline.OFFLOAD_BODY_BYTES, without_subject=True)
    gc.collect()
    # The gateway's collector runs seldom (`heap.THRESHOLDS`): what a share leaves in a cycle
    # stays until it does, and with it the body, raw and parsed.
    gc.disable()
    try:
        response = await gw.share("POST", "/acme/v1/batch", data=raw, headers=JSON)
        await assert_refused(gw, response, 400, "malformed_body")
        kept = [o for o in gc.get_objects() if isinstance(o, MalformedBody)]
    finally:
        gc.enable()
    assert kept == []


async def test_a_big_body_refused_for_its_token_or_scope_is_never_parsed(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    threads = parsed_in(monkeypatch)
    raw = orjson.dumps(applicant(tags=["x" * 4 * pipeline.OFFLOAD_BODY_BYTES]))
    gzipped = {**JSON, "Content-Encoding": "gzip"}
    response = await gw.share("POST", ASSESS, data=raw, headers=JSON, token="not-a-token")
    await assert_refused(gw, response, 401, "invalid_token")
    compressed = gzip.compress(raw)
    response = await gw.share("POST", ASSESS, data=compressed, headers=gzipped, token="nope")
    await assert_refused(gw, response, 401, "invalid_token")
    response = await gw.share("POST", ASSESS, data=raw, headers=JSON, scope="share:other:*")
    await assert_refused(gw, response, 403, "scope_denied")
    assert threads == []


async def test_a_reload_while_a_big_body_is_in_a_thread_leaves_it_the_contract_it_started_with(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    entered, held, _ = hold_scans(gw)
    body = applicant(tags=[HOLD + "x" * pipeline.OFFLOAD_BODY_BYTES])
    big = asyncio.create_task(gw.share("POST", ASSESS, json=body))
    assert await asyncio.to_thread(entered.wait, 5)
    # Version 4 no longer lets the loan amount through.
    doc = contract(contract={"version": 4})
    doc["routes"][0]["fields"] = [
        f for f in doc["routes"][0]["fields"] if f["path"] != "loan_amount"
    ]
    doc["upstream"]["base_url"] = gw.partner.base_url
    (gw.runtime.settings.contracts_dir / "acme.yaml").write_text(yaml.safe_dump(doc))
    await gw.runtime.reload()
    held.set()
    response = await big
    assert response.status == 200, await response.text()
    again = await gw.share("POST", ASSESS, json=applicant(tags=["x" * pipeline.OFFLOAD_BODY_BYTES]))
    assert again.status == 200, await again.text()
    sent, sent_after = (seen.json() for seen in gw.partner.received)
    assert (sent["loan_amount"], "loan_amount" in sent_after) == (5000, False)
    record, record_after = gw.log.records
    assert (record.contract_version, record_after.contract_version) == (3, 4)
    assert "loan_amount" in record.fields_sent
    assert "loan_amount" not in record_after.fields_sent
