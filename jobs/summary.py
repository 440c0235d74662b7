"""The single structured summary line every job prints on stdout."""

from __future__ import annotations

import sys
from typing import Any

import orjson


def emit(job: str, status: str, **fields: Any) -> None:
    line = {"job": job, "status": status, **fields}
    sys.stdout.write(orjson.dumps(line, default=str).decode() + "\n")
    sys.stdout.flush()
