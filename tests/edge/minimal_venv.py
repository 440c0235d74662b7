"""The edge runner's minimal virtualenv: onnxruntime, NumPy and Pillow (and what they depend on), nothing else.

Built under var/ at the versions constraints.txt pins, once per set of pins (``make edge-runner-venv``,
or the first test that needs it); ``python -m tests.edge.minimal_venv`` builds it and prints its size.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from devharness import ROOT

PACKAGES = ("onnxruntime", "numpy", "pillow")
VENV = ROOT / "var" / "edge-runner-venv"


def pins() -> list[str]:
    """``name==version`` of each package, from constraints.txt (the versions the platform is tested with)."""
    text = (ROOT / "constraints.txt").read_text()
    out = []
    for name in PACKAGES:
        m = re.search(rf"^{name}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
        if m is None:
            raise RuntimeError(f"constraints.txt pins no {name}")
        out.append(f"{name}=={m.group(1)}")
    return out


def ensure(venv: Path = VENV) -> Path:
    """The virtualenv's python, built if missing or built for other pins."""
    wanted = pins()
    stamp = venv / "edge-pins.json"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    # --without-pip plus pip from the platform's venv (`pip --python`): no pip or setuptools in the size
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--disable-pip-version-check", *wanted],
        check=True,
    )
    stamp.write_text(json.dumps(wanted))
    return python


def installed_packages(python: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(p["name"].lower() for p in json.loads(out))


def site_packages_bytes(venv: Path = VENV) -> int:
    """Bytes of everything installed into the virtualenv (its site-packages)."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())


if __name__ == "__main__":
    py = ensure()
    print(
        json.dumps(
            {
                "venv": str(VENV),
                "packages": installed_packages(py),
                "site_packages_mb": round(site_packages_bytes() / 1e6, 1),
            }
        )
    )
