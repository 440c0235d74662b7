"""Events as they arrive on the stream: flat string fields, parsed into the model's input rows.

An event is malformed when a required field is missing, is not a finite number, an id is not an
integer, or the event id is not UTF-8 text: it goes to the dead-letter stream at once with that reason (it
would fail on every delivery).

A micro-batch is parsed in one step: every event's numeric fields into one float64 matrix (NumPy parses
the strings in C), checked at once. Only the events that fail a check go through the per-event parser,
whose error names the field; parsing field by field in Python was a third of the scorer's time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from app.stream.scripts import text

MAX_EXACT_ID = 2**53  # ids travel in the model's float64 input matrix: exact up to here
MAX_EVENT_ID = 128  # characters

Fields = Mapping[bytes | str, bytes | str]


class MalformedEventError(ValueError):
    """The event cannot be scored; the message names the field."""


@dataclass(frozen=True)
class Event:
    entry_id: str  # the stream entry id (for XACK)
    event_id: str
    event_time_ms: int
    entity: int
    value: float  # the windows' summed field


@dataclass
class ParsedBatch:
    events: list[Event] = field(default_factory=list)
    x: NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 0)))  # one model input row per event
    malformed: list[tuple[str, Fields, str]] = field(default_factory=list)  # (entry id, fields, reason)


@dataclass(frozen=True)
class EventSchema:
    event_id_field: str
    event_time_field: str
    entity_field: str
    value_field: str
    input_names: Sequence[str]

    def parse(self, entry_id: str, fields: Fields) -> tuple[Event, list[float]]:
        """One event and its model input row; MalformedEventError names the first bad field."""
        # Only the fields the model and the windows read are looked at: an event may carry many more.
        f = _Fields(fields)
        raw_id = f.raw(self.event_id_field)
        if raw_id is None or raw_id in (b"", ""):
            raise MalformedEventError(f"missing field {self.event_id_field!r}")
        event_id = _event_id(raw_id)
        if event_id is None:
            raise MalformedEventError(f"{self.event_id_field}: not UTF-8 text: {raw_id!r:.60}")
        if len(event_id) > MAX_EVENT_ID:
            raise MalformedEventError(f"{self.event_id_field}: longer than {MAX_EVENT_ID} characters")
        ts = f.integer(self.event_time_field, low=0)
        entity = f.integer(self.entity_field, low=-MAX_EXACT_ID)
        inputs = [float(entity) if n == self.entity_field else f.number(n) for n in self.input_names]
        value = f.number(self.value_field)
        return Event(entry_id, event_id, ts, entity, value), inputs

    def parse_batch(self, entries: Sequence[tuple[str, Fields]]) -> ParsedBatch:
        """Every entry parsed, in order: the good ones as events with their input rows, the others with the
        reason ``parse`` gives."""
        # Columns: event time, entity, value, then the model's inputs (the entity's column re-read: cheap).
        names = [self.event_time_field, self.entity_field, self.value_field, *self.input_names]
        bkeys = [n.encode() for n in names]
        id_b, id_s = self.event_id_field.encode(), self.event_id_field
        rows: list[list[bytes | str]] = []
        ids: list[str] = []
        slow: set[int] = set()
        for i, (_, fields) in enumerate(entries):
            str_keys = bool(fields) and isinstance(next(iter(fields)), str)
            try:
                # One row per entry whatever is missing: a second append here once shifted every later
                # event of the batch onto its predecessor's row (issue 24).
                row = [fields[n] for n in names] if str_keys else [fields[k] for k in bkeys]
                eid = fields[id_s] if str_keys else fields[id_b]
            except KeyError:
                row = ["0"] * len(names)
                slow.add(i)
                eid = b""
            rows.append(row)
            event_id = _event_id(eid)
            ids.append(event_id or "")
            if not event_id or len(event_id) > MAX_EVENT_ID:
                slow.add(i)
        n_inputs = len(self.input_names)
        try:
            m = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
        except ValueError:  # a field that is not a number: find it event by event
            m = np.zeros((len(rows), len(names)))
            slow.update(range(len(rows)))
        ts, entity = m[:, 0], m[:, 1]
        bad = ~np.isfinite(m).all(axis=1)
        bad |= (ts != np.trunc(ts)) | (ts < 0) | (ts >= MAX_EXACT_ID)
        bad |= (entity != np.trunc(entity)) | (entity < -MAX_EXACT_ID) | (entity >= MAX_EXACT_ID)
        slow.update(np.flatnonzero(bad).tolist())
        out = ParsedBatch()
        x_rows: list[NDArray[np.float64] | list[float]] = []
        for i, (entry_id, fields) in enumerate(entries):
            if i not in slow:
                out.events.append(Event(entry_id, ids[i], int(ts[i]), int(entity[i]), float(m[i, 2])))
                x_rows.append(m[i, 3:])
                continue
            try:  # the per-event parser names the problem (or, where NumPy was stricter, accepts the event)
                event, inputs = self.parse(entry_id, fields)
            except MalformedEventError as exc:
                out.malformed.append((entry_id, fields, f"malformed: {exc}"))
                continue
            out.events.append(event)
            x_rows.append(inputs)
        out.x = np.array(x_rows, dtype=np.float64).reshape(len(x_rows), n_inputs)
        return out


def _event_id(raw: bytes | str) -> str | None:
    """The id as text, or None when its bytes are not UTF-8. Decoding with replacement would map distinct
    ids onto one text (b"\\xff" and b"\\xfe" both become "\\ufffd"), and the second event would then be
    taken for a redelivery of the first: no decision, no dead letter (issue 24)."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Fields:
    """An entry's fields as Redis returns them (bytes, or str with decode_responses), read by name."""

    def __init__(self, fields: Fields) -> None:
        self.fields = fields

    def raw(self, name: str) -> bytes | str | None:
        got = self.fields.get(name.encode())
        return got if got is not None else self.fields.get(name)

    def text(self, name: str) -> str:
        got = self.raw(name)
        return text(got) if got is not None else ""

    def number(self, name: str) -> float:
        raw = self.raw(name)
        if raw is None:
            raise MalformedEventError(f"missing field {name!r}")
        try:
            x = float(raw)  # float() parses bytes and str alike
        except ValueError:
            raise MalformedEventError(f"{name}: not a number: {text(raw)[:40]!r}") from None
        if not math.isfinite(x):
            raise MalformedEventError(f"{name}: not a finite number: {text(raw)[:40]!r}")
        return x

    def integer(self, name: str, *, low: int) -> int:
        x = self.number(name)
        if x != math.trunc(x) or not low <= x < MAX_EXACT_ID:
            raise MalformedEventError(f"{name}: must be an integer in [{low}, 2**53), got {self.text(name)[:40]!r}")
        return int(x)
