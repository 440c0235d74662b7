"""Each image's expected size, as the README's image table states it (issue 25): what the image holds, added up
without building it. The virtualenv is the closure of the image's requirements, sized from the files the
distributions installed here (the same pinned versions, torch's +cpu build; bytecode caches left out, as the
Dockerfiles delete them), plus the base image and, for jobs-spark, the JRE. Uncompressed, as `docker images`
shows it; a registry stores about a third of it."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest

from tests.deploy.images import IMAGES, ROOT
from tests.images.test_image_imports import closure

MB = 1_000_000
BASE_MB = 130  # python:3.11-slim-bookworm, uncompressed
EXTRA_MB = {"jobs-spark": 210}  # Debian's openjdk-17-jre-headless and its dependencies
TOLERANCE = 0.15


def installed_mb(distribution: str) -> float:
    dist = md.distribution(distribution)
    total = 0
    for f in dist.files or []:
        if "__pycache__" in f.parts:
            continue
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            total += path.stat().st_size
    return total / MB


def expected_mb(name: str) -> float:
    image = IMAGES[name]
    venv = sum(installed_mb(d) for d in closure(image.requirements, image.no_deps) - {"ml-platform"})
    return BASE_MB + EXTRA_MB.get(name, 0) + venv


def stated_sizes() -> dict[str, float]:
    """The README's image table: `| \\`name\\` | built from | runs | ≈ 1.0 GB |` -> {name: MB}."""
    out = {}
    for m in re.finditer(r"^\| `([\w-]+)` \|.*\| ≈ ([\d.]+) GB \|$", (ROOT / "README.md").read_text(), re.M):
        out[m.group(1)] = float(m.group(2)) * 1000
    return out


@pytest.mark.parametrize("name", [n for n, i in IMAGES.items() if i.requirements])
def test_the_readme_states_each_images_size(name: str) -> None:
    stated = stated_sizes()
    assert name in stated, f"README's image table states no size for {name}"
    computed = expected_mb(name)
    assert abs(stated[name] - computed) <= TOLERANCE * computed, (
        f"{name}: README ≈{stated[name]} MB, computed {computed:.0f} MB"
    )
