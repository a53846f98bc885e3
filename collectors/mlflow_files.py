"""Model artefact integrity: every file of a model version, downloaded and hashed as a stream.

Files are hashed chunk by chunk as they arrive (never a whole file in
memory); only the ``MLmodel`` file and a model card / README at the model's
top level are kept, up to :data:`KEEP_LIMIT` bytes, to be stored as artefacts
of their own. Downloads run on the collector's small thread pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import yaml

from affidavit.connectors.mlflow import MlflowApi
from affidavit.connectors.mlflow_artifacts import RemoteFile

KEEP_LIMIT = 4 << 20  # bytes of an MLmodel file or model card kept to store
MLMODEL = "MLmodel"
CARD_NAMES = ("model_card.md", "model-card.md", "modelcard.md", "readme.md")


@dataclass(frozen=True)
class HashedFile:
    path: str
    size: int
    sha256: str
    content: bytes | None  # kept bytes of an MLmodel file or model card


class HashingSink:
    """Hashes what it receives; keeps the bytes too when asked (up to KEEP_LIMIT)."""

    def __init__(self, keep: bool) -> None:
        self._keep = keep
        self.reset()

    def reset(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.kept: bytearray | None = bytearray() if self._keep else None

    def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)
        if self.kept is not None:
            if len(self.kept) + len(chunk) > KEEP_LIMIT:
                self.kept = None
            else:
                self.kept += chunk


def kept_kind(path: str) -> str | None:
    """"mlmodel" or "card" for a file whose bytes are stored as an artefact of their own."""
    if path == MLMODEL:
        return "mlmodel"
    if "/" not in path and path.lower() in CARD_NAMES:
        return "card"
    return None


def _hash_one(api: MlflowApi, uri: str, f: RemoteFile) -> HashedFile:
    sink = HashingSink(keep=kept_kind(f.path) is not None)
    api.download(uri, f.path, sink)
    return HashedFile(f.path, sink.size, sink.hash.hexdigest(), bytes(sink.kept) if sink.kept is not None else None)


class PendingModel:
    """The files of one model being hashed on the pool."""

    def __init__(self, api: MlflowApi, uri: str, pool: ThreadPoolExecutor) -> None:
        self.uri = uri
        self.futures: list[Future[HashedFile]] = [pool.submit(_hash_one, api, uri, f) for f in api.list_files(uri)]

    def result(self) -> list[HashedFile]:
        try:
            return [f.result() for f in self.futures]
        finally:
            self.cancel()

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def cancel(self) -> None:
        for f in self.futures:
            f.cancel()


def mlmodel_summary(content: bytes | None) -> dict[str, Any] | None:
    """What the MLmodel file says about the model (flavors, MLflow version, signature...)."""
    if content is None:
        return None
    try:
        data = yaml.safe_load(content.decode("utf-8", "replace"))
    except yaml.YAMLError:
        return {"readable": False}
    if not isinstance(data, dict):
        return {"readable": False}
    flavors = data.get("flavors")
    return {
        "readable": True,
        "flavors": sorted(str(k) for k in flavors) if isinstance(flavors, dict) else [],
        "mlflow_version": _str(data.get("mlflow_version")),
        "model_uuid": _str(data.get("model_uuid")),
        "model_id": _str(data.get("model_id")),
        "run_id": _str(data.get("run_id")),
        "created": _str(data.get("utc_time_created")),
        "has_signature": isinstance(data.get("signature"), dict),
    }


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def files_doc(model: str, version: str, uri: str, files: Sequence[HashedFile], server: str,
              kept_names: dict[str, str]) -> dict[str, Any]:
    """The manifest: every file with its size and SHA-256, and where the MLmodel and card are stored."""
    files = sorted(files, key=lambda f: f.path)
    mlmodel = next((f for f in files if f.path == MLMODEL), None)
    card = next((f for f in files if kept_kind(f.path) == "card"), None)
    return {
        "kind": "model-files",
        "server": server,
        "model": model,
        "version": version,
        "artifact_uri": uri,
        "file_count": len(files),
        "total_size": sum(f.size for f in files),
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
        "mlmodel": None if mlmodel is None else {
            "path": mlmodel.path, "sha256": mlmodel.sha256, "artefact": kept_names.get(mlmodel.path),
            **(mlmodel_summary(mlmodel.content) or {"readable": False}),
        },
        "model_card": None if card is None else {
            "path": card.path, "sha256": card.sha256, "artefact": kept_names.get(card.path),
        },
    }
