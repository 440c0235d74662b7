"""For every image, the container's entry point imports with only the packages its Dockerfile installs.

What an image installs is read from its Dockerfile's pip lines, resolved with that image's build args
(tests/deploy/images.py). Their dependency closure comes from metadata: pyproject.toml for ml-platform
itself (what the image build installs, whatever this virtualenv was installed from), the installed
distributions' metadata for everything else, extras and environment markers evaluated. A subprocess
then hides every installed distribution outside the closure (a sys.meta_path finder refusing the
top-level modules only such distributions own) and imports the entry point, building the app where
the module builds it lazily. Finding 2 of issue 8: the preprocessing image lacked tritonclient, which
the service imports at boot; test_the_old_preprocess_install_line_fails keeps that case as a witness."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Sequence
from functools import cache

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.images import IMAGES, PROJECT, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# What each container runs, as Python: the gunicorn services load their config module, their worker
# class and the app (built, not just imported); the jobs build their CLI; the export job also imports the
# torch modules its subcommands import on demand (jobs/multimodal.py); Triton's python backend imports
# torch, DLPack and the backend utilities (app/multimodal/triton_repo.py: PYTHON_BACKEND_MODEL).
SERVICE = """
import gunicorn.app.wsgiapp, gunicorn.util, uvicorn
conf = importlib.import_module("app.common.gunicorn_conf")
gunicorn.util.load_class(conf.worker_class)
app = getattr(importlib.import_module("app.{svc}.main"), "app")
uvicorn.Config(app).load()  # uvicorn imports its HTTP, WebSocket and loop implementations here
"""
JOBS = """
main = importlib.import_module("jobs.__main__")
main.build_parser().parse_args(["list-models"])
"""
ENTRY_POINTS = {
    "predict": SERVICE.format(svc="predict"),
    # The feature server refuses to start without a repository: the chart's value (featurestore.repo).
    "featureserver": 'import os\nos.environ["FEATURES_REPO"] = "examples.fraud.repo:reference_repo"\n'
    + SERVICE.format(svc="featureserver"),
    "preprocess": SERVICE.format(svc="preprocess"),
    # The stream scorer: its module, the registry and engine it scores with, redis.asyncio.
    "stream": 'main = importlib.import_module("app.stream.__main__")\nmain.StreamSettings()\n',
    "jobs": JOBS,
    "jobs-multimodal": JOBS
    + """
for m in ("torch", "app.multimodal.model", "app.multimodal.training", "app.multimodal.triton_repo",
          "examples.multimodal.training"):
    importlib.import_module(m)
""",
    # The Spark engines' image: the CLI, pyspark (its JVM is the JRE of the image, not started here) and
    # the modules `historical`/`features --engine spark` import on demand.
    "jobs-spark": JOBS
    + """
for m in ("pyspark.sql", "pyspark.sql.pandas.types", "app.features.pit_spark", "examples.fraud.features_sql"):
    importlib.import_module(m)
""",
    "triton-cpu": """
import importlib.util, os, runpy
spec = importlib.util.find_spec("pytriton")
utils = os.path.join(next(iter(spec.submodule_search_locations)), "tritonserver", "backends", "python",
                     "triton_python_backend_utils.py")
runpy.run_path(utils)
import torch
from torch.utils.dlpack import from_dlpack, to_dlpack
""",
}
# NGC's Triton: nothing of ours is installed in it, no Python entry point.
NOT_PYTHON = {"triton"}

HIDER = """
import importlib, importlib.abc, json, sys
BLOCKED = frozenset(json.loads(sys.argv[1]))

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (installed, but not in this image)", name=name)
        return None

for loaded in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[loaded]  # imported by a .pth file at startup, before the finder
sys.meta_path.insert(0, Hide())
"""


def _project_requirements(extras: set[str]) -> list[Requirement]:
    """ml-platform's own requirements from pyproject.toml: the base and the extras asked for."""
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in extras:
        if extra not in PYPROJECT["optional-dependencies"]:
            raise AssertionError(f"ml-platform has no extra {extra!r}")
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    return reqs


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = {k: str(v) for k, v in default_environment().items()}
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def closure(requirements: Sequence[str], no_deps: Sequence[str] = ()) -> set[str]:
    """Canonical names of the distributions pip would install for these requirements."""
    seen: dict[str, set[str]] = {}  # name -> extras already expanded
    todo = [(Requirement(r), r in no_deps) for r in requirements]
    while todo:
        req, skip_deps = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        if skip_deps:
            continue
        if name == PROJECT:
            deps = [d for d in _project_requirements(extras) if _applies(d, set())]
        else:
            try:
                dist = md.distribution(name)
            except md.PackageNotFoundError:
                raise AssertionError(f"{req} is in an image but not installed here: cannot prove its imports") from None
            if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
                raise AssertionError(f"{req}: installed {dist.version} does not satisfy it")
            deps = [Requirement(d) for d in dist.requires or []]
            deps = [d for d in deps if _applies(d, extras)]
        todo += [(d, False) for d in deps if d.marker is None or _applies(d, extras)]
    return set(seen)


@cache
def top_level_modules() -> dict[str, frozenset[str]]:
    """Installed distribution -> the top-level modules and packages it owns (from its RECORD)."""
    out: dict[str, set[str]] = {}
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        tops = out.setdefault(name, set())
        for f in dist.files or []:
            first = f.parts[0]
            if first.endswith((".dist-info", ".egg-info", ".data", ".pth")) or first in {"..", "__pycache__"}:
                continue
            if len(f.parts) == 1:
                if f.suffix not in {".py", ".so", ".pyd"}:
                    continue
                first = first.split(".")[0]
            tops.add(first)
    out.setdefault(PROJECT, set()).update({"app", "jobs"})  # editable here: its RECORD names no package
    return {k: frozenset(v) for k, v in out.items()}


def blocked_modules(allowed: set[str]) -> set[str]:
    """Top-level modules owned only by distributions outside `allowed` (never the standard library's)."""
    owners = top_level_modules()
    keep = set().union(*(owners.get(d, frozenset()) for d in allowed))
    hide = set().union(*(mods for d, mods in owners.items() if d not in allowed))
    return hide - keep - set(sys.stdlib_module_names)


def import_as_in_image(code: str, requirements: list[str], no_deps: list[str]) -> subprocess.CompletedProcess[str]:
    allowed = closure(requirements, no_deps)
    script = HIDER + "\nimport importlib\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, json.dumps(sorted(blocked_modules(allowed)))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("name", [n for n in IMAGES if n not in NOT_PYTHON])
def test_entry_point_imports_with_only_what_the_image_installs(name: str) -> None:
    image = IMAGES[name]
    assert image.requirements, f"{name}: no pip install found in {image.dockerfile}"
    p = import_as_in_image(ENTRY_POINTS[name], image.requirements, image.no_deps)
    assert p.returncode == 0, f"{name} ({image.requirements}):\n{p.stderr[-3000:]}"


def test_every_image_is_checked() -> None:
    assert set(IMAGES) == set(ENTRY_POINTS) | NOT_PYTHON
    assert IMAGES["triton"].requirements == []


def test_the_old_preprocess_install_line_fails() -> None:
    """The checker can fail: images/preprocess/Dockerfile before issue 8 installed
    `pillow python-multipart .`, and the service imports tritonclient at boot."""
    p = import_as_in_image(ENTRY_POINTS["preprocess"], ["pillow", "python-multipart", PROJECT], [])
    assert p.returncode != 0 and "No module named 'tritonclient'" in p.stderr, p.stderr[-2000:]


def test_the_closure_follows_extras_and_markers() -> None:
    base = closure([PROJECT])
    assert {
        "fastapi",
        "starlette",
        "redis",
        "hiredis",
        "uvloop",
        "httptools",
    } <= base  # uvicorn[standard], redis[hiredis]
    assert "torch" not in base and "tritonclient" not in base and "pillow" not in base
    pre = closure([f"{PROJECT}[preprocess]"])
    assert {"tritonclient", "geventhttpclient", "pillow", "python-multipart"} <= pre and "torch" not in pre
    assert "torch" in closure([f"{PROJECT}[multimodal]"])
    assert closure(["nvidia-pytriton==0.7.0"], ["nvidia-pytriton==0.7.0"]) == {"nvidia-pytriton"}
    assert "pytest" not in closure([f"{PROJECT}[preprocess,multimodal]"])  # dev is not asked for
