"""The batch parser against the per-event one: same events, same rows, same reasons."""

from __future__ import annotations

import numpy as np
import pytest

from app.stream.events import EventSchema, Fields, MalformedEventError
from app.stream.scripts import text

SCHEMA = EventSchema("event_id", "event_time_ms", "user_id", "amount", ["amount", "user_id", "f0"])


def entry(i: int, **over: bytes) -> tuple[str, Fields]:
    fields: dict[bytes | str, bytes | str] = {
        b"event_id": f"e{i}".encode(),
        b"event_time_ms": b"1764450000123",
        b"user_id": str(10 + i).encode(),
        b"amount": b"12.5",
        b"f0": f"{i}.25".encode(),
        b"extra": b"ignored",
    }
    fields.update({k.encode(): v for k, v in over.items()})
    return f"1-{i}", fields


BAD = {
    1: {"amount": b"nan"},
    2: {"f0": b"twelve"},  # not a number: the whole batch goes event by event
    3: {"user_id": b"1.5"},
    4: {"event_time_ms": b"-1"},
    5: {"event_id": b""},
    6: {"event_id": b"x" * 129},
    7: {"user_id": b"9007199254740992"},
    8: {"f0": b"inf"},
}


@pytest.mark.parametrize("bad", [*BAD, None])
def test_batch_equals_one_by_one(bad: int | None) -> None:
    entries = [entry(i, **(BAD[i] if i == bad else {})) for i in range(10)]
    missing: Fields = {b"event_id": b"e99"}
    entries.append(("1-99", missing))  # missing fields
    got = SCHEMA.parse_batch(entries)
    want_events, want_rows, want_dead = [], [], []
    for entry_id, fields in entries:
        try:
            event, row = SCHEMA.parse(entry_id, fields)
        except MalformedEventError as exc:
            want_dead.append((entry_id, f"malformed: {exc}"))
            continue
        want_events.append(event)
        want_rows.append(row)
    assert got.events == want_events
    assert np.array_equal(got.x, np.array(want_rows))
    assert [(e, why) for e, _, why in got.malformed] == want_dead
    assert len(got.malformed) == (2 if bad is not None else 1)
    assert "missing field 'event_time_ms'" in got.malformed[-1][2]


def test_str_keys_and_an_all_bad_batch() -> None:
    entries: list[tuple[str, Fields]] = [
        (eid, {text(k): text(v) for k, v in fields.items()}) for eid, fields in (entry(0), entry(1))
    ]
    got = SCHEMA.parse_batch(entries)
    assert [e.event_id for e in got.events] == ["e0", "e1"] and got.x.tolist() == [[12.5, 10, 0.25], [12.5, 11, 1.25]]
    bad = SCHEMA.parse_batch([entry(0, amount=b"x"), entry(1, amount=b"y")])
    assert not bad.events and bad.x.shape == (0, 3)
    assert [why for _, _, why in bad.malformed] == [f"malformed: amount: not a number: {v!r}" for v in "xy"]
