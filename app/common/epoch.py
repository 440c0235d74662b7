"""Datetimes as integer microseconds since the Unix epoch, exactly.

``int(t.timestamp() * 1_000_000)`` is not exact: ``timestamp()`` is a float of seconds, and multiplying it by
1e6 rounds, so the truncation lands 1 µs low for about 10% of random times in 2004-2008 (issue 26). A window
end 1 µs early drops the row at exactly the entity's time. Integer arithmetic on timedeltas has no rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def epoch_us(t: datetime) -> int:
    """``t`` in microseconds since the epoch; a naive datetime is taken as UTC."""
    aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return (aware - EPOCH) // MICROSECOND


def from_epoch_us(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the epoch (``fromtimestamp(us / 1e6)`` divides in floats)."""
    return EPOCH + timedelta(microseconds=int(us))
