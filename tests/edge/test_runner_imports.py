"""The edge runner stands alone: the standard library, NumPy, ONNX Runtime and Pillow, nothing else (the
minimal-virtualenv tests prove it runs so; this says which import broke it when it does not)."""

from __future__ import annotations

import sys

from devharness import ROOT
from tests.test_layers import imported_modules

ALLOWED = {"numpy", "onnxruntime", "PIL", "__future__"}


def test_runner_imports_only_numpy_onnxruntime_pillow_and_the_standard_library() -> None:
    tops = {name.partition(".")[0] for name in imported_modules(ROOT / "app" / "edge" / "runner.py")}
    outside = sorted(t for t in tops if t not in ALLOWED and t not in sys.stdlib_module_names)
    assert outside == []
    assert {"numpy", "onnxruntime", "PIL"} <= tops  # the scan sees the imports it should
