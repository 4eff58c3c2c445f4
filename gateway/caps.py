"""A partner's caps at this gateway: its agreed rate and daily caps times this gateway's share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Final

# The settings read `cap_shares` through this module: the contract models stay unloaded until
# a command reads contracts (`share-gateway health` never does).
if TYPE_CHECKING:
    from gateway.contract import Terms

# One share a day: the least rate a contract may agree (`terms.rate_limit_per_s`' bound).
MIN_AGREED_RATE_PER_S: Final = 1 / 86400
# The least rate, exactly as the contract's bound holds it: the float nearest 1/86400, a hair
# below it. Judged against 1/86400 itself, a contract agreeing one a day would be refused though
# this gateway enforces it whole.
MIN_RATE_PER_S: Final = Fraction(MIN_AGREED_RATE_PER_S)
WHOLE: Final = Fraction(1)
# `cap_shares`' key for every partner it does not name: no partner id can be `*`.
EVERY_OTHER_PARTNER: Final = "*"


def share_of(cap_shares: Mapping[str, Fraction], partner_id: str) -> Fraction:
    """The part of `partner_id`'s agreed caps a gateway with these `cap_shares` enforces."""
    return cap_shares.get(partner_id, cap_shares.get(EVERY_OTHER_PARTNER, WHOLE))


@dataclass(frozen=True, slots=True)
class Caps:
    """What this gateway enforces of one partner's agreed caps (None: no such cap)."""

    share: Fraction  # of the agreed caps; 1 where this gateway enforces them whole
    agreed_rate_per_s: float | None
    agreed_records_per_day: int | None
    # Exactly the agreed rate times the share: what is reported, and judged against the least.
    exact_rate_per_s: Fraction | None
    # The limiter's rate: `exact_rate_per_s` rounded down to a float, never up.
    rate_per_s: float | None
    records_per_day: int | None  # rounded down: never more records than the share allows

    @property
    def shared(self) -> bool:
        return self.share != WHOLE


def shared_caps(terms: Terms, share: Fraction = WHOLE) -> Caps:
    agreed_rate, agreed_daily = terms.rate_limit_per_s, terms.max_records_per_day
    exact_rate = rate = None
    if agreed_rate is not None:
        # The float the contract holds, exactly: a share of 1 gives it back unchanged.
        exact_rate = Fraction(agreed_rate) * share
        rate = _float_down(exact_rate)
    daily = None if agreed_daily is None else math.floor(agreed_daily * share)
    return Caps(share, agreed_rate, agreed_daily, exact_rate, rate, daily)


def _float_down(value: Fraction) -> float:
    nearest = float(value)
    return math.nextafter(nearest, 0.0) if nearest > value else nearest


def too_small(partner_id: str, caps: Caps) -> list[tuple[str, str]]:
    """The caps a share makes smaller than the gateway can enforce, as (key, message) pairs:
    refused, never read as no cap (everything) or as no share at all (nothing)."""
    found: list[tuple[str, str]] = []
    share = str(caps.share)
    if caps.exact_rate_per_s is not None and caps.exact_rate_per_s < MIN_RATE_PER_S:
        found.append(
            (
                "terms.rate_limit_per_s",
                f"{partner_id}: this gateway's share (cap_shares: {share}) of the agreed "
                f"{caps.agreed_rate_per_s:g} a second is {float(caps.exact_rate_per_s):.3g} a "
                "second, below the least the gateway enforces (one a day, 1/86400)",
            )
        )
    if caps.records_per_day == 0:
        found.append(
            (
                "terms.max_records_per_day",
                f"{partner_id}: this gateway's share (cap_shares: {share}) of the agreed "
                f"{caps.agreed_records_per_day} records a day is 0 records a day (rounded down), "
                "below the least the gateway enforces (1)",
            )
        )
    return found


def rate_part(caps: Caps) -> str:
    """What an answer adds to this gateway's rate where it is a part of the agreed one."""
    if not caps.shared or caps.agreed_rate_per_s is None:
        return ""
    return f" (this gateway's {caps.share} of the agreed {caps.agreed_rate_per_s:g})"


def daily_part(caps: Caps) -> str:
    """What an answer adds to this gateway's daily cap where it is a part of the agreed one."""
    if not caps.shared or caps.agreed_records_per_day is None:
        return ""
    return f" (this gateway's {caps.share} of the agreed {caps.agreed_records_per_day})"


def caps_view(caps: Caps) -> dict[str, object]:
    """The caps as the admin API and `contracts explain --format json` show them: each as
    agreed and as this gateway enforces it (None: no such cap), and the share between them."""
    rate = None
    if caps.agreed_rate_per_s is not None:
        rate = {"agreed": caps.agreed_rate_per_s, "this_gateway": caps.rate_per_s}
    daily = None
    if caps.agreed_records_per_day is not None:
        daily = {"agreed": caps.agreed_records_per_day, "this_gateway": caps.records_per_day}
    return {"share": str(caps.share), "rate_limit_per_s": rate, "max_records_per_day": daily}


def caps_text(caps: Caps) -> str:
    """The caps in a sentence: `3.33333 shares a second (this gateway's 1/3 of the agreed 10),
    no daily cap`."""
    rate = "no rate"
    if caps.rate_per_s is not None:
        rate = f"{caps.rate_per_s:g} shares a second{rate_part(caps)}"
    daily = "no daily cap"
    if caps.records_per_day is not None:
        daily = f"{caps.records_per_day} records a day{daily_part(caps)}"
    return f"{rate}, {daily}"
