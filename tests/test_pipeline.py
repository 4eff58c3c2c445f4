"""End to end through the gateway: what the partner received for each kind of request."""

from __future__ import annotations

from conftest import PARTNER_TOKEN, GatewayFactory


async def test_allowed_share_reaches_the_partner_filtered(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.share(
        "POST",
        "/acme/v1/assess?page=2&debug=1",
        json={
            "applicant": {
                "user_id": "u-1",
                "name": "Wang",
                "id_number": "110105198806052719",
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
    body = seen.json()
    assert body["applicant"]["name"] == "Wang"
    assert body["applicant"]["phone"] == "*******8000"
    assert len(body["applicant"]["id_number"]) == 64
    assert "email" not in body["applicant"] and "user_id" not in body["applicant"]
    assert "secret" not in body
    assert seen.target == "/v1/assess?page=2"
    assert seen.headers["Authorization"] == f"Bearer {PARTNER_TOKEN}"
    assert seen.headers["X-Share-Purpose"] == "credit_assessment"
    assert seen.headers["X-Data-Retention-Days"] == "30"
    assert seen.headers["X-Data-Onward-Transfer"] == "prohibited"
    share_id = response.headers["X-Share-Id"]
    assert seen.headers["X-Share-Id"] == share_id
    [record] = gw.log.records
    assert record.decision == "shared" and record.share_id == share_id
    assert "applicant.email" in record.fields_stripped
