"""Our container images as the tests need them, read from where they are defined: the Makefile's image list
(`make print-images`: the docker build line of each image) and the Dockerfiles those lines name.

Without Docker nothing is built, so a Dockerfile is evaluated here: its stages, ARG/ENV substitution with
the build args of the image, and of the stage the build targets, the ENV, ENTRYPOINT, CMD, WORKDIR and USER
it ends with, the files it copies from the repository, and what its ``pip install`` lines install. Only the
Dockerfile syntax our images use is understood; anything else fails loudly."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# Docker's PATH when a base image sets none; what `$PATH` means in an ENV line of ours.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROJECT = "ml-platform"


@dataclass(frozen=True)
class Image:
    name: str  # "predict", "featureserver", "preprocess", "jobs", "jobs-multimodal", "triton-cpu", "triton"
    dockerfile: Path
    build_args: dict[str, str]
    env: dict[str, str]  # ENV of the final stage, ARG/ENV references substituted
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    user: str
    requirements: list[str]  # what pip installs, as requirement strings (with extras); "." is ml-platform
    target: str | None = None  # the stage built (docker build --target), None: the last one
    no_deps: list[str] = field(default_factory=list)  # the requirements installed with `pip install --no-deps`
    files: dict[str, Path] = field(default_factory=dict)  # container path -> repository file, COPY'd as is
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        """What the container runs when the pod gives neither command nor args."""
        return [*self.entrypoint, *self.cmd]


def image_for(reference: str) -> Image:
    """Our image behind a rendered image reference, e.g. "localhost/ml-platform/predict:dev"."""
    name = reference.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    if name not in IMAGES:
        raise KeyError(f"{reference!r} is not one of our images ({', '.join(IMAGES)})")
    return IMAGES[name]


# ---- the Makefile's image list -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    name: str
    dockerfile: Path
    target: str | None
    build_args: dict[str, str]
    tag: str


def parse_build_line(line: str) -> Build:
    """One line of `make print-images`: "<name>: docker build -f F [--target T] [--build-arg K=V]... -t REF ."."""
    name, _, command = line.partition(": ")
    argv = shlex.split(command)
    if argv[:2] != ["docker", "build"] or argv[-1] != ".":
        raise ValueError(f"not a docker build from the repository root: {line!r}")
    dockerfile, target, tag, args = None, None, "", {}
    it = iter(argv[2:-1])
    for a in it:
        if a == "-f":
            dockerfile = ROOT / next(it)
        elif a == "--target":
            target = next(it)
        elif a == "--build-arg":
            k, _, v = next(it).partition("=")
            args[k] = v
        elif a == "-t":
            tag = next(it)
        else:
            raise ValueError(f"unexpected docker build argument {a!r} in {line!r}")
    if dockerfile is None:
        raise ValueError(f"no -f Dockerfile in {line!r}")
    return Build(name.strip(), dockerfile, target, args, tag)


@cache
def builds() -> tuple[Build, ...]:
    make = shutil.which("make")
    if make is None:
        raise RuntimeError("make not found: the image list lives in the Makefile")
    out = subprocess.run(
        [make, "-s", "--no-print-directory", "-C", str(ROOT), "print-images"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(parse_build_line(ln) for ln in out.splitlines() if ln.strip())


# ---- Dockerfiles -------------------------------------------------------------------------------------------


@dataclass
class _Stage:
    name: str | None
    env: dict[str, str]
    args: dict[str, str]  # ARGs in scope with their values
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    user: str
    files: dict[str, Path]
    labels: dict[str, str]
    pip: list[tuple[list[str], bool]]  # (requirements, --no-deps) per pip install, of this stage and its parents


_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def substitute(text: str, scope: dict[str, str], keep_unknown: bool = False) -> str:
    """Dockerfile (and sh) variable references: $X, ${X}, ${X:-default}, ${X:+alternative}. Unknown names are
    empty, as in Docker, or left as they are with ``keep_unknown`` (shell variables of a RUN line)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        if name not in scope and keep_unknown:
            return m.group(0)
        value = scope.get(name, "")
        op, word = m.group("op"), m.group("word")
        if op == "-":
            return value or substitute(word, scope, keep_unknown)
        if op == "+":
            return substitute(word, scope, keep_unknown) if value else ""
        return value

    return _VAR.sub(repl, text)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments and parser directives dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    if pending:
        raise ValueError(f"{dockerfile}: ends inside a continued line")
    return out


def _pairs(rest: str, scope: dict[str, str]) -> dict[str, str]:
    """ENV/LABEL arguments: K=V pairs (values may be quoted), or the legacy `K V` form."""
    tokens = shlex.split(rest)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: substitute(" ".join(tokens[1:]), scope)}
    out: dict[str, str] = {}
    for t in tokens:
        k, _, v = t.partition("=")
        out[k] = substitute(v, {**scope, **out})
    return out


def _exec_form(rest: str, scope: dict[str, str]) -> list[str]:
    if rest.startswith("["):
        return [str(a) for a in json.loads(rest)]  # exec form: no substitution, as in Docker
    return ["/bin/sh", "-c", substitute(rest, scope)]


PIP_VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url", "-e"}


def pip_installs(run: str, scope: dict[str, str]) -> list[tuple[list[str], bool]]:
    """The requirements of each `pip install` in a RUN line, variables substituted, and whether --no-deps."""
    tokens = shlex.split(substitute(run, scope, keep_unknown=True))
    found: list[tuple[list[str], bool]] = []
    commands: list[list[str]] = [[]]
    for t in tokens:
        if t in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(t)
    for cmd in commands:
        for i, t in enumerate(cmd[:-1]):
            is_pip = Path(t).name in {"pip", "pip3"} or (t == "pip" and i > 1 and cmd[i - 1] == "-m")
            if is_pip and cmd[i + 1] == "install":
                reqs, no_deps, skip = [], False, False
                for a in cmd[i + 2 :]:
                    if skip:
                        skip = False
                    elif a in PIP_VALUE_OPTIONS:
                        skip = True
                    elif a == "--no-deps":
                        no_deps = True
                    elif not a.startswith("-"):
                        reqs.append(PROJECT + a[1:] if a == "." or a.startswith(".[") else a)
                found.append((reqs, no_deps))
                break
    return found


def evaluate(dockerfile: Path, build_args: dict[str, str], target: str | None) -> _Stage:
    """Run the Dockerfile's instructions on paper up to the end of `target` (default: the last stage)."""
    global_args: dict[str, str] = {}
    stages: dict[str, _Stage] = {}
    stage: _Stage | None = None
    for word, rest in instructions(dockerfile):
        scope = {**stage.args, **stage.env} if stage else global_args
        if word == "ARG":
            name, _, default = rest.partition("=")
            value = build_args.get(name, substitute(default.strip().strip('"'), scope))
            if stage is None:
                global_args[name] = value
            else:  # a global ARG redeclared without a value keeps the global one
                stage.args[name] = build_args.get(name, global_args.get(name, value) if not default else value)
        elif word == "FROM":
            if stage is not None and stage.name == target:
                break
            parts = rest.split()
            base = substitute(parts[0], global_args)
            stage_name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            parent = stages.get(base)
            if parent is not None:  # FROM another stage: everything carries over but the stage's ARGs
                stage = _Stage(
                    stage_name,
                    dict(parent.env),
                    {},
                    list(parent.entrypoint),
                    list(parent.cmd),
                    parent.workdir,
                    parent.user,
                    dict(parent.files),
                    dict(parent.labels),
                    list(parent.pip),
                )
            else:
                stage = _Stage(stage_name, {}, {}, [], [], "/", "root", {}, {}, [])
            if stage_name:
                stages[stage_name] = stage
        elif stage is None:
            raise ValueError(f"{dockerfile}: {word} before FROM")
        elif word == "ENV":
            stage.env.update(_pairs(rest, {"PATH": DEFAULT_PATH, **scope}))
        elif word == "LABEL":
            stage.labels.update(_pairs(rest, scope))
        elif word == "WORKDIR":
            stage.workdir = substitute(rest, scope)
        elif word == "USER":
            stage.user = substitute(rest, scope)
        elif word == "ENTRYPOINT":
            stage.entrypoint, stage.cmd = _exec_form(rest, scope), []  # a new ENTRYPOINT resets CMD
        elif word == "CMD":
            stage.cmd = _exec_form(rest, scope)
        elif word == "RUN":
            stage.pip.extend(pip_installs(rest, scope))
        elif word in {"COPY", "ADD"}:
            tokens = shlex.split(rest)
            if any(t.startswith("--from") for t in tokens):
                # The packages a build stage installed come along with its venv: what they are is that
                # stage's pip lines.
                source = next(t.split("=", 1)[1] for t in tokens if t.startswith("--from"))
                if source in stages:
                    stage.pip.extend(stages[source].pip)
                continue
            paths = [t for t in tokens if not t.startswith("--")]
            *sources, dest = paths
            for src in sources:
                local = ROOT / src
                if local.is_file() and dest.startswith("/"):
                    stage.files[dest if not dest.endswith("/") else dest + local.name] = local
        elif word not in {"EXPOSE", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "VOLUME", "ONBUILD"}:
            raise ValueError(f"{dockerfile}: instruction {word} is not understood here")
    if stage is None:
        raise ValueError(f"{dockerfile}: no FROM")
    if target is not None and stage.name != target:
        raise ValueError(f"{dockerfile}: no stage {target!r}")
    return stage


def load(build: Build) -> Image:
    stage = evaluate(build.dockerfile, build.build_args, build.target)
    # What the final image holds: the pip installs of its own stages, and of the build stages it copied from
    # (those are in stage.pip already; a stage's own RUN lines of a build stage are not in the final image
    # unless copied, which is why only the copied and the final chain count).
    requirements = [r for reqs, _ in stage.pip for r in reqs]
    no_deps = [r for reqs, nd in stage.pip if nd for r in reqs]
    return Image(
        name=build.name,
        dockerfile=build.dockerfile,
        build_args=dict(build.build_args),
        env=dict(stage.env),
        entrypoint=stage.entrypoint,
        cmd=stage.cmd,
        workdir=stage.workdir,
        user=stage.user,
        requirements=list(dict.fromkeys(requirements)),
        target=build.target,
        no_deps=list(dict.fromkeys(no_deps)),
        files=dict(stage.files),
        labels=dict(stage.labels),
    )


IMAGES: dict[str, Image] = {b.name: load(b) for b in builds()}
