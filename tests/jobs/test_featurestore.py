"""The feature-store jobs' arguments (jobs/featurestore.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.__main__ import build_parser


def test_a_window_start_is_a_date_or_relative_to_today() -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    parse = build_parser().parse_args
    assert parse(["features", "--start", "today-30d"]).start == midnight - timedelta(days=30)
    assert parse(["features", "--start", "today"]).start == midnight
    assert parse(["features", "--start", "2026-10-01"]).start == datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["yesterday", "today-30", "today+1d", "today-d"])
def test_a_bad_window_start_is_refused_by_name(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["features", "--start", bad])
    assert f"not an ISO date/time, nor today or today-Nd: {bad!r}" in capsys.readouterr().err
