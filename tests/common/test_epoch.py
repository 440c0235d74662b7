"""Exact microseconds (app/common/epoch.py) against the obvious integer computation, on the eras where the
float idiom ``int(t.timestamp() * 1e6)`` was seen 1 µs low: 1970-2000, 2004-2008 and 2033-2040."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.common.epoch import epoch_us

ERAS = [(1970, 2000), (2004, 2008), (2033, 2040)]


def obvious(t: datetime) -> int:
    return calendar.timegm(t.utctimetuple()) * 1_000_000 + t.microsecond


@given(st.sampled_from(ERAS).flatmap(lambda e: st.datetimes(datetime(e[0], 1, 1), datetime(e[1], 12, 31))))
def test_epoch_us_is_exact(t: datetime) -> None:
    assert epoch_us(t.replace(tzinfo=UTC)) == obvious(t) == epoch_us(t)  # naive is UTC


def test_the_float_idiom_it_replaces_is_not() -> None:
    """The test above could fail: in 2005 the float idiom is 1 µs low for some microsecond values."""
    times = [datetime(2005, 6, 1, 12, 0, 0, us, tzinfo=UTC) for us in range(0, 1_000_000, 997)]
    low = [t for t in times if int(t.timestamp() * 1_000_000) != obvious(t)]
    assert low and all(epoch_us(t) == obvious(t) for t in low)
