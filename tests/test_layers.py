"""The platform (app/) stands alone: it never imports the tests, the dev harness, the examples, the demo or the
benchmarks, so a service image holds the platform and what it loads by reference, nothing else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from devharness import ROOT
from examples.multimodal.dataset import CLASSES, FAMILIES, SHAPES, VOCABULARY

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


# Words that belong to a scenario, not to the platform: the examples package, the fraud example's names, and
# the multimodal example's (its listings, class names and title words; "round", "square" and most of the title
# words, "set", "model", "the", are ordinary words in code: the materials and a few descriptors are not).
TITLE_WORDS = ("cotton", "linen", "wool", "steel", "aluminium", "titanium", "deluxe", "vintage", "everyday")
MULTIMODAL_WORDS = (
    *CLASSES,
    *(w for w in (*SHAPES, *FAMILIES) if w not in ("round", "square")),
    *TITLE_WORDS,
    "listing",
    "listings",
)
SCENARIO_WORDS = ("examples", "fraud", "user_stats", *MULTIMODAL_WORDS)


def scenario_words(path: Path, words: tuple[str, ...] = SCENARIO_WORDS) -> list[str]:
    """Every scenario word in a file's source, comments and docstrings included (a default that names the
    example is a string, not an import), as whole words, any case."""
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9])", re.IGNORECASE)
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{n}: {m.group(0)}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for m in pattern.finditer(line)
    ]


def test_the_title_words_scanned_for_are_the_scenarios() -> None:
    assert set(TITLE_WORDS) <= set(VOCABULARY)  # the vocabulary lives in examples/, and app/ never names it


def test_app_names_no_scenario() -> None:
    offending = [hit for path in sorted((ROOT / "app").rglob("*.py")) for hit in scenario_words(path)]
    assert offending == []


def test_the_word_scan_finds_names_in_code_strings_and_comments(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        'repo: str = "examples.fraud.repo:reference_repo"\n# see USER_STATS\nfraudulent = 1\n'
        'CLASSES = ("round-textile", "triangle-metal")  # generated Listings\n'
        'VOCAB = ("Cotton", "titanium", "deluxe", "set")\n'
    )
    assert scenario_words(module) == [
        "m.py:1: examples",
        "m.py:1: fraud",
        "m.py:2: USER_STATS",
        "m.py:4: round-textile",
        "m.py:4: triangle-metal",
        "m.py:4: Listings",
        "m.py:5: Cotton",
        "m.py:5: titanium",
        "m.py:5: deluxe",
    ]


# Layers below a service import no service: the model runtime serves the prediction service and the stream
# scorer alike, and neither service imports the other (issue 24: the stream imported the prediction service's
# registry, and the prediction service the stream's keys).
SERVICE_LAYERS = {
    "app.runtime": ("app.predict", "app.stream", "app.featureserver", "app.preprocess"),
    "app.common": ("app.predict", "app.stream", "app.featureserver", "app.preprocess", "app.runtime"),
    "app.stream": ("app.predict",),
    "app.predict": ("app.stream",),
}


def test_layers_import_downward_only() -> None:
    offending = []
    for layer, forbidden in SERVICE_LAYERS.items():
        for path in sorted((ROOT / layer.replace(".", "/")).rglob("*.py")):
            for name in imported_modules(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    offending.append(f"{path.relative_to(ROOT)}: {name}")
    assert offending == []
