"""The verification report: the verdict, per run and per artefact, the transparency log's state, every failure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from affidavit.signing.archive import Failure
from affidavit.signing.predicate import utc_iso

LOG_NOT_CHECKED = "not checked (no --log-key)"
LOG_ABSENT = "absent (the bundle carries no transparency log)"
CONSISTENCY_NOT_CHECKED = "not checked (no --checkpoint)"


@dataclass(frozen=True)
class LogReport:
    """What verify established about the transparency log; ``status`` is never "verified" without a log key."""

    status: str  # "verified", "failed", LOG_NOT_CHECKED or LOG_ABSENT
    origin: str | None = None
    size: int | None = None
    root_hash: str | None = None  # hex
    log_id: str | None = None  # hex
    consistency: str = CONSISTENCY_NOT_CHECKED  # "verified from size N", "failed", or not checked
    old_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "origin": self.origin, "tree_size": self.size, "root_hash": self.root_hash,
                "log_id": self.log_id, "consistency": self.consistency, "checkpoint_size": self.old_size}

    def summary_lines(self) -> list[str]:
        if self.status == LOG_ABSENT:
            return []  # a bundle exported without a log; with --log-key its absence is a failure
        if self.origin is None:
            return [f"transparency log: {self.status}"]
        lines = [f"transparency log: {self.status} ({self.origin}, {self.size} entries, "
                 f"root {(self.root_hash or '')[:16]}…)"]
        lines.append(f"  consistency with your checkpoint: {self.consistency}")
        return lines


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    source: str
    source_type: str
    started: datetime
    finished: datetime
    keyid: str
    artefacts: int
    verified: bool  # signed by a trusted key, and its members intact
    log_index: int | None = None  # its entry in the transparency log, when the bundle carries one

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "source": self.source, "source_type": self.source_type,
                "started": utc_iso(self.started), "finished": utc_iso(self.finished), "keyid": self.keyid,
                "artefacts": self.artefacts, "verified": self.verified, "log_index": self.log_index}


@dataclass(frozen=True)
class ArtefactResult:
    name: str
    digest: str  # "sha256:<hex>"
    run_id: str
    controls: tuple[str, ...]
    ok: bool  # its run verified and the file is present and intact

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "run_id": self.run_id, "controls": list(self.controls),
                "ok": self.ok}


@dataclass(frozen=True)
class VerifyReport:
    valid: bool
    bundle: Path
    failures: tuple[Failure, ...]
    signer_keyids: tuple[str, ...]  # trusted keys whose signature on the bundle statement verified
    runs: tuple[RunSummary, ...]
    artefacts: tuple[ArtefactResult, ...]
    created: str | None = None  # from the bundle statement (as the exporter claims it)
    agent: str | None = None
    log: LogReport = LogReport(LOG_ABSENT)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "bundle": str(self.bundle),
            "created": self.created,
            "agent": self.agent,
            "signer_keyids": list(self.signer_keyids),
            "runs": [r.to_json() for r in self.runs],
            "artefacts": [a.to_json() for a in self.artefacts],
            "log": self.log.to_json(),
            "failures": [f.to_json() for f in self.failures],
        }

    def summary_lines(self) -> list[str]:
        """The human report: the verdict, one line per artefact, then every failure."""
        signers = ", ".join(self.signer_keyids) if self.signer_keyids else "no trusted key"
        lines = [
            f"{'VALID' if self.valid else 'INVALID'}: {self.bundle} ({len(self.runs)} run(s), "
            f"{len(self.artefacts)} artefact(s); bundle signed by {signers})"
        ]
        lines.extend(self.log.summary_lines())
        for a in self.artefacts:
            controls = f"  controls: {', '.join(a.controls)}" if a.controls else ""
            verdict = "ok     " if a.ok else "INVALID"
            lines.append(f"  {verdict}  {a.name}  {a.digest[:19]}…  run {a.run_id}{controls}")
        if self.failures:
            lines.append(f"{len(self.failures)} problem(s):")
            lines.extend(f"  {f.member}: {f.reason}" for f in self.failures)
        return lines
