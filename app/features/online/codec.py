"""One view's values packed for writes (vectorized, many rows) and unpacked for reads (one value)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from app.features.definitions import FeatureView

HEADER = 32  # event and created time, 16 decimal digits each


@dataclass
class Codec:
    """Packs and unpacks one view's values."""

    view: FeatureView

    def __post_init__(self) -> None:
        self.record = self.view.numpy_dtype()
        self.n_features = len(self.view.features)
        self.bitmap_bytes = (self.n_features + 7) // 8
        self.size = HEADER + self.bitmap_bytes + self.record.itemsize
        self.layout = np.dtype([("hdr", "S32"), ("bitmap", np.uint8, (self.bitmap_bytes,)), ("rec", self.record)])
        codes = {"float32": "f", "float64": "d", "int32": "i", "int64": "q"}
        self.record_struct = struct.Struct("<" + "".join(codes[f.dtype] for f in self.view.features))
        self.no_nulls = bytes(self.bitmap_bytes)
        self.ttl_us = int(self.view.ttl / timedelta(microseconds=1))

    def pack(self, table: pa.Table) -> bytes:
        """The values of all rows of ``table``, concatenated (each ``self.size`` bytes)."""
        n = table.num_rows
        out = np.zeros(n, dtype=self.layout)
        ev = timestamps_us(table.column(self.view.event_timestamp_column))
        cr = timestamps_us(table.column(self.view.created_timestamp_column))
        hdr = np.frombuffer(fixed_digits(ev, 16), dtype=np.uint8).reshape(n, 16)
        out["hdr"] = (
            np.hstack([hdr, np.frombuffer(fixed_digits(cr, 16), dtype=np.uint8).reshape(n, 16)]).view("S32").reshape(n)
        )
        nulls = np.zeros((n, self.n_features), dtype=bool)
        for i, f in enumerate(self.view.features):
            col = table.column(f.name)
            nulls[:, i] = col.is_null().to_numpy(zero_copy_only=False)
            filled = pc.fill_null(col, 0).to_numpy() if col.null_count else col.to_numpy()
            out["rec"][f.name] = filled
        out["bitmap"] = np.packbits(nulls, axis=1, bitorder="little")
        return out.tobytes()

    def split(self, blob: bytes) -> list[bytes]:
        s = self.size
        return [blob[i : i + s] for i in range(0, len(blob), s)]

    def unpack(self, value: bytes) -> tuple[int, tuple[Any, ...], bytes]:
        """(event time in µs, the record's values in declaration order, null bitmap) of one value.

        ``struct`` rather than NumPy: per value it is many times faster (docs/design.md, "Online
        store reads"), and reads are small."""
        return (
            int(value[:16]),
            self.record_struct.unpack_from(value, HEADER + self.bitmap_bytes),
            value[HEADER : HEADER + self.bitmap_bytes],
        )


def fixed_digits(values: NDArray[np.int64], width: int) -> bytes:
    """Non-negative integers as concatenated zero-padded decimal ASCII, vectorized."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + 48).astype(np.uint8).tobytes()


def timestamps_us(col: pa.ChunkedArray) -> NDArray[np.int64]:
    """A timestamp column as integer microseconds since the epoch (UTC)."""
    return np.asarray(pc.cast(col, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(), dtype=np.int64)
