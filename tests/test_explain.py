"""The dry run: per-field decisions and denials over the bundled contracts, and the CLI command."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp import web_protocol
from aiohttp.http_parser import HttpRequestParserPy
from conftest import BASE_CONTRACT, HASH_KEY, GatewayFactory, contract, raw_request

from gateway.cli import cmd_explain
from gateway.contractset import load_contract_set
from gateway.errors import (
    ContractInactive,
    GatewayError,
    MalformedBody,
    MalformedRequest,
    MinorDenied,
    PurposeDenied,
    RouteDenied,
)
from gateway.explain import Explanation, explain
from gateway.keys import MIN_MASTER_KEY_BYTES, keyed_hash, partner_hash_key
from gateway.policy import PartnerPolicy, Policy, compile_policy
from gateway.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=ZONE)
MASTER_KEY = HASH_KEY.encode()
ID_NUMBER = "110105198806052719"
APPLICANT: dict[str, Any] = {
    "applicant": {
        "user_id": "u-1",
        "name": "Wang",
        "id_number": ID_NUMBER,
        "phone": "13800138000",
        "email": "w@example.com",
        "monthly_income": 18000,
        "birth_date": "1988-06-05",
    },
    "loan_amount": 5000,
    "channel": {"app": "booking"},
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    settings = Settings(contracts_dir=CONTRACTS)
    contracts, problems = load_contract_set(CONTRACTS, settings)
    assert contracts is not None, problems
    return compile_policy(contracts, zone=ZONE, master_key=MASTER_KEY, require_secrets=False)


def run(
    partner: PartnerPolicy,
    route: str,
    purpose: str,
    body: Any = None,
    *,
    now: datetime = NOW,
    raw: bytes | None = None,
) -> Explanation:
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    return explain(partner, route, purpose, data, now=now, max_depth=64)


def trace(explanation: Explanation) -> list[tuple[str, str, str]]:
    return [(d.path, d.action, d.reason) for d in explanation.decisions]


def hashed(partner: str, value: str) -> str:
    return keyed_hash(partner_hash_key(MASTER_KEY, partner), value)


# --- the per-field trace --------------------------------------------------------------------------


def test_each_field_is_kept_transformed_or_stripped_with_its_reason(policy: Policy) -> None:
    result = run(policy.partners["acme-credit"], "POST /v1/assess", "credit_assessment", APPLICANT)
    assert result.route.label == "POST /v1/assess"
    assert trace(result) == [
        ("applicant.user_id", "stripped", "not in the allow-list"),
        ("applicant.name", "kept", "allowed by applicant.name (identity.name)"),
        (
            "applicant.id_number",
            "transformed",
            "hash; allowed by applicant.id_number (identity.id_number)",
        ),
        (
            "applicant.phone",
            "transformed",
            "mask(keep_first=0, keep_last=4); allowed by applicant.phone (contact.phone)",
        ),
        ("applicant.email", "stripped", "not in the allow-list"),
        (
            "applicant.monthly_income",
            "kept",
            "allowed by applicant.monthly_income (financial.income)",
        ),
        ("applicant.birth_date", "stripped", "not in the allow-list"),
        ("loan_amount", "kept", "allowed by loan_amount (business.transaction)"),
        ("channel", "stripped", "not in the allow-list"),
    ]
    assert result.document == {
        "applicant": {
            "name": "Wang",
            "id_number": hashed("acme-credit", ID_NUMBER),
            "phone": "*******8000",
            "monthly_income": 18000,
        },
        "loan_amount": 5000,
    }
    assert result.result.fields_stripped == (
        "applicant.birth_date",
        "applicant.email",
        "applicant.user_id",
        "channel",
    )


def test_batch_records_are_traced_per_element(policy: Policy) -> None:
    body = {
        "batch_id": "b-1",
        "applicants": [
            {"user_id": "u-1", "name": "Wang", "loan_amount": 1, "note": "x"},
            {"user_id": "u-2", "name": {"first": "Li"}, "loan_amount": 2},
        ],
    }
    result = run(policy.partners["acme-credit"], "POST /v1/assess/batch", "credit_assessment", body)
    assert trace(result) == [
        ("batch_id", "kept", "allowed by batch_id (business.reference)"),
        ("applicants[0].user_id", "stripped", "not in the allow-list"),
        ("applicants[0].name", "kept", "allowed by applicants[].name (identity.name)"),
        (
            "applicants[0].loan_amount",
            "kept",
            "allowed by applicants[].loan_amount (business.transaction)",
        ),
        ("applicants[0].note", "stripped", "not in the allow-list"),
        ("applicants[1].user_id", "stripped", "not in the allow-list"),
        ("applicants[1].name", "stripped", "object where a scalar is allowed"),
        (
            "applicants[1].loan_amount",
            "kept",
            "allowed by applicants[].loan_amount (business.transaction)",
        ),
    ]
    assert result.document == {
        "batch_id": "b-1",
        "applicants": [{"name": "Wang", "loan_amount": 1}, {"loan_amount": 2}],
    }


def test_query_parameters_are_explained_too(policy: Policy) -> None:
    result = run(
        policy.partners["cloudvault"], "GET /v1/objects/o-1?version=3&owner=u-1", "service_delivery"
    )
    assert result.result.query == {"version": "3"}
    assert trace(result) == [
        ("query.version", "kept", "allowed by query.version (business.reference)"),
        ("query.owner", "stripped", "not in the allow-list"),
    ]
    assert result.document == {}


def test_free_text_shows_the_redactions_the_gateway_makes(policy: Policy) -> None:
    body = {
        "user_id": "u-1",
        "ticket_id": "T-9",
        "events": [{"at": "2026-01-01T00:00:00Z", "code": "E1", "message": "call 13800138000"}],
    }
    result = run(policy.partners["fixit"], "POST /v1/diagnostics", "technical_maintenance", body)
    events = result.document["events"]
    assert isinstance(events, list)
    assert events[0] == {
        "at": "2026-01-01T00:00:00Z",
        "code": "E1",
        "message": "call [REDACTED:contact.phone]",
    }
    assert result.result.pii_redactions == {"contact.phone": 1}
    [message] = [d for d in result.decisions if d.path == "events[0].message"]
    assert message.action == "kept"
    assert message.reason.endswith("redacted 1 contact.phone")
    assert result.document["user_id"] == hashed("fixit", "u-1")


async def test_the_dry_run_matches_what_the_partner_receives(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    body = {
        "applicant": {"user_id": "u-1", "name": "Wang", "id_number": ID_NUMBER, "x": 1},
        "items": [{"amount": 1, "sku": "s"}],
        "tags": ["a", {"b": 1}],
        "meta": {"note": "reach me at 13800138000"},
        "loan_amount": 9,
    }
    dry = explain(
        gw.runtime.policy.partners["acme"],
        "POST /v1/assess?page=4&debug=1",
        "credit_assessment",
        orjson.dumps(body),
        now=datetime.now(ZONE),
        max_depth=64,
    )
    response = await gw.share("POST", "/acme/v1/assess?page=4&debug=1", json=body)
    assert response.status == 200
    [seen] = gw.partner.received
    assert seen.body == orjson.dumps(dry.document)
    assert seen.target == "/v1/assess?page=4"
    assert dry.result.query == {"page": "4"}
    [record] = gw.log.records
    assert record.fields_sent == dry.result.fields_sent
    assert record.fields_stripped == dry.result.fields_stripped
    assert record.fields_transformed == dry.result.fields_transformed
    assert record.pii_redactions == dry.result.pii_redactions


async def test_the_dry_run_of_an_upload_matches_what_the_partner_receives(
    make_gateway: GatewayFactory,
) -> None:
    # The body goes whole and unread, and nothing of the query: not a denial.
    gw = await make_gateway()
    pdf = b"%PDF-1.7 scanned contract"
    dry = explain(
        gw.runtime.policy.partners["acme"],
        "PUT /v1/documents/d1?version=2",
        "credit_assessment",
        pdf,
        now=datetime.now(ZONE),
        max_depth=64,
    )
    response = await gw.share(
        "PUT",
        "/acme/v1/documents/d1?version=2",
        data=pdf,
        headers={"Content-Type": "application/pdf"},
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert (seen.target, seen.body) == ("/v1/documents/d1", pdf)
    assert dry.upload_bytes == len(pdf)
    assert dry.result.query == {}
    [record] = gw.log.records
    assert dry.result.fields_sent == ("**",)
    assert record.fields_sent == ("**", "path.doc_id")  # and the id the URL holds
    assert record.fields_stripped == dry.result.fields_stripped
    assert record.categories_sent == dry.result.categories_sent


NAMES_BATCH: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/kids",
    "purpose": "credit_assessment",
    "records": "applicants[]",
    "subject": "applicants[].user_id",
    "birth_date": "applicants[].birth_date",
    "fields": [{"path": "applicants[].name", "category": "identity.name"}],
}
GUARANTOR_BORN = {"path": "guarantor.birth_date", "category": "identity.birth_date"}
CONSENT_FOR_SENSITIVE = {"allowed": ["identity.id_number"], "consent_required": True}


def third_party_batch() -> dict[str, Any]:
    return contract(
        partner={"relationship": "third_party"},
        terms={**BASE_CONTRACT["terms"], "sensitive": CONSENT_FOR_SENSITIVE},
        routes=[NAMES_BATCH],
    )


def children_batch() -> dict[str, Any]:
    route = {**NAMES_BATCH, "fields": [*NAMES_BATCH["fields"], GUARANTOR_BORN]}
    return contract(
        terms={**BASE_CONTRACT["terms"], "minors": "deny", "sensitive": CONSENT_FOR_SENSITIVE},
        categories=["identity.name", "identity.id_number", "identity.birth_date"],
        routes=[route],
    )


def unnamed_children_batch() -> dict[str, Any]:
    route = {key: value for key, value in NAMES_BATCH.items() if key != "subject"}
    route["fields"] = [*NAMES_BATCH["fields"], GUARANTOR_BORN]
    return contract(
        terms={**BASE_CONTRACT["terms"], "sensitive": CONSENT_FOR_SENSITIVE},
        categories=["identity.name", "identity.id_number", "identity.birth_date"],
        routes=[route],
    )


def child(user_id: str, born: str) -> dict[str, Any]:
    return {"user_id": user_id, "name": "Li", "birth_date": born}


@pytest.mark.parametrize(
    ("doc", "method", "target", "body"),
    [
        # A batch of no one where consent is needed: no consent could ever be shown.
        (third_party_batch, "POST", "/v1/kids", b'{"applicants":[]}'),
        # A child in the records and one beside them: consent for the one outside comes first.
        (
            children_batch,
            "POST",
            "/v1/kids",
            orjson.dumps(
                {
                    "applicants": [child("c", "2020-01-01")],
                    "guarantor": {"birth_date": "2021-01-01"},
                }
            ),
        ),
        # A birth date beside the records that is no date is read with the body: refused first.
        (
            unnamed_children_batch,
            "POST",
            "/v1/kids",
            orjson.dumps(
                {
                    "applicants": [{"name": "Li", "birth_date": "2020-01-01"}],
                    "guarantor": {"birth_date": "not a date"},
                }
            ),
        ),
        (contract, "POST", "/v1/assess", orjson.dumps({"applicant": {"name": "x" * 2000}})),
        (contract, "GET", "/v1/reports/r1?" + "&".join(f"p{n}=1" for n in range(65)), None),
        (contract, "GET", "/v1/reports/r1", b"\n"),  # whitespace is a body too
    ],
    ids=[
        "empty_batch_needing_consent",
        "two_children",
        "bad_date_outside",
        "too_large",
        "query_params",
        "get_body",
    ],
)
async def test_the_dry_run_refuses_as_the_gateway_does(
    make_gateway: GatewayFactory,
    doc: Callable[[], dict[str, Any]],
    method: str,
    target: str,
    body: bytes | None,
) -> None:
    gw = await make_gateway([doc()], settings={"limits": {"max_body_bytes": 1000}})
    json_type = {"Content-Type": "application/json"} if method == "POST" else {}
    response = await gw.share(method, "/acme" + target, data=body, headers=json_type)
    refused = (response.status, (await response.json())["error"]["code"])
    assert refused[0] >= 400
    limits = gw.runtime.settings.limits
    with pytest.raises(GatewayError) as dry:
        explain(
            gw.runtime.policy.partners["acme"],
            f"{method} {target}",
            "credit_assessment",
            body,
            now=datetime.now(ZONE),
            max_depth=limits.max_json_depth,
            max_body_bytes=limits.max_body_bytes,
            max_query_params=limits.max_query_params,
        )
    assert (dry.value.status, dry.value.code) == refused
    assert gw.partner.received == []


@pytest.mark.parametrize("parser", ["c", "python"])
async def test_a_request_line_too_long_for_the_parser_is_refused_as_the_gateway_refuses_it(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, parser: str
) -> None:
    if parser == "python":
        monkeypatch.setattr(web_protocol, "HttpRequestParser", HttpRequestParserPy)
    gw = await make_gateway()
    limit = gw.runtime.settings.limits.max_line_size

    def dry(target: str) -> Explanation:
        return explain(
            gw.runtime.policy.partners["acme"],
            f"GET {target}",
            "credit_assessment",
            None,
            now=datetime.now(ZONE),
            max_depth=64,
        )

    # `GET /acme/v1/reports/r1?format=… HTTP/1.1`: the whole line exactly the limit, then the
    # target alone, then the query alone over it.
    head = "/v1/reports/r1?format="
    fits = head + "x" * (limit - len(f"GET /acme{head} HTTP/1.1"))
    response = await raw_request(gw, "GET", "/acme" + fits)
    assert response.status == 200
    assert [seen.target for seen in gw.partner.received] == [fits]
    assert dry(fits).result.query == {"format": fits.partition("=")[2]}
    gw.partner.received.clear()
    # A target of exactly the limit: the C parser, which measures the target alone, lets it
    # through, the Python one, which measures the whole line, refuses it. The dry run says what
    # the parser installed here does.
    at_limit = head + "x" * (limit - len(f"/acme{head}"))
    response = await raw_request(gw, "GET", "/acme" + at_limit)
    if parser == "c":
        assert response.status == 200
        assert [seen.target for seen in gw.partner.received] == [at_limit]
        assert dry(at_limit).result.query == {"format": at_limit.partition("=")[2]}
    else:
        assert (response.status, response.json()["error"]["code"]) == (400, "malformed_request")
        assert gw.partner.received == []
        with pytest.raises(MalformedRequest):
            dry(at_limit)
    gw.partner.received.clear()
    too_long = head + "x" * limit
    response = await raw_request(gw, "GET", "/acme" + too_long)
    assert (response.status, response.json()["error"]["code"]) == (400, "malformed_request")
    assert gw.partner.received == []
    with pytest.raises(MalformedRequest) as refused:
        dry(too_long)
    assert (refused.value.status, refused.value.code) == (400, "malformed_request")
    measured = {"c": "request target", "python": "request line"}[parser]
    assert refused.value.message.startswith(f"the {measured} is longer than {limit} bytes")


async def test_a_query_number_too_long_to_bucket_is_explained_as_stripped(
    make_gateway: GatewayFactory,
) -> None:
    report = {
        "method": "GET",
        "path": "/v1/reports/{report_id}",
        "purpose": "credit_assessment",
        "fields": [
            {
                "path": "query.amount",
                "category": "business.transaction",
                "transform": {"generalize": {"bucket": 5000}},
            }
        ],
    }
    others = [r for r in BASE_CONTRACT["routes"] if r["path"] != report["path"]]
    gw = await make_gateway([contract(routes=[*others, report])])
    amount = "-" + "9" * 4300
    dry = explain(
        gw.runtime.policy.partners["acme"],
        f"GET /v1/reports/r1?amount={amount}",
        "credit_assessment",
        None,
        now=datetime.now(ZONE),
        max_depth=64,
    )
    assert dry.result.query == {}
    assert trace(dry) == [
        (
            "query.amount",
            "stripped",
            "untransformable: generalize(bucket=5000) needs a number, got a string",
        )
    ]


# --- denials --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partner", "route", "purpose", "body", "error"),
    [
        ("acme-credit", "POST /v1/nowhere", "credit_assessment", APPLICANT, RouteDenied),
        ("acme-credit", "GET /v1/assess", "credit_assessment", None, RouteDenied),
        ("acme-credit", "POST /v1/assess/", "credit_assessment", APPLICANT, MalformedRequest),
        ("acme-credit", "POST /v1/../assess", "credit_assessment", APPLICANT, MalformedRequest),
        ("acme-credit", "POST /V1/assess", "credit_assessment", APPLICANT, RouteDenied),
        ("acme-credit", "POST /v1/assess", "marketing", APPLICANT, PurposeDenied),
        ("fixit", "POST /v1/incidents", "technical_maintenance", {"user_id": "u"}, PurposeDenied),
        ("acme-credit", "POST /v1/assess", "credit_assessment", None, MalformedBody),
        ("acme-credit", "POST /v1/assess", "credit_assessment", {"loan_amount": 1}, MalformedBody),
        ("cloudvault", "GET /v1/objects/o-1", "service_delivery", {"a": 1}, MalformedBody),
    ],
    ids=[
        "undeclared_path",
        "undeclared_method",
        "trailing_slash",
        "dot_segment",
        "case_variant",
        "unapproved_purpose",
        "route_of_another_purpose",
        "missing_body",
        "missing_subject",
        "body_on_get",
    ],
)
def test_denials_carry_the_gateways_code(
    policy: Policy,
    partner: str,
    route: str,
    purpose: str,
    body: Any,
    error: type[GatewayError],
) -> None:
    with pytest.raises(error) as caught:
        run(policy.partners[partner], route, purpose, body)
    assert caught.value.code == error.code


def test_a_share_about_a_child_is_minor_denied_as_the_gateway_denies_it(policy: Policy) -> None:
    # acme-credit's contract says `minors: deny`; the body and the date decide, nothing else.
    child = {**APPLICANT, "applicant": {**APPLICANT["applicant"], "birth_date": "2013-06-02"}}
    partner = policy.partners["acme-credit"]
    with pytest.raises(MinorDenied) as caught:
        run(partner, "POST /v1/assess", "credit_assessment", child)
    assert caught.value.code == "minor_denied"
    # Fourteen on the day: no longer a child.
    later = datetime(2027, 6, 2, tzinfo=ZONE)
    assert run(partner, "POST /v1/assess", "credit_assessment", child, now=later).document


@pytest.mark.parametrize(
    "raw",
    [
        b'{"applicant": {"user_id": "u-1"}, "loan_amount": 1, "loan_amount": 2}',
        b'{"applicant": {"user_id": "u-1"}, "loan_amount": NaN}',
        b'{"applicant": {"user_id": "u-1"}, "loan_amount": 123456789012345678901234567890}',
        b"\xef\xbb\xbf{}",
        b"[]",
        b"{",
    ],
    ids=["duplicate_key", "nan", "big_integer", "bom", "array", "truncated"],
)
def test_malformed_bodies_are_denied(policy: Policy, raw: bytes) -> None:
    with pytest.raises(MalformedBody) as caught:
        run(policy.partners["acme-credit"], "POST /v1/assess", "credit_assessment", raw=raw)
    assert caught.value.code == "malformed_body"


@pytest.mark.parametrize(
    "now",
    [
        datetime(2024, 12, 31, 23, 59, tzinfo=ZONE),  # the day before `effective`
        datetime(2028, 1, 1, 0, 0, tzinfo=ZONE),  # the day after `expires`
    ],
    ids=["before_effective", "after_expires"],
)
def test_outside_the_validity_window_is_contract_inactive(policy: Policy, now: datetime) -> None:
    with pytest.raises(ContractInactive) as caught:
        run(
            policy.partners["acme-credit"],
            "POST /v1/assess",
            "credit_assessment",
            APPLICANT,
            now=now,
        )
    assert caught.value.code == "contract_inactive"


def test_the_last_valid_day_is_still_in_force(policy: Policy) -> None:
    last_day = datetime(2027, 12, 31, 23, 59, tzinfo=ZONE)
    result = run(
        policy.partners["acme-credit"],
        "POST /v1/assess",
        "credit_assessment",
        APPLICANT,
        now=last_day,
    )
    assert result.document["loan_amount"] == 5000


# --- the command --------------------------------------------------------------------------------


def explain_args(tmp_path: Path, *, body: Any, route: str, purpose: str, **extra: Any) -> Any:
    path = tmp_path / "body.json"
    path.write_bytes(orjson.dumps(body))
    return argparse.Namespace(
        partner=extra.pop("partner", "acme-credit"),
        route=route,
        purpose=purpose,
        body=None if body is None else str(path),
        format=extra.pop("format", "text"),
        config=None,
    )


def test_cmd_explain_prints_the_body_the_partner_would_receive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)
    args = explain_args(
        tmp_path, body=APPLICANT, route="POST /v1/assess", purpose="credit_assessment"
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 0
    out = capsys.readouterr().out
    assert "acme-credit: POST /v1/assess for credit_assessment" in out
    assert "stripped     applicant.email" in out
    assert "transformed  applicant.id_number" in out
    body = orjson.loads(out.split("partner would receive:\n", 1)[1])
    assert body == {
        "applicant": {
            "name": "Wang",
            "id_number": hashed("acme-credit", ID_NUMBER),
            "phone": "*******8000",
            "monthly_income": 18000,
        },
        "loan_amount": 5000,
    }
    assert "w@example.com" not in out


def test_cmd_explain_json_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)
    args = explain_args(
        tmp_path,
        body={"user_id": "u-1", "device": {"ip": "10.1.2.3", "serial": "S"}},
        route="POST /v1/diagnostics",
        purpose="technical_maintenance",
        partner="fixit",
        format="json",
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["route"] == "POST /v1/diagnostics"
    assert out["body"] == {"user_id": hashed("fixit", "u-1"), "device": {"ip": "10.1****"}}
    assert {"path": "device.serial", "action": "stripped", "reason": "not in the allow-list"} in (
        out["fields"]
    )


def test_cmd_explain_hashes_with_a_key_of_the_least_length_the_gateway_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway serves with a key of 32 bytes: explain shows the very hashes it sends.
    key = "m" * MIN_MASTER_KEY_BYTES
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", key)
    args = explain_args(
        tmp_path,
        body={"user_id": "u-1"},
        route="POST /v1/diagnostics",
        purpose="technical_maintenance",
        partner="fixit",
        format="json",
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 0
    captured = capsys.readouterr()
    sent = orjson.loads(captured.out)["body"]["user_id"]
    assert sent == keyed_hash(partner_hash_key(key.encode(), "fixit"), "u-1")
    assert "throw-away" not in captured.err


@pytest.mark.parametrize("output", ["text", "json"])
def test_cmd_explain_of_an_upload_says_the_body_goes_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)
    args = explain_args(
        tmp_path,
        body={"any": "bytes"},
        route="PUT /v1/objects/o-1?owner_user_id=u-1",
        purpose="service_delivery",
        partner="cloudvault",
        format=output,
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 0
    out = capsys.readouterr().out
    size = len(orjson.dumps({"any": "bytes"}))
    if output == "json":
        shown = orjson.loads(out)
        assert (shown["body"], shown["upload_bytes"]) == (None, size)
    else:
        assert f"partner would receive:\nthe body as sent ({size} bytes), unread" in out


@pytest.mark.parametrize("output", ["text", "json"])
def test_cmd_explain_of_a_get_says_no_body_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    # The gateway sends a GET with no body at all, not an empty JSON object.
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)
    args = explain_args(
        tmp_path,
        body=None,
        route="GET /v1/objects/o-1?version=3&owner=u-1",
        purpose="service_delivery",
        partner="cloudvault",
        format=output,
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 0
    out = capsys.readouterr().out
    if output == "json":
        shown = orjson.loads(out)
        assert (shown["body"], shown["upload_bytes"], shown["query"]) == (
            None,
            None,
            {"version": "3"},
        )
    else:
        assert "partner would receive:\nno body\nquery: version=3\n" in out


@pytest.mark.parametrize(
    ("route", "purpose", "partner", "expected"),
    [
        ("POST /v1/nowhere", "credit_assessment", "acme-credit", "DENIED 403 route_denied"),
        ("POST /v1/assess", "marketing", "acme-credit", "DENIED 403 purpose_denied"),
    ],
)
def test_cmd_explain_denial_exits_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    route: str,
    purpose: str,
    partner: str,
    expected: str,
) -> None:
    args = explain_args(tmp_path, body=APPLICANT, route=route, purpose=purpose, partner=partner)
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 1
    assert capsys.readouterr().out.startswith(expected)


def test_cmd_explain_judges_the_request_line_by_the_settings_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    route = "GET /v1/objects/o-1?note=" + "x" * 600
    args = explain_args(tmp_path, body=None, route=route, purpose="service_delivery")
    args.partner = "cloudvault"
    settings = Settings(contracts_dir=CONTRACTS, limits={"max_line_size": 512})
    assert cmd_explain(args, settings) == 1
    out = capsys.readouterr().out
    assert out.startswith("DENIED 400 malformed_request: the request ")
    assert "is longer than 512 bytes (limits.max_line_size)" in out


@pytest.mark.parametrize("target", ["/v1/objects/o-1?note=\udcff", "/v1/objects/\udcff"])
def test_cmd_explain_refuses_a_route_holding_bytes_that_are_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    # `--route $'GET /v1/objects/o-1?note=\xff'`: Python hands the byte on as a lone surrogate,
    # which the request line's length is measured with.
    args = explain_args(tmp_path, body=None, route=f"GET {target}", purpose="service_delivery")
    args.partner = "cloudvault"
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 1
    assert capsys.readouterr().out.startswith("DENIED 400 malformed_request: ")


def test_cmd_explain_unknown_partner_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = explain_args(
        tmp_path,
        body=APPLICANT,
        route="POST /v1/assess",
        purpose="credit_assessment",
        partner="nobody",
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 1
    assert "unknown_partner" in capsys.readouterr().err


def test_cmd_explain_with_contracts_that_do_not_load_names_each_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Judged by no contract at all rather than by what is left of the set: as `serve` would
    # not start on it, so explain answers nothing.
    folder = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, folder)
    broken = folder / "fixit.yaml"
    broken.write_text(broken.read_text(encoding="utf-8") + "surprise: 1\n", encoding="utf-8")
    args = explain_args(
        tmp_path, body=APPLICANT, route="POST /v1/assess", purpose="credit_assessment"
    )
    assert cmd_explain(args, Settings(contracts_dir=folder)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{broken}: surprise: unknown key\n"


CLI_READY = importlib.util.find_spec("gateway.sharelog.commands") is not None
needs_cli = pytest.mark.skipif(
    not CLI_READY,
    reason="`python -m gateway` cannot build its parser until gateway.sharelog.commands "
    "(the `logs` commands) exists",
)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHARE_GATEWAY_HASH_KEY": HASH_KEY}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_cli
def test_cli_explain_prints_the_partners_body_and_exits_0(tmp_path: Path) -> None:
    body = tmp_path / "applicant.json"
    body.write_bytes(orjson.dumps(APPLICANT))
    done = _cli(
        tmp_path,
        "contracts",
        "explain",
        "acme-credit",
        "--route",
        "POST /v1/assess",
        "--purpose",
        "credit_assessment",
        "--body",
        str(body),
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout)
    assert out["body"]["applicant"]["id_number"] == hashed("acme-credit", ID_NUMBER)
    assert out["body"]["applicant"]["phone"] == "*******8000"
    assert "email" not in out["body"]["applicant"]


@needs_cli
def test_cli_explain_denial_exits_1(tmp_path: Path) -> None:
    body = tmp_path / "applicant.json"
    body.write_bytes(orjson.dumps(APPLICANT))
    done = _cli(
        tmp_path,
        "contracts",
        "explain",
        "acme-credit",
        "--route",
        "POST /v1/assess",
        "--purpose",
        "marketing",
        "--body",
        str(body),
    )
    assert done.returncode == 1
    assert done.stdout.startswith("DENIED 403 purpose_denied")


@pytest.mark.parametrize("route", ["POST", "/v1/assess", "POST v1/assess", ""])
@pytest.mark.parametrize("output", ["text", "json"])
def test_cmd_explain_with_a_route_that_is_no_method_and_path_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], route: str, output: str
) -> None:
    # Exit 2, as for any argument the command cannot read: a script must not take it for a
    # share the gateway would refuse (exit 1, "DENIED ...").
    args = explain_args(
        tmp_path, body=APPLICANT, route=route, purpose="credit_assessment", format=output
    )
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith('--route must look like "POST /v1/assess"\n')


@pytest.mark.parametrize("missing", ["nowhere.json", "."], ids=["missing", "a_directory"])
def test_cmd_explain_with_a_body_it_cannot_read_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    args = explain_args(
        tmp_path, body=APPLICANT, route="POST /v1/assess", purpose="credit_assessment"
    )
    args.body = str(tmp_path / missing)
    assert cmd_explain(args, Settings(contracts_dir=CONTRACTS)) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["text", "json"])
def test_cmd_explain_shows_this_gateways_part_of_the_agreed_caps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)
    args = explain_args(
        tmp_path, body=APPLICANT, route="POST /v1/assess", purpose="credit_assessment"
    )
    args.format = output
    settings = Settings(contracts_dir=CONTRACTS, cap_shares={"acme-credit": "1/3"})
    assert cmd_explain(args, settings) == 0
    captured = capsys.readouterr()
    if output == "json":
        assert orjson.loads(captured.out)["caps"] == {
            "share": "1/3",
            "rate_limit_per_s": {"agreed": 50, "this_gateway": pytest.approx(50 / 3)},
            "max_records_per_day": {"agreed": 10000, "this_gateway": 3333},
        }
    else:
        assert (
            "(its caps for acme-credit: 16.6667 shares a second (this gateway's 1/3 of the "
            "agreed 50), 3333 records a day (this gateway's 1/3 of the agreed 10000))"
        ) in captured.err
