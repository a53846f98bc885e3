"""The verification report: the verdict, per run and per artefact, the transparency log's state, every failure.

:meth:`VerifyReport.report_lines` is the summary an auditor pastes into a working
paper (bundle, signer keys, time range, artefact count, controls covered,
timestamps, log consistency, every failure, then one line per artefact);
:meth:`VerifyReport.to_json` carries the same content.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from affidavit.signing.archive import Failure
from affidavit.signing.predicate import utc_iso

LOG_NOT_CHECKED = "not checked (no --log-key)"
LOG_ABSENT = "absent (the bundle carries no transparency log)"
CONSISTENCY_NOT_CHECKED = "not checked (no --checkpoint)"
TIMESTAMPS_NOT_CHECKED = "not checked (no --tsa-roots)"
COUNTED = frozenset({"equal", "superset", "subset", "intersect"})  # "related" is shown in coverage, never counted
MAX_CATALOG_BYTES = 8 << 20  # a catalog larger than this is not read for the report
MAX_CATALOG_ITEMS = 200_000  # mappings looked at in all catalogs together


def _when(t: datetime | None) -> str | None:
    return None if t is None else utc_iso(t)


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
class KeyReport:
    """A key that signed something in the bundle, as the auditor's trust anchor describes it."""

    keyid: str
    source: str  # "trust file" or "--key"
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    comment: str | None = None
    signed: tuple[str, ...] = ()  # what its signatures in force signed ("the bundle statement", "run X")
    refused: tuple[str, ...] = ()  # what it signed outside its window or after its revocation

    def validity(self) -> str:
        start, end = _when(self.not_before), _when(self.not_after)
        text = f"valid {start or 'from the start'} to {end or 'now'}" if start or end else "no validity window"
        return text + (f"; revoked {_when(self.revoked_at)}" if self.revoked_at else "")

    def to_json(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "source": self.source, "not_before": _when(self.not_before),
                "not_after": _when(self.not_after), "revoked_at": _when(self.revoked_at), "comment": self.comment,
                "signed": list(self.signed), "refused": list(self.refused)}


@dataclass(frozen=True)
class TimestampReport:
    """One RFC 3161 token: which signature it timestamps and what it attests."""

    signature: str  # "the bundle statement" or "run <id>"
    member: str  # where the token is
    status: str  # "verified", "failed" or TIMESTAMPS_NOT_CHECKED
    time: datetime | None = None
    tsa: str | None = None  # the TSA certificate's subject
    reason: str | None = None  # why it failed

    def to_json(self) -> dict[str, Any]:
        return {"signature": self.signature, "member": self.member, "status": self.status,
                "time": _when(self.time), "tsa": self.tsa, "reason": self.reason}


@dataclass(frozen=True)
class ControlsReport:
    """The controls the verified evidence names, grouped by framework.

    ``by_framework`` holds each id the run statements name, and each requirement
    a named common control maps to (equal, superset, subset or intersect) in the
    bundle's own catalogs; "related" mappings and crosswalks between frameworks
    are not followed. It says what evidence is offered for, not whether it passes.
    """

    named: tuple[str, ...] = ()
    by_framework: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    catalogs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"named": list(self.named), "by_framework": {k: list(v) for k, v in self.by_framework.items()},
                "catalogs": list(self.catalogs)}


def group_controls(named: Iterable[str], catalogs: Sequence[tuple[str, bytes]]) -> ControlsReport:
    """Group control ids by framework, following the counted mappings of common controls in ``catalogs``.

    ``catalogs`` are (member name, YAML bytes), built-in ones first; a later file
    restating a mapping replaces it, as the control library does. An unreadable
    catalog is skipped (its signature already vouched for its bytes).
    """
    ids = sorted(set(named))
    relationship: dict[tuple[str, str], str] = {}
    used: list[str] = []
    budget = MAX_CATALOG_ITEMS
    for name, data in catalogs:
        doc = _yaml(data)
        if not isinstance(doc, dict):
            continue
        used.append(name)
        for source, target, rel in _mappings(doc):
            budget -= 1
            if budget < 0:
                break
            relationship[(source, target)] = rel
    wanted = set(ids)
    grouped: dict[str, set[str]] = {}
    for c in ids:
        grouped.setdefault(c.split(":", 1)[0], set()).add(c)
    for (source, target), rel in relationship.items():
        if source in wanted and source.startswith("common:") and rel in COUNTED and ":" in target:
            grouped.setdefault(target.split(":", 1)[0], set()).add(target)
    return ControlsReport(tuple(ids), {k: tuple(sorted(v)) for k, v in sorted(grouped.items())}, tuple(used))


def _yaml(data: bytes) -> Any:
    import yaml

    if len(data) > MAX_CATALOG_BYTES:
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(data, Loader=loader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None


def _mappings(doc: dict[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(source, target, relationship) of a catalog's ``controls[].mappings[]`` and ``mappings[]``."""
    controls, mappings = doc.get("controls"), doc.get("mappings")
    for c in controls if isinstance(controls, list) else ():
        items = c.get("mappings") if isinstance(c, dict) else None
        for m in items if isinstance(items, list) else ():
            if isinstance(m, dict) and all(isinstance(v, str) for v in (c.get("id"), m.get("target"),
                                                                        m.get("relationship"))):
                yield c["id"], m["target"], m["relationship"]
    for m in mappings if isinstance(mappings, list) else ():
        if isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("from", "to", "relationship")):
            yield m["from"], m["to"], m["relationship"]


@dataclass(frozen=True)
class VerifyReport:
    valid: bool
    bundle: Path
    failures: tuple[Failure, ...]
    signer_keyids: tuple[str, ...]  # trusted keys whose signature on the bundle statement verified (and was in force)
    runs: tuple[RunSummary, ...]
    artefacts: tuple[ArtefactResult, ...]
    created: str | None = None  # from the bundle statement (as the exporter claims it)
    agent: str | None = None
    log: LogReport = LogReport(LOG_ABSENT)
    keys: tuple[KeyReport, ...] = ()
    timestamps: tuple[TimestampReport, ...] = ()
    controls: ControlsReport = ControlsReport()

    @property
    def evidence_period(self) -> tuple[datetime, datetime] | None:
        """From the earliest start to the latest finish of the runs that verified."""
        good = [r for r in self.runs if r.verified]
        return (min(r.started for r in good), max(r.finished for r in good)) if good else None

    @property
    def timestamp_status(self) -> str:
        if not self.timestamps:
            return "absent (no signature in the bundle carries an RFC 3161 timestamp)"
        if any(t.status == "failed" for t in self.timestamps):
            return "failed"
        if all(t.status == "verified" for t in self.timestamps):
            return "verified"
        return TIMESTAMPS_NOT_CHECKED

    def to_json(self) -> dict[str, Any]:
        period = self.evidence_period
        return {
            "valid": self.valid,
            "bundle": str(self.bundle),
            "created": self.created,
            "agent": self.agent,
            "signer_keyids": list(self.signer_keyids),
            "keys": [k.to_json() for k in self.keys],
            "evidence_period": {"from": utc_iso(period[0]), "to": utc_iso(period[1])} if period else None,
            "artefact_count": len(self.artefacts),
            "controls": self.controls.to_json(),
            "timestamps": {"status": self.timestamp_status, "tokens": [t.to_json() for t in self.timestamps]},
            "runs": [r.to_json() for r in self.runs],
            "artefacts": [a.to_json() for a in self.artefacts],
            "log": self.log.to_json(),
            "failures": [f.to_json() for f in self.failures],
        }

    def summary_lines(self) -> list[str]:
        """The short form: the verdict, the log, one line per artefact, then every failure."""
        lines = [self._verdict()]
        lines.extend(self.log.summary_lines())
        lines.extend(self._artefact_lines())
        lines.extend(self._failure_lines())
        return lines

    def report_lines(self) -> list[str]:
        """The working-paper report: every finding of the verification, then one line per artefact."""
        lines = [self._verdict()]
        if self.created or self.agent:
            lines.append(f"  exported {self.created or '(unknown time)'} by {self.agent or '(unknown agent)'} "
                         "(as the bundle statement says)")
        lines.append("signer keys:" if self.keys else "signer keys: none of your trusted keys signed this bundle")
        for k in self.keys:
            did = ", ".join(_counted(k.signed)) or "nothing in force"
            refused = f"; REFUSED for {', '.join(_counted(k.refused))}" if k.refused else ""
            comment = f" ({k.comment})" if k.comment else ""
            lines.append(f"  {k.keyid}  from {k.source}; {k.validity()}{comment}: signed {did}{refused}")
        period = self.evidence_period
        span = f", collected {utc_iso(period[0])} to {utc_iso(period[1])}" if period else ""
        good = sum(r.verified for r in self.runs)
        ok = sum(a.ok for a in self.artefacts)
        lines.append(f"evidence: {len(self.runs)} run(s) ({good} verified), {len(self.artefacts)} artefact(s) "
                     f"({ok} verified){span}")
        lines.extend(self._control_lines())
        lines.extend(self._timestamp_lines())
        lines.extend(self.log.summary_lines() or ["transparency log: absent (the bundle carries none)"])
        lines.extend(self._failure_lines())
        if self.artefacts:
            lines.append("artefacts:")
            lines.extend(self._artefact_lines())
        return lines

    def _verdict(self) -> str:
        refused = any("the bundle statement" in k.refused for k in self.keys)
        signers = ", ".join(self.signer_keyids) if self.signer_keyids else \
            ("no key in force when it signed" if refused else "no trusted key")
        return (f"{'VALID' if self.valid else 'INVALID'}: {self.bundle} ({len(self.runs)} run(s), "
                f"{len(self.artefacts)} artefact(s); bundle signed by {signers})")

    def _control_lines(self) -> list[str]:
        c = self.controls
        if not c.named:
            return ["controls covered: none named by verified evidence"]
        via = f" and the mappings in {len(c.catalogs)} catalog(s) of the bundle" if c.catalogs else ""
        lines = [f"controls covered: {len(c.named)} named by verified evidence{via} (evidence offered, "
                 "not a pass/fail verdict):"]
        for framework, ids in c.by_framework.items():
            locals_ = [i.split(":", 1)[1] for i in ids]
            lines.append(f"  {framework} ({len(ids)}): {', '.join(locals_)}")
        return lines

    def _timestamp_lines(self) -> list[str]:
        lines = [f"timestamps: {self.timestamp_status}"]
        for t in self.timestamps:
            if t.status == "verified":
                lines.append(f"  {t.signature}: its signature existed at {_when(t.time)} (TSA {t.tsa})")
            elif t.status == "failed":
                lines.append(f"  {t.signature}: FAILED: {t.reason}")
            else:
                lines.append(f"  {t.signature}: token present, {t.status}")
        return lines

    def _artefact_lines(self) -> list[str]:
        lines = []
        for a in self.artefacts:
            controls = f"  controls: {', '.join(a.controls)}" if a.controls else ""
            verdict = "ok     " if a.ok else "INVALID"
            lines.append(f"  {verdict}  {a.name}  {a.digest[:19]}…  run {a.run_id}{controls}")
        return lines

    def _failure_lines(self) -> list[str]:
        if not self.failures:
            return []
        return [f"{len(self.failures)} problem(s):", *(f"  {f.member}: {f.reason}" for f in self.failures)]


def _counted(what: Sequence[str]) -> list[str]:
    """["the bundle statement", "run a", "run b"] -> ["the bundle statement", "2 run(s)"]."""
    runs = [w for w in what if w.startswith("run ")]
    return [w for w in what if not w.startswith("run ")] + ([f"{len(runs)} run(s)"] if runs else [])
