"""Fetch a promoted model folder and check it is the one the registry names (its sha256).

The serving chart's init container runs
`python3 -m r1forge.serving.fetch --uri URI --sha256 SHA --dest /models/NAME`, and
`r1forge promote` uses the same code to publish a model and to fetch a champion for
re-evaluation. Stdlib and fsspec only, so the serving image needs nothing heavier. URIs:
`s3://`, `gs://` (fsspec's s3fs/gcsfs; credentials from the environment), `file://` or a plain
path, `pvc://CLAIM/PATH` (the claim mounted at `--pvc-root`), and
`dvc://REPO_URL#PATH@REV` (`dvc get`, for a model folder versioned in a DVC repository).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from r1forge.errors import R1ForgeError
from r1forge.io import atomic_dir, folder_sha256


class FetchError(R1ForgeError):
    """The model could not be fetched, or its content is not what the registry names."""


def local_path(uri: str) -> Path | None:
    """The folder a `file://` URI or plain path names; None for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "":
        return Path(uri)
    return None


def copy_local(uri: str, dest: Path, pvc_root: Path) -> None:
    source = local_path(uri)
    assert source is not None
    if not source.is_dir():
        raise FetchError(f"{uri}: no such model folder")
    shutil.copytree(source, dest, dirs_exist_ok=True)


def copy_pvc(uri: str, dest: Path, pvc_root: Path) -> None:
    """`pvc://CLAIM/PATH`: the chart mounts CLAIM at `pvc_root`; the claim name is not a path."""
    parsed = urlparse(uri)
    copy_local(str(pvc_root / parsed.path.lstrip("/")), dest, pvc_root)


def copy_fsspec(uri: str, dest: Path, pvc_root: Path) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    if not fs.isdir(root):
        raise FetchError(f"{uri}: no such model folder")
    for remote in fs.find(root):
        target = dest / Path(remote).relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))


def copy_dvc(uri: str, dest: Path, pvc_root: Path) -> None:
    """`dvc://REPO_URL#PATH@REV` through `dvc get` (the image carries dvc and the remote's plugin)."""
    body = uri.removeprefix("dvc://")
    repo, _, rest = body.partition("#")
    path, _, rev = rest.partition("@")
    if not repo or not path:
        raise FetchError(f"{uri}: expected dvc://REPO_URL#PATH@REV")
    command = ["dvc", "get", repo, path, "--out", str(dest), "--force"]
    if rev:
        command += ["--rev", rev]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"{uri}: dvc get failed: {done.stderr.strip()}")


FETCHERS: dict[str, Callable[[str, Path, Path], None]] = {
    "": copy_local,
    "file": copy_local,
    "pvc": copy_pvc,
    "s3": copy_fsspec,
    "gs": copy_fsspec,
    "gcs": copy_fsspec,
    "dvc": copy_dvc,
}


def fetch_model(
    uri: str, dest: str | Path, sha256: str, pvc_root: str | Path = "/model-store"
) -> Path:
    """Copy the model at `uri` to `dest` (atomically) and check its folder sha256."""
    scheme = "dvc" if uri.startswith("dvc://") else urlparse(uri).scheme
    if scheme not in FETCHERS:
        raise FetchError(f"{uri}: unsupported scheme {scheme!r}; use one of {sorted(FETCHERS)}")
    dest = Path(dest)
    if dest.is_dir() and folder_sha256(dest) == sha256:
        return dest
    with atomic_dir(dest) as tmp:
        FETCHERS[scheme](uri, tmp, Path(pvc_root))
        found = folder_sha256(tmp)
        if found != sha256:
            raise FetchError(f"{uri}: content sha256 {found} is not the registry's {sha256}")
    return dest


def readable_by_all(folder: Path) -> None:
    """Folders 755, files 644: a server in a container runs as another user than the trainer."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def publish_model(source: str | Path, uri: str) -> None:
    """Copy a local model folder to `uri` (a path, file://, s3:// or gs://); the promote side."""
    target = local_path(uri)
    if target is not None:
        with atomic_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            readable_by_all(tmp)
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    with tempfile.TemporaryDirectory() as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        fs.put(f"{staging}/", root, recursive=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m r1forge.serving.fetch",
        description="Fetch a promoted model folder and verify its sha256 (the serving init container).",
    )
    parser.add_argument(
        "--uri",
        required=True,
        help="s3://, gs://, file://, pvc://CLAIM/PATH or dvc://REPO#PATH@REV",
    )
    parser.add_argument("--sha256", required=True, help="the registry's sha256 of the model folder")
    parser.add_argument("--dest", required=True, help="where the server reads the model")
    parser.add_argument(
        "--pvc-root", default="/model-store", help="where the pvc:// claim is mounted"
    )
    args = parser.parse_args(argv)
    try:
        path = fetch_model(args.uri, args.dest, args.sha256, args.pvc_root)
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model {args.sha256[:12]} ready at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
