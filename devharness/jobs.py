"""The jobs CLI as a Job runs it: ``python -m jobs ...`` in its own process, with its one JSON summary line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devharness.processes import ROOT


@dataclass(frozen=True)
class JobRun:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The summary line; every run prints exactly one on stdout, whatever its exit code."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        if len(lines) != 1:
            raise AssertionError(f"{self}: expected one summary line, got {self.stdout!r}; stderr {self.stderr!r}")
        summary: dict[str, Any] = json.loads(lines[0])
        return summary

    def ok(self) -> dict[str, Any]:
        """The summary of a run that must have succeeded."""
        if self.code != 0:
            raise AssertionError(f"{self} exited {self.code}:\n{self.stdout}{self.stderr}")
        return self.summary

    def __str__(self) -> str:
        return "python -m jobs " + " ".join(self.args)


def run_job(*args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> JobRun:
    """``env`` is added to this process's environment."""
    p = subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return JobRun(args, p.returncode, p.stdout, p.stderr)
