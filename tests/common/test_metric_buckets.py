"""Every histogram the platform defines has each bucket once, in order (issue 24: the stream's latency
histogram exposed ``le="5.0"`` twice, a duplicate series for Prometheus)."""

from __future__ import annotations

import importlib
import itertools
import pkgutil

from prometheus_client import REGISTRY, Histogram

import app


def test_every_histogram_has_strictly_increasing_buckets() -> None:
    for mod in pkgutil.walk_packages(app.__path__, "app."):
        if mod.name.endswith("metrics"):
            importlib.import_module(mod.name)
    histograms = [c for c in list(REGISTRY._collector_to_names) if isinstance(c, Histogram)]
    assert len(histograms) >= 5
    for h in histograms:
        bounds = h._upper_bounds  # with +Inf, as exposed
        assert all(a < b for a, b in itertools.pairwise(bounds)), (h._name, bounds)
