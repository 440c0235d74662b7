"""The batch parser against the per-event one: same events, same rows, same reasons."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def assert_batch_equals_one_by_one(entries: list[tuple[str, Fields]]) -> None:
    """The fast path against the per-event parser, the oracle: same events, rows and reasons."""
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
    assert np.array_equal(got.x, np.array(want_rows).reshape(len(want_rows), 3))
    assert [(e, why) for e, _, why in got.malformed] == want_dead


@pytest.mark.parametrize("bad", [*BAD, None])
def test_batch_equals_one_by_one(bad: int | None) -> None:
    entries = [entry(i, **(BAD[i] if i == bad else {})) for i in range(10)]
    missing: Fields = {b"event_id": b"e99"}
    entries.append(("1-99", missing))  # missing fields
    assert_batch_equals_one_by_one(entries)
    got = SCHEMA.parse_batch(entries)
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


def test_an_event_without_an_id_shifts_nothing() -> None:
    """Issue 24: the entry without ``event_id`` once got two rows, and every later event of the batch was
    decided with its predecessor's user, time and inputs."""
    no_id = entry(1)
    del no_id[1][b"event_id"]  # type: ignore[attr-defined]
    got = SCHEMA.parse_batch([entry(0), no_id, entry(2), entry(3)])
    assert [e.event_id for e in got.events] == ["e0", "e2", "e3"]
    assert [e.entity for e in got.events] == [10, 12, 13]
    assert got.x[:, 2].tolist() == [0.25, 2.25, 3.25]
    assert [why for _, _, why in got.malformed] == ["malformed: missing field 'event_id'"]


def test_ids_that_are_not_utf8_are_malformed_not_merged() -> None:
    """Two distinct undecodable ids would both read as "\ufffd": the second would pass for a redelivery."""
    got = SCHEMA.parse_batch([entry(0, event_id=b"\xff"), entry(1, event_id=b"\xfe"), entry(2, event_id="é".encode())])
    assert [e.event_id for e in got.events] == ["é"]
    assert [why.split(":")[1].strip() for _, _, why in got.malformed] == ["event_id", "event_id"]
    assert all("not UTF-8" in why for _, _, why in got.malformed)


FIELD_VALUES = st.one_of(
    st.sampled_from([b"", b"nan", b"inf", b"-0", b"1e42", b"1e308", b"9007199254740992", b"1.5", b"\xff", b"12"]),
    st.integers(-(2**60), 2**60).map(lambda v: str(v).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).encode()),
    st.binary(max_size=6),
)


@st.composite
def hostile_entries(draw: st.DrawFn) -> list[tuple[str, Fields]]:
    out: list[tuple[str, Fields]] = []
    for i in range(draw(st.integers(1, 12))):
        _, fields = entry(i)
        f = dict(fields)
        for name in draw(st.lists(st.sampled_from([b"event_id", b"event_time_ms", b"user_id", b"amount", b"f0"]))):
            if draw(st.booleans()):
                f.pop(name, None)
            else:
                f[name] = draw(FIELD_VALUES)
        out.append((f"1-{i}", f))
    return out


@settings(max_examples=300, deadline=None)
@given(hostile_entries())
def test_batch_equals_one_by_one_on_generated_entries(entries: list[tuple[str, Fields]]) -> None:
    """The fast path against the per-event parser (the oracle), on missing fields, empty, undecodable,
    huge, NaN and non-integer values in any position of the batch."""
    assert_batch_equals_one_by_one(entries)
