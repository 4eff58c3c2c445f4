"""A data subject named by a placeholder of the route's path (`subject: path.customer_id`): its
shares are recorded as about that subject, and consent, minors and the daily cap count it."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import BASE_CONTRACT, Gateway, GatewayFactory, contract
from test_terms import resident_id

from gateway.consent import ConsentRegistry
from gateway.contractset import load_contract_set
from gateway.errors import MalformedBody, MinorDenied
from gateway.explain import explain
from gateway.keys import subject_ref
from gateway.policy import compile_policy
from gateway.settings import Settings

ADMIN = "gateway:admin"
SHANGHAI = ZoneInfo("Asia/Shanghai")

CUSTOMER_ROUTE: dict[str, Any] = {
    "method": "GET",
    "path": "/v1/customers/{customer_id}",
    "purpose": "credit_assessment",
    "subject": "path.customer_id",
    "fields": [{"path": "query.format", "category": "business.reference"}],
}
PERSON_ROUTE: dict[str, Any] = {
    "method": "GET",
    "path": "/v1/people/{person_id}/born/{born}",
    "purpose": "credit_assessment",
    "subject": "path.person_id",
    "birth_date": "path.born",
    "fields": [],
}
UPLOAD_ROUTE: dict[str, Any] = {
    "method": "PUT",
    "path": "/v1/customers/{customer_id}/documents/{doc_id}",
    "purpose": "credit_assessment",
    "subject": "path.customer_id",
    "content_types": ["application/pdf"],
}


def with_routes(*routes: dict[str, Any], **changes: Any) -> dict[str, Any]:
    # The first base route names its subject: a third party's contract loads with it alone.
    base = copy.deepcopy(BASE_CONTRACT["routes"][:1])
    return contract(routes=[*base, *copy.deepcopy(list(routes))], **changes)


def years_ago(years: int) -> date:
    today = datetime.now(SHANGHAI).date()
    return today.replace(year=today.year - years, day=min(today.day, 28))


async def test_a_placeholder_subject_is_recorded_and_found_by_logs_subject(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([with_routes(CUSTOMER_ROUTE)], durable_log=True)
    answer = await gw.share("GET", "/acme/v1/customers/C1001?format=short")
    assert answer.status == 200, await answer.text()
    [seen] = gw.partner.received
    assert seen.target == "/v1/customers/C1001?format=short"

    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    found = await gw.client.get("/_gateway/shares?subject=C1001", headers=admin)
    [row] = (await found.json())["shares"]
    assert row["share_id"] == seen.headers["X-Share-Id"]
    assert row["records"] == 1
    assert row["subject_refs"] == [subject_ref(gw.runtime.subject_key, "C1001")]
    # The partner read the id in the URL: the record says it was sent.
    assert row["fields_sent"] == ["path.customer_id", "query.format"]
    other = await gw.client.get("/_gateway/shares?subject=C1002", headers=admin)
    assert (await other.json())["shares"] == []


async def test_a_placeholder_subject_counts_against_the_daily_cap(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([with_routes(CUSTOMER_ROUTE, terms={"max_records_per_day": 2})])
    for customer in ("C1001", "C1002"):
        assert (await gw.share("GET", f"/acme/v1/customers/{customer}")).status == 200
    refused = await gw.share("GET", "/acme/v1/customers/C1003")
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "quota_exceeded"
    assert [seen.target for seen in gw.partner.received] == [
        "/v1/customers/C1001",
        "/v1/customers/C1002",
    ]
    assert [record.records for record in gw.log.records] == [1, 1, 0]


def third_party(*routes: dict[str, Any]) -> dict[str, Any]:
    return with_routes(
        *routes,
        partner={"relationship": "third_party"},
        terms={"sensitive": {"allowed": ["identity.id_number"], "consent_required": True}},
    )


def registry_of(gw: Gateway) -> ConsentRegistry:
    registry = gw.runtime.terms.registry
    assert isinstance(registry, ConsentRegistry)
    return registry


async def test_a_placeholder_subject_needs_its_own_consent(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([third_party(CUSTOMER_ROUTE)])
    refused = await gw.share("GET", "/acme/v1/customers/C1001")
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "consent_required"
    assert gw.partner.received == []

    granted = datetime.now(UTC) - timedelta(hours=1)
    registry_of(gw).grant("C1001", "acme", "credit_assessment", granted, "C-1")
    assert (await gw.share("GET", "/acme/v1/customers/C1001")).status == 200
    # Another customer's consent is not this one's.
    other = await gw.share("GET", "/acme/v1/customers/C1002")
    assert other.status == 403
    assert [seen.target for seen in gw.partner.received] == ["/v1/customers/C1001"]
    assert gw.log.records[-2].consent_basis == ("registry:C-1",)


async def test_an_upload_about_a_placeholder_subject_needs_its_consent(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([third_party(UPLOAD_ROUTE)])
    pdf = b"%PDF-1.4 statement"
    headers = {"Content-Type": "application/pdf"}
    path = "/acme/v1/customers/C1001/documents/d1"
    refused = await gw.share("PUT", path, data=pdf, headers=headers)
    assert refused.status == 403
    assert gw.partner.received == []
    registry_of(gw).grant(
        "C1001", "acme", "credit_assessment", datetime.now(UTC) - timedelta(hours=1), "C-1"
    )
    assert (await gw.share("PUT", path, data=pdf, headers=headers)).status == 200
    [seen] = gw.partner.received
    assert (seen.target, seen.body) == ("/v1/customers/C1001/documents/d1", pdf)
    record = gw.log.records[-1]
    assert (record.records, record.subject_refs) == (
        1,
        (subject_ref(gw.runtime.subject_key, "C1001"),),
    )


async def test_a_childs_birth_date_in_the_path_is_denied(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([with_routes(PERSON_ROUTE, terms={"minors": "deny"})])
    child = await gw.share("GET", f"/acme/v1/people/P1/born/{years_ago(10).isoformat()}")
    assert child.status == 403
    assert (await child.json())["error"]["code"] == "minor_denied"
    assert gw.partner.received == []
    adult = await gw.share("GET", f"/acme/v1/people/P2/born/{years_ago(30).isoformat()}")
    assert adult.status == 200
    [seen] = gw.partner.received
    assert seen.target.startswith("/v1/people/P2/born/")
    assert gw.log.records[-1].subject_refs == (subject_ref(gw.runtime.subject_key, "P2"),)


# A field is never in the request's path: only `subject` and `birth_date` may name a
# placeholder. A file store's API may well have a body key named `path`.
@pytest.mark.parametrize(
    ("category", "value"),
    [
        ("identity.birth_date", years_ago(10).isoformat()),
        ("identity.id_number", resident_id(years_ago(10))),
    ],
)
async def test_a_childs_data_under_a_body_key_named_path_is_denied(
    make_gateway: GatewayFactory, category: str, value: str
) -> None:
    route = {
        "method": "POST",
        "path": "/v1/files",
        "purpose": "credit_assessment",
        "subject": "owner.user_id",
        "fields": [
            {"path": "owner.name", "category": "identity.name"},
            {"path": "path.child", "category": category},
        ],
    }
    categories = [*BASE_CONTRACT["categories"], "identity.birth_date"]
    gw = await make_gateway([with_routes(route, categories=categories, terms={"minors": "deny"})])
    child = {"owner": {"user_id": "u-1", "name": "Xiao"}, "path": {"child": value}}
    refused = await gw.share("POST", "/acme/v1/files", json=child)

    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "minor_denied"
    assert gw.partner.received == []
    assert gw.log.records[-1].reason == "minor_denied"


def test_explain_reads_the_subject_and_birth_date_in_the_path(tmp_path: Path) -> None:
    doc = with_routes(CUSTOMER_ROUTE, PERSON_ROUTE, terms={"minors": "deny"})
    (tmp_path / "acme.yaml").write_text(yaml.safe_dump(doc))
    settings = Settings(contracts_dir=tmp_path, allow_insecure_upstreams=True)
    contracts, problems = load_contract_set(tmp_path, settings)
    assert contracts is not None, problems
    policy = compile_policy(contracts, zone=SHANGHAI, master_key=b"m" * 48, require_secrets=False)
    partner = policy.partners["acme"]
    now = datetime.now(SHANGHAI)

    shown = explain(
        partner, "GET /v1/customers/C1001", "credit_assessment", None, now=now, max_depth=64
    )
    assert shown.route.label == "GET /v1/customers/{customer_id}"
    with pytest.raises(MinorDenied):
        explain(
            partner,
            f"GET /v1/people/P1/born/{years_ago(10).isoformat()}",
            "credit_assessment",
            None,
            now=now,
            max_depth=64,
        )
    with pytest.raises(MalformedBody):  # a birth date in the path must be a date
        explain(
            partner, "GET /v1/people/P1/born/soon", "credit_assessment", None, now=now, max_depth=64
        )
