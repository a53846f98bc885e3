"""The store contract and the records its index keeps.

Blobs are content-addressed by SHA-256 and written atomically; a put of bytes
already present is a no-op, so every operation is safe to retry. Attestations
(one DSSE envelope and one Sigstore bundle per run) are kept beside the blobs,
and the index (rebuildable from the files) answers queries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol


@dataclass(frozen=True)
class BlobInfo:
    digest: str  # lowercase hex SHA-256
    size: int


@dataclass(frozen=True)
class ArtefactRecord:
    """One artefact of one run, as the signed predicate describes it."""

    run_id: str
    digest: str  # lowercase hex SHA-256
    name: str
    media_type: str
    size: int
    collector: str
    collected_at: datetime
    controls: tuple[str, ...] = ()
    findings: tuple[dict[str, Any], ...] = ()
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    ttl: str | None = None  # ISO 8601 duration, e.g. "P7D"
    redactions: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class RunRecord:
    """One signed run (one source, one invocation)."""

    run_id: str
    source: str
    source_type: str
    started: datetime
    finished: datetime
    keyid: str
    statement_sha256: str  # SHA-256 of the statement payload bytes
    artefact_count: int
    artefacts: tuple[ArtefactRecord, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class FsckProblem:
    where: str  # a path relative to the store root, or "index"
    problem: str
    severity: Literal["error", "warning"] = "error"  # warning: harmless leftovers (an interrupted run's blobs)


class Store(Protocol):
    """What the pipeline, export and verify need from any store."""

    root: Path

    def put_stream(self, stream: BinaryIO) -> BlobInfo: ...
    def has(self, digest: str) -> bool: ...
    def open_blob(self, digest: str) -> BinaryIO: ...
    def put_attestation(self, run_id: str, dsse: dict[str, Any], sigstore_bundle: dict[str, Any]) -> None: ...
    def attestation_paths(self, run_id: str) -> tuple[Path, Path]: ...
    def index_run(self, run: RunRecord) -> None: ...
    def runs(
        self, *, since: datetime | None = None, source: str | None = None, with_artefacts: bool = False
    ) -> Iterator[RunRecord]: ...
    def artefacts(
        self, *, run_id: str | None = None, control: str | None = None, name: str | None = None
    ) -> Iterator[ArtefactRecord]: ...
    def latest(self, source: str) -> dict[str, ArtefactRecord]: ...
    def lock(self, timeout: float) -> AbstractContextManager[None]: ...
    def reindex(self, *, lock_timeout: float = 0.0) -> int: ...
    def fsck(self, trusted_keys: Sequence[Any] = ()) -> list[FsckProblem]: ...
