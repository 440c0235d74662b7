"""Events as they arrive on the stream: flat string fields, parsed into the model's input row.

An event is malformed when a required field is missing, is not a finite number, or an id is not an
integer: it goes to the dead-letter stream at once with that reason (it would fail on every delivery).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.stream.scripts import text

MAX_EXACT_ID = 2**53  # ids travel in the model's float64 input matrix: exact up to here


class MalformedEventError(ValueError):
    """The event cannot be scored; the message names the field."""


@dataclass(frozen=True)
class Event:
    entry_id: str  # the stream entry id (for XACK)
    event_id: str
    event_time_ms: int
    entity: int
    value: float  # the windows' summed field
    inputs: tuple[float, ...]  # the model's input names, in order


@dataclass(frozen=True)
class EventSchema:
    event_id_field: str
    event_time_field: str
    entity_field: str
    value_field: str
    input_names: Sequence[str]

    def parse(self, entry_id: str, fields: Mapping[bytes | str, bytes | str]) -> Event:
        # Only the fields the model and the windows read are looked at: an event may carry many more.
        f = _Fields(fields)
        event_id = f.text(self.event_id_field)
        if not event_id:
            raise MalformedEventError(f"missing field {self.event_id_field!r}")
        if len(event_id) > 128:
            raise MalformedEventError(f"{self.event_id_field}: longer than 128 characters")
        ts = f.integer(self.event_time_field, low=0)
        entity = f.integer(self.entity_field, low=-MAX_EXACT_ID)
        inputs = tuple(float(entity) if n == self.entity_field else f.number(n) for n in self.input_names)
        value = f.number(self.value_field)
        return Event(entry_id, event_id, ts, entity, value, inputs)


class _Fields:
    """An entry's fields as Redis returns them (bytes, or str with decode_responses), read by name."""

    def __init__(self, fields: Mapping[bytes | str, bytes | str]) -> None:
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
