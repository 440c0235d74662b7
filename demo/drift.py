"""The demo's drift step: the fraud model's traffic in three windows, and the monitor right about each.

1. **baseline**: every other one of the scenario's 3,000 newest transactions, as they are;
2. **first half**: the others, as they are;
3. **second half**: the same transactions as the first half with every amount tripled.

The demo replays past transactions with today's online statistics, so the baseline and the first half
alternate in time: a baseline of the older transactions would differ from newer ones for a reason live
traffic does not have (the newest transactions are not yet in their user's 30-day max and mean; older ones
are), and the monitor would rightly flag amount_to_max_30d.

The reference is a baseline window of served traffic (``drift-report --reference-window``), not the
training profile. Why: the online store serves each user's statistics **as of now**, while training saw them
as of each past transaction (point-in-time). On the demo's 14 days of history the served statistics truly
differ from training: by now every user has 14 days of history (training rows from the first days had one
or two), and the replayed transactions are already counted in their user's statistics (most amounts are in
the 30-day max and mean they are divided by). That is a real difference between training and serving,
reported once as such, not drift of the traffic. Against the baseline, the first half flags nothing and the
second half flags the amount, what the request-time transform computes from it (amount_to_mean_30d,
amount_to_max_30d) and the score.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROWS = 1500  # per window: ~10 rows per bin of a 10-bin feature's reference, ample for every statistic
AMOUNT_SCALE = 3.0
AMOUNT_DEPENDENT = frozenset({"amount", "amount_to_mean_30d", "amount_to_max_30d"})

Jobs = Callable[..., dict[str, Any]]  # runs `python -m jobs ARGS...`, returns its summary line


@dataclass
class DriftDemo:
    """What the step found: features flagged per report, and the PSI of every feature per report."""

    against_training: list[str] = field(default_factory=list)  # first half against the training profile
    first_half: list[str] = field(default_factory=list)  # against the baseline window
    second_half: list[str] = field(default_factory=list)
    psi: dict[str, dict[str, float]] = field(default_factory=dict)  # report -> feature -> PSI


def post(url: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def recent_transactions(offline_url: str, redis_url: str, users: int, rows: int) -> list[dict[str, Any]]:
    """The newest ``rows`` transactions of users whose features the online store has, oldest first."""
    from app.features.offline import OfflineStore
    from app.features.online import OnlineStore, Status, connect
    from examples.fraud.repo import TRANSACTIONS, user_stats

    ids = range(1, users + 1)
    found = OnlineStore(connect(redis_url)).read([(user_stats, user_stats.feature_names)], ids)[0]
    present = {u for u, st in zip(ids, found.statuses, strict=True) if st is Status.PRESENT}
    tx = OfflineStore(offline_url).read_window(TRANSACTIONS, "timestamp", None, None).to_pylist()
    picked = [t for t in tx if t["user_id"] in present][-rows:]
    if len(picked) < rows:
        raise SystemExit(f"drift step: {len(picked)} recent transactions with online features, want {rows}")
    return picked


def send(url: str, transactions: list[dict[str, Any]], scale: float, flush_s: float) -> tuple[str, str]:
    """The transactions through the fraud model (25 per request); the window they were served in."""
    started = datetime.now(UTC)
    for i in range(0, len(transactions), 25):
        batch = [
            {"user_id": t["user_id"], "amount": t["amount"] * scale, "merchant_category": t["merchant_category"]}
            for t in transactions[i : i + 25]
        ]
        status, body = post(url + "/v1/models/fraud/predict", {"instances": batch})
        if status != 200:
            raise SystemExit(f"drift traffic: {status} {body}")
    time.sleep(flush_s)  # the served-data log's flush interval: every row is written before the window closes
    return started.isoformat(), datetime.now(UTC).isoformat()


def drift_step(
    jobs: Jobs, env: dict[str, str], url: str, served_log: Path, out: Path, *, users: int, flush_s: float = 1.0
) -> DriftDemo:
    """Serve the three windows, then the reports; print what they show. ``jobs(env, *args)`` runs a job."""
    transactions = recent_transactions(env["FEATURES_OFFLINE_URL"], env["FEATURES_REDIS_URL"], users, 2 * ROWS)
    baseline_tx, later_tx = transactions[0::2], transactions[1::2]  # alternating in time: see the docstring
    baseline = send(url, baseline_tx, 1.0, flush_s)
    first = send(url, later_tx, 1.0, flush_s)
    second = send(url, later_tx, AMOUNT_SCALE, flush_s)
    result = DriftDemo()
    log = ("--served-log", str(served_log))

    def report(name: str, window: tuple[str, str], *reference: str) -> list[str]:
        summary = jobs(
            env, "drift-report", "--model", "fraud", *log, "--between", *window, *reference, "--out", str(out)
        )
        flagged: list[str] = summary["windows"]["between"]["drifted"]
        records = json.loads(Path(summary["reports"]["json"]).read_text())["features"]
        result.psi[name] = {r["feature"]: r["psi"] for r in records}
        # each report's files are kept under its own name: the next report writes the same file names
        for path in summary["reports"].values():
            Path(path).rename(out / f"{name}-{Path(path).name}")
        return flagged

    result.against_training = report("first-half-vs-training", first)
    print(
        f"    first half against the training profile: {len(result.against_training)} features differ "
        f"{result.against_training}.\n"
        "    Not drift of the traffic: the online store serves each user's statistics as of now (14 days of\n"
        "    history, the replayed transactions counted), training saw them as of each past transaction. Served\n"
        "    'as of now' statistics truly differ from training's point-in-time ones, so the demo's reference is a\n"
        "    baseline window of served traffic (drift-report --reference-window; docs/operations.md)."
    )
    reference = ("--reference-window", *baseline)
    result.first_half = report("first-half", first, *reference)
    result.second_half = report(f"second-half-amounts-x{AMOUNT_SCALE:g}", second, *reference)
    print(f"    against the baseline window: first half flags {result.first_half or 'nothing'}")
    print(f"    second half (amounts x{AMOUNT_SCALE:g}) flags {result.second_half}")
    before, after = result.psi["first-half"], result.psi[f"second-half-amounts-x{AMOUNT_SCALE:g}"]
    print(f"    {'feature':<24} {'PSI 1st half':>12} {'PSI 2nd half':>12}")
    for feature, value in before.items():
        mark = "  <- drift" if feature in result.second_half else ""
        print(f"    {feature:<24} {value:>12.3f} {after[feature]:>12.3f}{mark}")
    print(f"    reports (JSON, Parquet, HTML): {out}")
    return result
