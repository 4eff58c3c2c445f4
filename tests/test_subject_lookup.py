"""`logs subject --include-denied` lists every request about a person that the gateway
refused, whatever refused it: an access request answered with a gap is a compliance failure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import BASE_CONTRACT, HASH_KEY, Gateway, GatewayFactory, contract
from test_path_subjects import CUSTOMER_ROUTE
from test_terms import BATCH_ROUTE, QUERY_ROUTE

from gateway.cli import build_parser

ADMIN = "gateway:admin"
ROUTES = [*BASE_CONTRACT["routes"], BATCH_ROUTE, CUSTOMER_ROUTE, QUERY_ROUTE]


@pytest.fixture(autouse=True)
def hash_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands read the master key as the gateway does: from the environment.
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)


async def refusals_of(
    gw: Gateway, subject: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, list[tuple[str, str]]]:
    """(share id, reason) of each request `logs subject --include-denied` and the admin API's
    `/_gateway/shares?subject=` list for `subject`."""
    argv = ["logs", "subject", subject, "--include-denied", "--format", "json"]
    args = build_parser().parse_args(argv)
    capsys.readouterr()  # the gateway's own log lines so far
    assert args.handler(args, gw.runtime.settings) == 0
    rows = json.loads(capsys.readouterr().out)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    answer = await gw.client.get("/_gateway/shares", params={"subject": subject}, headers=admin)
    assert answer.status == 200, await answer.text()
    return {
        "logs subject": [(row["share_id"], row["reason"]) for row in rows],
        "admin api": [(row["share_id"], row["reason"]) for row in (await answer.json())["shares"]],
    }


async def refused(gw: Gateway, method: str, path: str, **kw: Any) -> tuple[str, str]:
    answer = await gw.share(method, path, **kw)
    assert 400 <= answer.status < 500, await answer.text()
    error = (await answer.json())["error"]
    return error["share_id"], error["code"]


@pytest.mark.parametrize(
    "other",
    [
        {"name": "Li"},  # no subject
        {"user_id": "   "},  # a subject of spaces only: no id
        {"user_id": "u-2", "birth_date": "1990-02-30"},  # no real date
        7,  # no record the route can send
    ],
)
async def test_a_batch_refused_for_one_record_is_listed_for_the_others(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str], other: object
) -> None:
    gw = await make_gateway([contract(routes=ROUTES)], durable_log=True)
    body = {"applicants": [{"user_id": "u-1", "name": "Wang"}, other]}
    share = await refused(gw, "POST", "/acme/v1/batch", json=body)
    assert share[1] == "malformed_body"
    assert gw.partner.received == []
    assert await refusals_of(gw, "u-1", capsys) == {"logs subject": [share], "admin api": [share]}


async def test_a_share_refused_for_its_birth_date_is_listed_for_its_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    route = {**BASE_CONTRACT["routes"][0], "birth_date": "applicant.birth_date"}
    gw = await make_gateway([contract(routes=[route])], durable_log=True)
    body = {"applicant": {"user_id": "u-1", "birth_date": "yesterday"}}
    share = await refused(gw, "POST", "/acme/v1/assess", json=body)
    assert share[1] == "malformed_body"
    assert await refusals_of(gw, "u-1", capsys) == {"logs subject": [share], "admin api": [share]}


@pytest.mark.parametrize("subject", ["13800138000", "110105198806052715"])
async def test_a_path_naming_its_subject_by_an_identifier_is_listed_for_that_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str], subject: str
) -> None:
    # The path is refused (an identifier goes in the body), yet the request was about someone.
    gw = await make_gateway([contract(routes=ROUTES)], durable_log=True)
    share = await refused(gw, "GET", f"/acme/v1/customers/{subject}")
    assert share[1] == "malformed_request"
    assert gw.partner.received == []
    assert await refusals_of(gw, subject, capsys) == {
        "logs subject": [share],
        "admin api": [share],
    }


@pytest.mark.parametrize(
    "target", ["/acme/v1/customers/C1001", "/acme/v1/people?user_id=C1001&format=short"]
)
async def test_a_request_refused_before_its_body_is_read_is_listed_for_its_route_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    # The route named its subject in the path or the query: the refusal of a suspended
    # contract is about that customer, though nothing else of the request was read.
    gw = await make_gateway(
        [contract(routes=ROUTES, contract={"status": "suspended"})], durable_log=True
    )
    share = await refused(gw, "GET", target)
    assert share[1] == "contract_inactive"
    assert await refusals_of(gw, "C1001", capsys) == {
        "logs subject": [share],
        "admin api": [share],
    }
