"""Model files that are not behind the tracking server's artefact proxy.

Local ``file:`` URIs and paths are read directly; any other scheme (``s3://``,
``gs://``, ``wasbs://``, ``dbfs:/``...) goes through MLflow's artefact
repository for that scheme, one file at a time into a temporary directory
that is removed at once, so memory and disk stay bounded by one file. Those
repositories take their cloud credentials from the cloud SDK's usual sources.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from affidavit.errors import FatalError

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model: its path below the model's root ('/'-separated) and listed size."""

    path: str
    size: int | None


class ByteSink(Protocol):
    """Receives a file's bytes; ``reset`` starts over (a download is retried from the beginning)."""

    def reset(self) -> None: ...
    def write(self, chunk: bytes) -> None: ...


def local_path(uri: str, base_dir: Path) -> Path | None:
    """The directory a ``file:`` URI or plain path names (relative to ``base_dir``), else None."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        p = Path(uri).expanduser()
        return p if p.is_absolute() else base_dir / p
    return None


def _inside(path: Path, root: Path) -> Path:
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise FatalError(f"model file {path} resolves outside the model directory {root}")
    return resolved


def list_files(uri: str, base_dir: Path, source: str) -> Iterator[RemoteFile]:
    root = local_path(uri, base_dir)
    if root is not None:
        yield from _list_local(root)
        return
    repo = _repository(uri, source)
    pending = [""]
    while pending:
        rel = pending.pop()
        subdirs = []
        for info in sorted(repo.list_artifacts(rel or None), key=lambda i: str(i.path)):
            path = str(info.path).strip("/")
            if info.is_dir:
                subdirs.append(path)
            else:
                yield RemoteFile(path, int(info.file_size) if info.file_size is not None else None)
        pending.extend(reversed(subdirs))


def _list_local(root: Path) -> Iterator[RemoteFile]:
    if root.is_file():
        yield RemoteFile(root.name, root.stat().st_size)
        return
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            try:
                size = path.stat().st_size
            except OSError:
                size = None
            yield RemoteFile(rel, size)


def download(uri: str, path: str, sink: ByteSink, base_dir: Path, source: str) -> None:
    root = local_path(uri, base_dir)
    if root is not None:
        target = root if root.is_file() and path == root.name else _inside(root / path, root)
        sink.reset()
        try:
            with target.open("rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    sink.write(chunk)
        except OSError as e:
            raise FatalError(f"source {source!r}: cannot read model file {target}: {e.strerror}",
                             hint="check the file's permissions") from None
        return
    repo = _repository(uri, source)
    tmp = Path(tempfile.mkdtemp(prefix="affidavit-mlflow-"))
    try:
        try:
            local = Path(repo.download_artifacts(path, dst_path=str(tmp)))
        except Exception as e:  # the cloud SDKs raise their own exception types
            raise FatalError(f"source {source!r}: cannot download {path} from {uri}: {type(e).__name__}: {e}",
                             hint="check the cloud credentials of the machine running Affidavit") from None
        sink.reset()
        with local.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                sink.write(chunk)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _repository(uri: str, source: str) -> Any:
    if urlsplit(uri).scheme == "mlflow-artifacts":
        raise FatalError(f"source {source!r}: model files at {uri} are served by an MLflow server's artefact proxy",
                         hint="set tracking_uri to that server's http(s) address")
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    except ImportError:
        raise FatalError("reading model files from " + urlsplit(uri).scheme + ":// needs the mlflow-skinny package",
                         hint="pip install mlflow-skinny") from None
    try:
        return get_artifact_repository(uri)
    except Exception as e:  # an unknown scheme, or its SDK is not installed
        raise FatalError(f"source {source!r}: cannot read model files at {uri}: {type(e).__name__}: {e}",
                         hint="install the cloud SDK for that storage (boto3, google-cloud-storage, ...)") from None
