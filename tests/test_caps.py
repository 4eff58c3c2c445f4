"""`cap_shares`: each gateway enforces its part of a partner's agreed rate and daily caps."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HASH_KEY, GatewayFactory, assert_refused, contract
from test_ops import _late_share, _share_record
from test_terms import FakeClock, TurnsWatched

from gateway.app import close_runtime
from gateway.caps import shared_caps
from gateway.cli import cmd_validate
from gateway.contract import Terms
from gateway.errors import StartupError
from gateway.metrics import REGISTRY
from gateway.settings import Settings
from gateway.sharelog.ledger import Ledger
from gateway.sharelog.record import ShareOutcome
from gateway.terms import SlidingWindows

ASSESS = "/v1/assess"


def applicant(user_id: str = "u-1") -> dict[str, Any]:
    return {"applicant": {"user_id": user_id, "name": "Li Lei"}}


def other(**terms: Any) -> dict[str, Any]:
    """A second partner, at the same fake partner as acme."""
    return contract(partner={"id": "other", "name": "Other Credit"}, terms=terms)


async def shares_until_refused(gw: Any, partner: str, limit: int = 20) -> tuple[int, Any]:
    """Share one record at a time to `partner` until one is refused: how many went, and the
    refusal's answer."""
    for sent in range(limit):
        response = await gw.share(
            "POST", f"/{partner}{ASSESS}", json=applicant(f"u-{sent}"), scope=f"share:{partner}:*"
        )
        if response.status != 200:
            return sent, response
    raise AssertionError(f"{limit} shares to {partner} and none refused")


# --- the daily cap ------------------------------------------------------------------------------


async def test_a_partner_receives_its_share_of_the_daily_cap_rounded_down(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 10})], settings={"cap_shares": {"acme": "1/3"}}
    )
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 3  # floor(10 × 1/3)
    assert len(gw.partner.received) == 3
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"] == (
        "acme may receive 3 records per day (this gateway's 1/3 of the agreed 10)"
    )
    assert 1 <= int(refused.headers["Retry-After"]) <= 86400
    # The share record names the contract as agreed: its own id and version.
    record = gw.log.records[0]
    assert (record.contract_id, record.contract_version) == ("DPA-1", 3)


async def test_a_partner_not_named_takes_the_share_for_every_other_partner(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 10}), other(max_records_per_day=10)],
        settings={"cap_shares": {"*": 0.5, "acme": "1/5"}},
    )
    assert (await shares_until_refused(gw, "acme"))[0] == 2
    assert (await shares_until_refused(gw, "other"))[0] == 5
    assert len(gw.partner.received) == 7


async def test_without_a_share_for_it_a_partner_keeps_its_whole_cap(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 4}), other(max_records_per_day=4)],
        settings={"cap_shares": {"other": 0.5}},
    )
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 4
    # Nothing says a part where the gateway enforces the whole cap.
    assert (await refused.json())["error"]["message"] == "acme may receive 4 records per day"
    assert (await shares_until_refused(gw, "other"))[0] == 2


async def test_no_cap_shares_enforces_every_agreed_cap_whole(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(terms={"max_records_per_day": 4, "rate_limit_per_s": 3})])
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # every request "at once"
    assert gw.runtime.settings.cap_shares == {}
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 3
    assert (await refused.json())["error"]["message"] == "more than 3 shares per second to acme"


# --- the rate -----------------------------------------------------------------------------------


async def test_a_partner_receives_no_more_than_its_share_of_the_rate(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"rate_limit_per_s": 10})], settings={"cap_shares": {"*": "1/3"}}
    )
    clock = FakeClock()
    gw.runtime.terms.limiter = SlidingWindows(clock=clock)  # every request "at once"
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 3  # 10/3 a second, rounded down in any one second
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    error = (await refused.json())["error"]
    assert error["code"] == "rate_limited"
    assert error["message"] == (
        "more than 3.33333 shares per second to acme (this gateway's 1/3 of the agreed 10)"
    )
    clock.now += 1.0
    assert (await shares_until_refused(gw, "acme"))[0] == 3
    assert len(gw.partner.received) == 6


async def test_a_share_goes_out_only_in_its_turn_at_the_shared_rate(
    make_gateway: GatewayFactory,
) -> None:
    # Admitted a second after three others, sent in the same second as them (it waited on the
    # way): at 10/3 a second the partner would see four in one second, at the agreed 10 not.
    gw = await make_gateway(
        [contract(terms={"rate_limit_per_s": 10})], settings={"cap_shares": {"acme": "1/3"}}
    )
    decided, sent = FakeClock(), FakeClock()
    gw.runtime.terms.limiter = SlidingWindows(clock=decided)
    turns = TurnsWatched(clock=sent)
    turns.waiting = asyncio.Event()
    gw.runtime.terms.sends = turns
    assert (await shares_until_refused(gw, "acme"))[0] == 3
    decided.now += 1.0
    fourth = asyncio.ensure_future(gw.share("POST", f"/acme{ASSESS}", json=applicant()))
    waiting = asyncio.ensure_future(turns.waiting.wait())
    done, _ = await asyncio.wait({fourth, waiting}, return_when=asyncio.FIRST_COMPLETED)
    assert waiting in done
    assert len(gw.partner.received) == 3
    sent.now += 1.0  # its turn comes
    response = await fourth
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 4


async def test_a_share_of_a_rate_below_one_a_second_widens_its_window(
    make_gateway: GatewayFactory,
) -> None:
    # One a second agreed, a third of it here: one share in any three seconds.
    gw = await make_gateway(
        [contract(terms={"rate_limit_per_s": 1})], settings={"cap_shares": {"acme": "1/3"}}
    )
    clock = FakeClock()
    gw.runtime.terms.limiter = SlidingWindows(clock=clock)
    sent, refused = await shares_until_refused(gw, "acme")
    assert (sent, refused.headers["Retry-After"]) == (1, "3")
    clock.now += 2.5
    sent, refused = await shares_until_refused(gw, "acme")
    assert (sent, refused.headers["Retry-After"]) == (0, "1")
    clock.now += 0.5
    assert (await shares_until_refused(gw, "acme"))[0] == 1
    assert len(gw.partner.received) == 2


@pytest.mark.parametrize(
    ("agreed", "share", "admitted"),
    [
        (10, Fraction(1, 3), 3),
        (3, Fraction(1, 3), 1),
        (9, Fraction(1, 3), 3),
        (6, Fraction(1, 2), 3),
        (0.3, Fraction(1, 3), 1),
    ],
)
def test_a_shared_rate_is_never_rounded_up(agreed: float, share: Fraction, admitted: int) -> None:
    caps = shared_caps(Terms(retention_days=1, rate_limit_per_s=agreed), share)
    assert caps.exact_rate_per_s == Fraction(agreed) * share
    assert caps.rate_per_s is not None
    assert caps.rate_per_s <= caps.exact_rate_per_s
    assert max(1, int(caps.rate_per_s)) == admitted


def test_a_whole_share_leaves_the_agreed_caps_as_they_are() -> None:
    terms = Terms(retention_days=1, rate_limit_per_s=0.1, max_records_per_day=7)
    caps = shared_caps(terms)
    assert (caps.rate_per_s, caps.records_per_day, caps.shared) == (0.1, 7, False)


@pytest.mark.parametrize("cap_shares", [{}, {"*": 1}], ids=["none", "whole"])
async def test_the_least_rate_a_contract_may_agree_is_enforced_whole_where_not_shared(
    make_gateway: GatewayFactory, cap_shares: dict[str, Any]
) -> None:
    # One a day, as the contract's YAML writes it: the float nearest 1/86400, just below it.
    one_a_day = 1 / 86400
    gw = await make_gateway(
        [contract(terms={"rate_limit_per_s": one_a_day})], settings={"cap_shares": cap_shares}
    )
    assert gw.runtime.policy.partners["acme"].caps.rate_per_s == one_a_day
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 1
    assert (await refused.json())["error"]["message"] == (
        "more than 1.15741e-05 shares per second to acme"
    )
    assert int(refused.headers["Retry-After"]) == 86400


async def test_a_share_of_exactly_one_a_day_is_enforced(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        [contract(terms={"rate_limit_per_s": 1})], settings={"cap_shares": {"acme": "1/86400"}}
    )
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 1
    assert (await refused.json())["error"]["message"] == (
        "more than 1.15741e-05 shares per second to acme (this gateway's 1/86400 of the agreed 1)"
    )


# --- refusals at start and at a reload ----------------------------------------------------------


async def test_a_share_naming_no_partner_of_the_contracts_stops_the_start(
    make_gateway: GatewayFactory,
) -> None:
    with pytest.raises(StartupError) as refused:
        await make_gateway([contract()], settings={"cap_shares": {"acme-credit": 0.5}})
    assert refused.value.problems == [
        "settings: cap_shares.acme-credit: no contract has partner id 'acme-credit': "
        "its share would apply to no one"
    ]


@pytest.mark.parametrize(
    ("terms", "share", "problem"),
    [
        (
            {"max_records_per_day": 2},
            "1/3",
            "terms.max_records_per_day: acme: this gateway's share (cap_shares: 1/3) of the "
            "agreed 2 records a day is 0 records a day (rounded down), below the least the "
            "gateway enforces (1)",
        ),
        (
            {"rate_limit_per_s": 1 / 86400},
            "1/2",
            "terms.rate_limit_per_s: acme: this gateway's share (cap_shares: 1/2) of the "
            "agreed 1.15741e-05 a second is 5.79e-06 a second, below the least the gateway "
            "enforces (one a day, 1/86400)",
        ),
    ],
)
async def test_a_share_that_leaves_a_cap_too_small_to_enforce_stops_the_start(
    make_gateway: GatewayFactory, terms: dict[str, Any], share: str, problem: str
) -> None:
    with pytest.raises(StartupError) as refused:
        await make_gateway([contract(terms=terms)], settings={"cap_shares": {"*": share}})
    [found] = refused.value.problems
    assert found.endswith(f"acme.yaml: {problem}")


@pytest.mark.parametrize(
    ("acme", "cap_shares", "expected"),
    [
        # `contracts validate` compiles no policy: it refuses what `serve` would.
        (
            contract(terms={"max_records_per_day": 2}),
            {"*": "1/3"},
            "acme.yaml: terms.max_records_per_day: acme: this gateway's share (cap_shares: 1/3) "
            "of the agreed 2 records a day is 0 records a day (rounded down), below the least "
            "the gateway enforces (1)",
        ),
        # A file that cannot be read may be the partner's that is named: its own problem says
        # what is wrong, not a second line claiming there is no such partner.
        ({**contract(), "purposes": []}, {"acme": "1/3"}, "acme.yaml: purposes: must not be empty"),
    ],
    ids=["cap_too_small", "named_partner_unreadable"],
)
def test_contracts_validate_refuses_a_folder_serve_would_refuse_for_its_cap_shares(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    acme: dict[str, Any],
    cap_shares: dict[str, str],
    expected: str,
) -> None:
    (tmp_path / "acme.yaml").write_text(yaml.safe_dump(acme))
    settings = Settings.model_validate(
        {"contracts_dir": tmp_path, "allow_insecure_upstreams": True, "cap_shares": cap_shares}
    )
    assert cmd_validate(argparse.Namespace(dir=None), settings) == 1
    assert capsys.readouterr().out == f"{tmp_path}/{expected}\n"


def test_contracts_validate_refuses_a_share_naming_no_partner_of_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "acme.yaml").write_text(yaml.safe_dump(contract()))
    settings = Settings.model_validate(
        {"contracts_dir": tmp_path, "allow_insecure_upstreams": True, "cap_shares": {"acm": 0.5}}
    )
    assert cmd_validate(argparse.Namespace(dir=None), settings) == 1
    assert capsys.readouterr().out == (
        "settings: cap_shares.acm: no contract has partner id 'acm': its share would apply "
        "to no one\n"
    )


def _failed_reloads() -> float:
    failed = REGISTRY.get_sample_value("share_gateway_contract_reloads_total", {"result": "failed"})
    return failed or 0.0


async def test_a_reload_removing_a_partner_named_in_cap_shares_takes_it_out_of_service(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # The settings still name it, but its file is gone: refusing the reload would keep sharing
    # with a partner the operator removed. It is said, and the next start refuses it.
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 4}), other()],
        settings={"cap_shares": {"acme": 0.5}},
    )
    folder = gw.runtime.settings.contracts_dir
    (folder / "acme.yaml").unlink()
    failed = _failed_reloads()
    await gw.runtime.reload()
    assert _failed_reloads() == failed
    assert sorted(gw.runtime.policy.partners) == ["other"]
    assert "cap_shares_partner_removed" in capsys.readouterr().out
    response = await gw.share("POST", f"/acme{ASSESS}", json=applicant())
    await assert_refused(gw, response, 404, "unknown_partner")
    assert gw.partner.received == []


async def test_a_reload_applies_the_shares_to_the_contracts_it_brings_in(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract()], settings={"cap_shares": {"*": 0.25}})
    doc = contract(terms={"max_records_per_day": 8})
    doc["upstream"]["base_url"] = gw.partner.base_url
    (gw.runtime.settings.contracts_dir / "acme.yaml").write_text(yaml.safe_dump(doc))
    await gw.runtime.reload()
    assert (await shares_until_refused(gw, "acme"))[0] == 2


# --- read back after a restart ------------------------------------------------------------------


async def test_a_restart_reads_the_days_records_back_against_the_shared_cap(
    make_gateway: GatewayFactory,
) -> None:
    capped = contract(terms={"max_records_per_day": 9})
    shares = {"cap_shares": {"acme": "1/3"}}
    gw = await make_gateway([capped], settings=shares, durable_log=True)
    for user in ("u-1", "u-2"):
        assert (await gw.share("POST", f"/acme{ASSESS}", json=applicant(user))).status == 200
    await gw.client.close()
    await close_runtime(gw.runtime)
    restarted = await make_gateway([capped], settings=shares, durable_log=True)
    sent, refused = await shares_until_refused(restarted, "acme")
    assert sent == 1  # 3 a day here, 2 of them before the restart
    assert (await refused.json())["error"]["code"] == "quota_exceeded"
    assert len(gw.partner.received) == 3


async def test_a_restart_counts_against_the_cap_no_record_of_a_share_that_never_left(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # Today, before the restart: one share delivered, one still in flight when the gateway
    # stopped, and one of 5 records whose outcome is `error` (no byte left).
    now = datetime.now(UTC)
    ledger = Ledger.open(tmp_path / "share-log.sqlite", HASH_KEY.encode())
    try:
        ledger.begin()
        for share_id, records in (("sent-1", 1), ("in-flight-1", 1), ("lost-1", 5)):
            ledger.add_share(
                _share_record(
                    share_id,
                    now - timedelta(seconds=2),
                    decision="shared",
                    reason="shared",
                    records=records,
                )
            )
        ledger.add_outcome(ShareOutcome("sent-1", "delivered", 200, 12, 1.0), now)
        ledger.add_outcome(ShareOutcome("lost-1", "error", None, 0, 1.0), now)
        ledger.commit(now)
    finally:
        ledger.close()
    capped = contract(terms={"max_records_per_day": 9})
    gw = await make_gateway([capped], settings={"cap_shares": {"acme": "1/3"}}, durable_log=True)
    sent, refused = await shares_until_refused(gw, "acme")
    assert sent == 1  # 3 a day here, 2 of them may have reached acme before the restart
    assert (await refused.json())["error"]["code"] == "quota_exceeded"


async def test_a_restart_reads_the_rate_window_back_at_the_shared_rate(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # One share a minute agreed, a third here: one in any three minutes. A share that reached
    # the partner two minutes before the start is outside the agreed rate's window, inside
    # this gateway's.
    _late_share(tmp_path / "share-log.sqlite", 130, 120)
    rated = contract(terms={"rate_limit_per_s": 1 / 60})
    gw = await make_gateway([rated], settings={"cap_shares": {"acme": "1/3"}}, durable_log=True)
    refused = await gw.share("POST", f"/acme{ASSESS}", json=applicant())
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert gw.partner.received == []
