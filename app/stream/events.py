"""Events as they arrive on the stream: flat string fields, parsed into the model's input row.

An event is malformed when a required field is missing, is not a finite number, or an id is not an
integer: it goes to the dead-letter stream at once with that reason (it would fail on every delivery).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
        f = {_s(k): _s(v) for k, v in fields.items()}
        event_id = f.get(self.event_id_field, "")
        if not event_id:
            raise MalformedEventError(f"missing field {self.event_id_field!r}")
        if len(event_id) > 128:
            raise MalformedEventError(f"{self.event_id_field}: longer than 128 characters")
        ts = self._integer(f, self.event_time_field, low=0)
        entity = self._integer(f, self.entity_field, low=-MAX_EXACT_ID)
        inputs = tuple(float(entity) if n == self.entity_field else self._number(f, n) for n in self.input_names)
        value = self._number(f, self.value_field)
        return Event(entry_id, event_id, ts, entity, value, inputs)

    @staticmethod
    def _number(f: Mapping[str, str], name: str) -> float:
        raw = f.get(name)
        if raw is None:
            raise MalformedEventError(f"missing field {name!r}")
        try:
            x = float(raw)
        except ValueError:
            raise MalformedEventError(f"{name}: not a number: {raw[:40]!r}") from None
        if not math.isfinite(x):
            raise MalformedEventError(f"{name}: not a finite number: {raw[:40]!r}")
        return x

    @classmethod
    def _integer(cls, f: Mapping[str, str], name: str, *, low: int) -> int:
        x = cls._number(f, name)
        if x != math.trunc(x) or not low <= x < MAX_EXACT_ID:
            raise MalformedEventError(f"{name}: must be an integer in [{low}, 2**53), got {f[name][:40]!r}")
        return int(x)


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
