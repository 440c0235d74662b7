"""Exact window counts from a counter's raw samples (app/monitoring/sources.counted_increase), against a
brute-force recount of the increments themselves: generated counters with increments, resets (pod restarts)
and scrapes at arbitrary times, and windows starting anywhere."""

from __future__ import annotations

import bisect
import itertools

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.monitoring.sources import counted_increase

Event = tuple[float, int]  # (time, increment); increment 0 is a reset


def scrape(events: list[Event], times: list[float], born_at: float) -> list[tuple[float, float]]:
    """The counter's value at each scrape time after it was born (first created at ``born_at``)."""
    out = []
    for t in times:
        if t < born_at:
            continue
        value = 0
        for et, inc in events:
            if et > t:
                break
            value = 0 if inc == 0 else value + inc
        out.append((t, float(value)))
    return out


def recount(events: list[Event], times: list[float], start: float, first_counted_from: float) -> float:
    """The increments a window can see, one by one: each increment after ``first_counted_from`` and up to the
    last scrape inside the window counts, unless a reset before the next scrape wiped it out unobserved."""
    inside = [t for t in times if t > start]
    if not inside:
        return 0.0
    last = inside[-1]
    total = 0.0
    for t, inc in events:
        if inc == 0 or t <= first_counted_from or t > last:
            continue
        nxt = times[bisect.bisect_left(times, t)]  # the first scrape at or after the increment
        if not any(inc2 == 0 and t < t2 <= nxt for t2, inc2 in events):
            total += inc
    return total


@settings(max_examples=400, deadline=None)
@given(
    incs=st.lists(
        st.tuples(st.integers(1, 1000), st.integers(0, 5)),  # (time in 0.1 s, increment or reset)
        min_size=1,
        max_size=40,
    ),
    scrape_times=st.lists(st.integers(0, 1000), min_size=1, max_size=30, unique=True),
    start=st.integers(-10, 1000),
    prometheus_from=st.integers(0, 1000),
)
def test_counted_increase_is_the_recount(
    incs: list[tuple[int, int]], scrape_times: list[int], start: int, prometheus_from: int
) -> None:
    # Distinct times: an increment and a scrape never coincide (the scrape sees it or not, by +0.05).
    events = sorted((t + 0.05, inc) for t, inc in incs)
    born = events[0][0]  # the series is created by its first change
    times = sorted(float(t) for t in scrape_times if t >= prometheus_from)  # Prometheus started scraping then
    if not times:
        return
    samples = scrape(events, times, born)
    # A reset is seen only as a drop: a restarted counter that climbed back past its old value between two
    # scrapes is invisible to anyone reading samples (Prometheus too). Such histories are left out.
    for (p, vp), (q, vq) in itertools.pairwise(samples):
        assume(not any(inc == 0 and p < t <= q for t, inc in events) or vq < vp)
    before = [s for s in samples if s[0] <= start]
    inside = [s for s in samples if s[0] > start]
    born_inside = bool(inside) and any(t < inside[0][0] for t in times)  # scraped earlier without the series
    got = counted_increase(before, inside, born_inside)
    if before:
        counted_from = before[-1][0]
    elif born_inside:
        counted_from = float("-inf")
    else:
        counted_from = inside[0][0] if inside else float("inf")
    assert got == recount(events, times, start, counted_from)


def test_counted_increase_by_hand() -> None:
    assert counted_increase([(0, 5)], [(1, 7), (2, 9)], born_inside=False) == 4
    assert counted_increase([], [(1, 7), (2, 9)], born_inside=False) == 2  # history unknown: a lower bound
    assert counted_increase([], [(1, 7), (2, 9)], born_inside=True) == 9  # born in the window: from 0
    assert counted_increase([(0, 5)], [(1, 8), (2, 3), (3, 4)], born_inside=False) == 3 + 3 + 1  # a reset
    assert counted_increase([(0, 5)], [], born_inside=False) == 0
