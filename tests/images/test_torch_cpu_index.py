"""Issue 25, finding 12: the CPU images install the lock's CPU torch, not PyPI's CUDA build.

PyPI's torch 2.13.0 is the CUDA build: it requires nvidia-cudnn, nccl, nvshmem, cusparselt and triton,
gigabytes no pin names. The lock pins torch==2.13.0+cpu, which only PyTorch's CPU wheel index serves. Nothing
can be downloaded here beyond PyPI, so what pip would resolve is checked statically, from what decides it:

- every `pip install` of our Dockerfiles is constrained by the lock as it is (constraints.txt, not a copy with
  lines removed), and one that can reach torch names the CPU wheel index;
- the lock pins torch with the +cpu local version, which no PyPI wheel carries: pip can take only the index's;
- every distribution an image's requirements reach (their closure, from the metadata of the +cpu build
  installed here) has an exact pin in the lock, so pip has no version left to choose, and none of them is a
  CUDA wheel."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.images import IMAGES, ROOT, instructions, substitute
from tests.images.test_image_imports import closure

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LOCK = ROOT / "constraints.txt"
EXTRA = ROOT / "images" / "constraints-extra.txt"  # what the lock leaves out (setuptools)
CONSTRAINTS = ["constraints.txt", "constraints-extra.txt"]  # as each build stage copies them


def is_cuda_wheel(name: str) -> bool:
    """The CUDA build's extra wheels: NVIDIA's libraries and OpenAI's triton compiler (not Triton's client)."""
    return (name.startswith(("nvidia-", "cuda-")) and name != "nvidia-pytriton") or name == "triton"


def pins_of(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"the lock pins exactly: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def lock_pins() -> dict[str, str]:
    lock, extra = pins_of(LOCK), pins_of(EXTRA)
    assert not lock.keys() & extra.keys(), f"pinned twice: {lock.keys() & extra.keys()}"
    return {**lock, **extra}


def pip_commands(dockerfile: Path) -> list[list[str]]:
    """The argv of every `pip install` in a Dockerfile's RUN lines (ARG defaults substituted)."""
    scope: dict[str, str] = {}
    out = []
    for word, rest in instructions(dockerfile):
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            scope[name] = default.strip().strip('"')
        if word != "RUN":
            continue
        tokens = shlex.split(substitute(rest, scope, keep_unknown=True))
        command: list[str] = []
        for t in [*tokens, "&&"]:
            if t in {"&&", "||", ";"}:
                if len(command) > 2 and Path(command[0]).name in {"pip", "pip3"} and command[1] == "install":
                    out.append(command)
                command = []
            else:
                command.append(t)
    return out


def _option(argv: list[str], *names: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in names]


DOCKERFILES = sorted({i.dockerfile for i in IMAGES.values()})


def test_the_lock_pins_the_cpu_build_of_torch() -> None:
    assert pins_of(LOCK)["torch"].endswith("+cpu"), "constraints.txt must pin torch's CPU build (torch==X+cpu)"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_pip_install_is_constrained_by_the_lock_as_it_is(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "grep -v '^torch==' constraints.txt" not in text, "the lock's torch pin is dropped"
    for argv in pip_commands(dockerfile):
        if "--no-deps" in argv:
            continue  # one exact requirement, nothing resolved (nvidia-pytriton for its tritonserver build)
        assert _option(argv, "-c", "--constraint") == CONSTRAINTS, shlex.join(argv)
        values = _option(argv, "-c", "--constraint", "--extra-index-url", "--index-url", "-i")
        reqs = [a for a in argv[2:] if not a.startswith("-") and a not in values]
        reaches_torch = any(r.startswith((".[multimodal]", "torch")) or "EXTRAS" in r for r in reqs)
        if reaches_torch or dockerfile.parent.name == "triton-cpu":
            indexes = _option(argv, "--extra-index-url", "--index-url", "-i")
            assert CPU_INDEX in indexes, f"{dockerfile.name}: `{shlex.join(argv)}` may install torch from PyPI only"


@pytest.mark.parametrize("name", [n for n, i in IMAGES.items() if i.requirements])
def test_every_package_an_image_installs_is_pinned_and_none_is_a_cuda_wheel(name: str) -> None:
    image = IMAGES[name]
    pins = lock_pins()
    reached = closure(image.requirements, image.no_deps) - {"ml-platform"}
    unpinned = sorted(
        d for d in reached - {canonicalize_name(Requirement(r).name) for r in image.no_deps} if d not in pins
    )
    assert not unpinned, f"{name}: pip could choose any version of {unpinned}: pin them in constraints.txt"
    cuda = sorted(d for d in reached if is_cuda_wheel(d))
    assert not cuda, f"{name}: CUDA wheels in a CPU image: {cuda}"
    if "torch" in reached:
        assert pins["torch"].endswith("+cpu")


def test_the_closure_check_sees_the_cuda_builds_requirements() -> None:
    """The check itself: PyPI's CUDA torch declares its nvidia wheels (the +cpu build installed here does not),
    and a requirement the lock does not pin is reported."""
    cuda_requires = [
        "nvidia-cudnn-cu12==9.10.2.21; platform_system == 'Linux'",
        "triton==3.5.0; platform_system == 'Linux'",
    ]
    names = {canonicalize_name(Requirement(r).name) for r in cuda_requires}
    assert all(is_cuda_wheel(n) for n in names) and not names & lock_pins().keys()
    assert not is_cuda_wheel("tritonclient") and not is_cuda_wheel("nvidia-pytriton")
