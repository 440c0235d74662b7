"""The platform (app/) stands alone: it never imports the tests, the dev harness, the examples, the demo or the
benchmarks, so a service image holds the platform and what it loads by reference, nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

from devharness import ROOT

OUTSIDE_THE_PLATFORM = ("tests", "devharness", "examples", "bench", "demo")


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_app_imports_nothing_outside_the_platform() -> None:
    offending = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "app").rglob("*.py"))
        for name in imported_modules(path)
        if name.partition(".")[0] in OUTSIDE_THE_PLATFORM
    ]
    assert offending == []


def test_the_scan_sees_imports_of_every_form(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import tests.servers\nfrom devharness import Server\ndef f():\n    import examples.fraud\n")
    assert imported_modules(module) == ["tests.servers", "devharness", "examples.fraud"]
