"""Run a set of tests many times in a row under CPU load, and count: the proof that a test involving time,
scheduling or scrapes does not depend on luck before anyone relies on it (`make test-timed`).

    python -m devharness.repeat --runs 20 --load 2 -- -m timed

Each run is a fresh pytest process (fresh fixtures, fresh servers, fresh scrape timings). ``--load N``
keeps N busy processes spinning for the whole time, so the tests compete for the CPU as on a loaded CI
machine. Prints one line per run and a summary; the exit status is 1 if any run failed. The failing runs'
output is kept under var/repeat/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from devharness.processes import ROOT, Server

BUSY = "while True: pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run pytest many times in a row under CPU load")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", type=int, default=2, help="busy processes spinning meanwhile (0: none)")
    parser.add_argument("pytest_args", nargs="*", help="after --: what to run, e.g. -m timed")
    args = parser.parse_args(argv)
    out = ROOT / "var" / "repeat"
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, object]] = []
    summary: dict[str, object] = {}
    with ExitStack() as stack:
        for i in range(args.load):
            stack.enter_context(Server([sys.executable, "-c", BUSY], out / f"load{i}.log"))
        for run in range(1, args.runs + 1):
            t0 = time.monotonic()
            p = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                cwd=ROOT,
                check=False,  # a failed run is counted, not raised
                capture_output=True,
                text=True,
            )
            seconds = time.monotonic() - t0
            tail = p.stdout.strip().splitlines()[-1:] or ["(no output)"]
            results.append({"run": run, "exit": p.returncode, "seconds": round(seconds, 1), "summary": tail[0]})
            if p.returncode != 0:
                (out / f"run{run}.log").write_text(p.stdout + p.stderr)
            print(f"run {run}/{args.runs}: exit {p.returncode} in {seconds:.0f} s: {tail[0]}", flush=True)
            summary = _write_summary(out, args, results)  # after every run: an interrupted series still counts
            if p.returncode not in (0, 1):  # interrupted, a collection or usage error: the next runs would be too
                print(f"stopping: pytest exit {p.returncode} is not a test result (see {out}/run{run}.log)")
                return 2
    print(json.dumps(summary))
    return 1 if summary["passed"] < args.runs else 0


def _write_summary(out: Path, args: argparse.Namespace, results: list[dict[str, object]]) -> dict[str, object]:
    passed = sum(1 for r in results if r["exit"] == 0)
    summary = {"runs": len(results), "passed": passed, "load": args.load, "pytest": args.pytest_args}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    (out / "summary.json").write_text(
        json.dumps({**summary, "commit": commit.stdout.strip(), "results": results}, indent=1)
    )
    return summary


if __name__ == "__main__":
    sys.exit(main())
