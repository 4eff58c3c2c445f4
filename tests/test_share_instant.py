"""A share is judged at one instant, after its last wait: a consent token's key may have to be
fetched, and a contract that expires or a day that ends meanwhile must count."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import GatewayFactory, contract
from tokens import SigningKey, jwks, mint, rsa_key

import gateway.pipeline
from gateway.policy import Policy

SENSITIVE_CONSENT = {"allowed": ["identity.id_number"], "consent_required": True}
OLD, NEW = rsa_key(kid="consent-1"), rsa_key(kid="consent-2")
FETCH_S = 1.0  # how long the consent service takes to serve the rotated-in key


def third_party(**terms: Any) -> dict[str, Any]:
    routes = [r for r in contract()["routes"] if "subject" in r]
    return contract(
        partner={"relationship": "third_party"},
        terms={"sensitive": SENSITIVE_CONSENT, **terms},
        routes=routes,
    )


def applicant() -> dict[str, Any]:
    return {"applicant": {"user_id": "u-1", "name": "Wang"}, "loan_amount": 5000}


def consent_token(key: SigningKey) -> str:
    return mint(
        key,
        issuer=None,
        audience=None,
        subject="u-1",
        partner="acme",
        purposes=["credit_assessment"],
        jti="ct-u-1",
    )


@pytest.fixture
async def consent_settings() -> AsyncIterator[dict[str, Any]]:
    """The gateway's `consent` settings for a consent service whose JWKS gains the NEW key on
    its second, slow, fetch; `fetches` counts them."""
    settings: dict[str, Any] = {"fetches": 0}

    async def handle(request: web.Request) -> web.Response:
        settings["fetches"] += 1
        if settings["fetches"] > 1:
            await asyncio.sleep(FETCH_S)
        keys = [OLD] if settings["fetches"] == 1 else [OLD, NEW]
        return web.Response(body=orjson.dumps(jwks(*keys)), content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings["consent"] = {
        "algorithms": ["RS256"],
        "jwks_url": f"http://127.0.0.1:{port}/jwks.json",
        "jwks_refresh_min_interval_s": 1,
    }
    yield settings
    await runner.cleanup()


async def test_a_contract_expiring_while_consent_keys_are_fetched_shares_nothing(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any]
) -> None:
    gw = await make_gateway([third_party()], settings={"consent": consent_settings["consent"]})
    # The contract ends during the fetch, as at 23:59:59.6 on its `expires` day.
    policy = gw.runtime.policy
    until = datetime.now(policy.zone) + timedelta(seconds=FETCH_S / 2)
    acme = dataclasses.replace(policy.partners["acme"], active_until=until)
    gw.runtime.policy = Policy(partners={"acme": acme}, zone=policy.zone)

    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": consent_token(NEW)}
    )

    assert response.status == 403
    assert (await response.json())["error"]["code"] == "contract_inactive"
    assert gw.partner.received == []
    assert [(r.decision, r.reason) for r in gw.log.records] == [("denied", "contract_inactive")]


async def test_a_partner_needing_no_consent_never_waits_for_a_consent_token(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any]
) -> None:
    # The token would be verified (its new key fetched) for nothing, and after the share's
    # instant: a contract ending meanwhile would still be shared.
    gw = await make_gateway([contract()], settings={"consent": consent_settings["consent"]})
    fetches = consent_settings["fetches"]
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": consent_token(NEW)}
    )
    assert response.status == 200
    assert consent_settings["fetches"] == fetches  # the NEW key was never looked for


async def test_a_share_counts_against_the_day_its_record_is_dated(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await make_gateway(
        [third_party(max_records_per_day=1)], settings={"consent": consent_settings["consent"]}
    )
    zone = gw.runtime.policy.zone
    real = datetime.now(zone)
    midnight = datetime.combine(real.date() + timedelta(days=1), datetime.min.time(), zone)
    offset = midnight - real - timedelta(seconds=FETCH_S / 3)  # the gateway's clock: 23:59:59.7

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + offset

    monkeypatch.setattr(gateway.pipeline, "datetime", Clock)
    token = consent_token(NEW)
    # The first share waits for the key across midnight: it counts on the day it is recorded
    # on, the new one, and leaves no room on it for the second.
    statuses = []
    for _ in range(2):
        response = await gw.share(
            "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
        )
        statuses.append(response.status)

    assert statuses == [200, 429]
    assert len(gw.partner.received) == 1
    days = [r.ts.astimezone(zone).date() for r in gw.log.records if r.decision == "shared"]
    assert days == [midnight.date()]  # what a restart reads back for the cap
