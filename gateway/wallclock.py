"""Times as a person writes them: a wall-clock time in the gateway's zone, made an instant.

Where a zone moves its clocks, some wall-clock times name no instant (the hour skipped in
spring) and some name two (the hour repeated in autumn). Python picks one silently, an hour
off from what the writer may have meant: a `--since` would leave out up to an hour of shares,
a consent withdrawal would take effect an hour late. Such a time is refused instead, with the
offsets that make it exact.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo


class UnclearWallTime(ValueError):
    """A wall-clock time the zone's clocks skip or show twice; the message says which."""


def wall_time(moment: datetime, zone: tzinfo) -> datetime:
    """`moment`, naive, as a wall-clock time in `zone`; UnclearWallTime if it is not one instant."""
    earlier = moment.replace(tzinfo=zone, fold=0)
    later = moment.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    shown = moment.isoformat(timespec="minutes" if not moment.second else "seconds")
    offsets = f"{_offset(earlier.utcoffset())} or {_offset(later.utcoffset())}"
    if earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment:
        raise UnclearWallTime(
            f"{shown} does not exist in {zone}: its clocks skip it; write it with an offset "
            f"({offsets})"
        )
    raise UnclearWallTime(
        f"{shown} happens twice in {zone}: its clocks go back over it; write it with an "
        f"offset ({offsets})"
    )


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first instant of `day` in `zone`, also where its clocks skip or repeat midnight."""
    # Midnight as written may lie in a skipped hour, where an aware datetime compares unequal
    # even to itself in UTC (PEP 495): the round trip makes it the instant the day began.
    return datetime.combine(day, time(), zone).astimezone(UTC).astimezone(zone)


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
