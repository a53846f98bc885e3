"""Coverage: which framework requirements the stored evidence supports, and how well.

Evidence maps to common controls; coverage follows the library's mappings to
framework requirements. The rules, in the vocabulary of architecture.md:

**A common control's status** comes from its evidence (after collector overrides):

- ``missing``: no artefact was ever mapped to it.
- ``stale``: artefacts exist, but none is fresh. An artefact is fresh while
  ``now <= collected_at + ttl`` and ``now <= effective_to``; an artefact without
  a TTL takes its control's ``ttl`` from the library (none there: no expiry).
- Otherwise the *latest findings per (control, subject)* among fresh artefacts
  decide: the newest fresh artefact that has findings about a subject supplies
  all of its findings for that subject (a finding without a subject is about
  the artefact, keyed by its name). Any ``fail`` makes the control ``failing``.
  Else any ``unknown`` makes it ``partial``: ``unknown`` (data absent, permission
  denied) never counts as ``pass``. Else any ``pass`` makes it ``passing``.
- Fresh evidence with *no finding for the control* counts as evidence present.
  What an auditor accepts as present evidence depends on the kind of control,
  so the library's ``automation`` level decides: for ``manual`` and ``partial``
  controls (a signed-off policy, minutes of a management review, a training
  register: a document is the substance and a person added or approved it)
  presence is ``passing``; for ``full`` controls (MFA, bucket settings, model
  approvals: collectors are expected to test them and attach findings) an
  artefact nobody evaluated is ``partial`` ("present, not evaluated") until a
  finding says ``pass``.

**A requirement's status** follows its mappings from common controls (never
through requirement-to-requirement crosswalks: no transitive inference):

- ``not-applicable`` when the Statement of Applicability excludes it;
- ``failing`` when any counted (equal, superset, subset, intersect) control is
  failing: a failing finding on a control that evidences part of a requirement
  is an exception an auditor must see, so it wins over passing siblings;
- ``passing`` when an equal/superset control passes, or when it has
  subset/intersect controls and all of them pass;
- ``partial`` when some counted control is passing or partial but the above
  does not hold;
- ``stale`` when counted controls have evidence but none of it is fresh;
- ``missing`` otherwise, including requirements with only ``related`` mappings
  (shown in the drill-down, never counted).

A requirement with no mappings of its own but with children (NIST AI RMF
categories) rolls up its children: ``passing`` only if every applicable child
passes, ``failing`` if any fails, ``missing`` if all are missing, ``stale`` if
all are stale or missing, else ``partial``.

**Evidence count** of a requirement is the sum of its counted controls' artefact
counts (an artefact mapped to two of them counts twice); **newest** is the newest
artefact among them.

**Audit period** (optional ``FROM..TO``): a requirement is covered at an instant
when an equal/superset control had passing evidence then, or all its
subset/intersect controls did (see :mod:`affidavit.agent.coverage_period` for
the intervals evidence speaks for); coverage lists the uncovered intervals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from affidavit.agent.coverage_period import Interval, Period, gaps, intersect, passing_intervals, union
from affidavit.agent.coverage_query import ControlEvidence, EvidenceRef, FindingRef, read_evidence
from affidavit.agent.soa import Soa, SoaEntry
from affidavit.config.catalog import STRONG, WEAK, CommonControl, ControlLibrary, Framework, Mapping, Requirement
from affidavit.signing.predicate import utc_iso

Status = Literal["passing", "partial", "failing", "stale", "missing", "not-applicable"]
STATUSES: tuple[Status, ...] = ("passing", "partial", "failing", "stale", "missing", "not-applicable")
ABBREV = {"equal": "eq", "superset": "sup", "subset": "sub", "intersect": "int", "related": "rel"}


@dataclass(frozen=True)
class ControlCoverage:
    control: str
    title: str | None
    status: Status
    reason: str
    evidence_count: int = 0
    fresh_count: int = 0
    unevaluated: int = 0
    newest: EvidenceRef | None = None
    passing_intervals: tuple[Interval, ...] | None = None
    evidence: ControlEvidence | None = field(default=None, repr=False, compare=False)

    @cached_property
    def findings(self) -> tuple[FindingRef, ...]:
        """The latest findings per subject from fresh evidence (built when asked for)."""
        return tuple(self.evidence.findings()) if self.evidence else ()

    def counts(self) -> dict[str, int]:
        return self.evidence.tally()[0] if self.evidence else {"pass": 0, "fail": 0, "unknown": 0}


@dataclass(frozen=True)
class ControlLink:
    mapping: Mapping
    coverage: ControlCoverage


@dataclass(frozen=True)
class RequirementCoverage:
    requirement: Requirement
    status: Status
    reason: str
    evidence_count: int
    newest: EvidenceRef | None
    controls: tuple[ControlLink, ...]  # counted first, then related
    related_requirements: tuple[str, ...] = ()  # crosswalk neighbours, shown only
    soa: SoaEntry | None = None
    uncovered: tuple[Interval, ...] | None = None


@dataclass(frozen=True)
class FrameworkCoverage:
    framework: Framework
    requirements: tuple[RequirementCoverage, ...]
    soa: Soa | None = None

    def summary(self) -> dict[str, int]:
        c = Counter(r.status for r in self.requirements)
        return {s: c.get(s, 0) for s in STATUSES}


@dataclass(frozen=True)
class Coverage:
    generated_at: datetime
    frameworks: tuple[FrameworkCoverage, ...]
    controls: AbcMapping[str, ControlCoverage]
    period: Period | None = None


def control_coverage(control: str, cc: CommonControl | None, ev: ControlEvidence | None,
                     intervals: Sequence[Interval] | None = None) -> ControlCoverage:
    """The status of one common control from its evidence (rules in the module docstring)."""
    title = cc.title if cc else None
    iv = tuple(intervals) if intervals is not None else None
    if ev is None or ev.count == 0:
        return ControlCoverage(control, title, "missing", "no evidence", passing_intervals=iv)
    base: dict[str, Any] = dict(evidence_count=ev.count, fresh_count=ev.fresh, unevaluated=ev.unevaluated,
                                newest=ev.newest, passing_intervals=iv, evidence=ev)
    if ev.fresh == 0:
        when = f" (newest collected {utc_iso(ev.newest.collected_at)})" if ev.newest else ""
        return ControlCoverage(control, title, "stale", f"{ev.count} artefact(s), none fresh{when}", **base)
    counts, example = ev.tally()
    if counts["fail"]:
        subject, why = example["fail"]
        return ControlCoverage(control, title, "failing",
                               f"{counts['fail']} failing finding(s), e.g. {subject}: {why}", **base)
    if counts["unknown"]:
        subject, why = example["unknown"]
        return ControlCoverage(control, title, "partial", f"{counts['unknown']} finding(s) unknown (never counted "
                               f"as pass), e.g. {subject}: {why}", **base)
    if counts["pass"]:
        return ControlCoverage(control, title, "passing", f"{counts['pass']} passing finding(s)", **base)
    if cc is not None and cc.automation == "full":
        return ControlCoverage(control, title, "partial", f"{ev.fresh} fresh artefact(s) present but not evaluated: "
                               "no finding for a control collectors are expected to test", **base)
    return ControlCoverage(control, title, "passing", f"{ev.fresh} fresh artefact(s) present "
                           "(presence is the test for a document-based control)", **base)


def requirement_status(links: Sequence[ControlLink], soa: SoaEntry | None) -> tuple[Status, str]:
    """A requirement's status from its control links (rules in the module docstring)."""
    if soa is not None and not soa.applicable:
        return "not-applicable", f"excluded by the Statement of Applicability: {soa.justification}"
    counted = [lk for lk in links if lk.mapping.counted]
    if not counted:
        related = len(links)
        return "missing", "no common control evidences it" + (
            f" ({related} related control(s) shown, never counted)" if related else "")
    failing = [lk for lk in counted if lk.coverage.status == "failing"]
    if failing:
        lk = failing[0]
        return "failing", f"{_name(lk)} is failing: {lk.coverage.reason}"
    strong = [lk for lk in counted if lk.mapping.relationship in STRONG]
    weak = [lk for lk in counted if lk.mapping.relationship in WEAK]
    for lk in strong:
        if lk.coverage.status == "passing":
            return "passing", f"{_name(lk)} passes"
    if weak and all(lk.coverage.status == "passing" for lk in weak):
        return "passing", f"all {len(weak)} subset/intersect control(s) pass"
    if any(lk.coverage.status in ("passing", "partial") for lk in counted):
        ok = [_name(lk) for lk in counted if lk.coverage.status == "passing"]
        not_ok = [f"{_name(lk)} {lk.coverage.status}" for lk in counted if lk.coverage.status != "passing"]
        return "partial", (f"passing: {', '.join(ok) or 'none'}; not passing: {', '.join(not_ok)}")
    if any(lk.coverage.status == "stale" for lk in counted):
        return "stale", "evidence exists but none is fresh: " + ", ".join(
            _name(lk) for lk in counted if lk.coverage.status == "stale")
    return "missing", "no evidence for " + ", ".join(_name(lk) for lk in counted)


def rollup(children: Sequence[RequirementCoverage]) -> tuple[Status, str]:
    statuses = [c.status for c in children]
    applicable = [s for s in statuses if s != "not-applicable"]
    c = Counter(statuses)
    detail = f"rolled up from {len(children)} sub-requirements: " + ", ".join(
        f"{c[s]} {s}" for s in STATUSES if c.get(s))
    if not applicable:
        return "not-applicable", detail
    if "failing" in applicable:
        return "failing", detail
    if all(s == "passing" for s in applicable):
        return "passing", detail
    if all(s == "missing" for s in applicable):
        return "missing", detail
    if all(s in ("stale", "missing") for s in applicable):
        return "stale", detail
    return "partial", detail


def _name(lk: ControlLink) -> str:
    return f"{lk.mapping.source} ({lk.mapping.relationship})"


def compute_coverage(library: ControlLibrary, index_path: Path, frameworks: Sequence[str] | None = None, *,
                     now: datetime, soas: Sequence[Soa] = (), period: Period | None = None) -> Coverage:
    """Coverage of ``frameworks`` (default: all) from the store index at ``index_path``."""
    slugs = list(frameworks) if frameworks else [f.id for f in library.frameworks()]
    fws = [library.framework(s) for s in slugs]
    evidence = read_evidence(index_path, library, now)
    needed: dict[str, None] = {}
    for fw in fws:
        for r in library.requirements(fw.id):
            for m in library.control_mappings_for(r.id):
                needed.setdefault(m.source, None)
    intervals = passing_intervals(index_path, library, needed, period) if period is not None else {}
    controls: dict[str, ControlCoverage] = {}
    for cid in list(needed) + [c for c in evidence if c not in needed]:
        controls[cid] = control_coverage(cid, library.common_control_or_none(cid), evidence.get(cid),
                                         intervals.get(cid) if period is not None else None)
    soa_by_fw = {s.framework: s for s in soas}
    out = [_framework(library, fw, controls, soa_by_fw.get(fw.id), period) for fw in fws]
    return Coverage(now, tuple(out), controls, period)


def _framework(library: ControlLibrary, fw: Framework, controls: AbcMapping[str, ControlCoverage],
               soa: Soa | None, period: Period | None) -> FrameworkCoverage:
    reqs = library.requirements(fw.id)
    done: dict[str, RequirementCoverage] = {}
    parents = [r for r in reqs if library.children(r.id) and not library.control_mappings_for(r.id)]
    parent_ids = {r.id for r in parents}
    for r in reqs:
        if r.id in parent_ids:
            continue
        maps = sorted(library.control_mappings_for(r.id), key=lambda m: (not m.counted, _rank(m), m.source))
        links = tuple(ControlLink(m, controls[m.source]) for m in maps)
        entry = soa.entry(r.id) if soa else None
        status, reason = requirement_status(links, entry)
        counted = [lk.coverage for lk in links if lk.mapping.counted]
        newest = max((c.newest for c in counted if c.newest), default=None)
        uncovered = None
        if period is not None and status != "not-applicable":
            uncovered = tuple(gaps(_covered(links), period))
        done[r.id] = RequirementCoverage(r, status, reason, sum(c.evidence_count for c in counted), newest, links,
                                         _crosswalk(library, r.id), entry, uncovered)
    for r in reversed(parents):  # children before parents, also for nested headings
        kids = [done[k.id] for k in library.children(r.id) if k.id in done]
        entry = soa.entry(r.id) if soa else None
        status, reason = requirement_status((), entry) if entry and not entry.applicable else rollup(kids)
        uncovered = None
        if period is not None and status != "not-applicable":
            covered: list[Interval] | None = None
            for k in kids:
                if k.uncovered is None:
                    continue
                kc = gaps(list(k.uncovered), period)  # the complement of a child's gaps is its coverage
                covered = kc if covered is None else intersect(covered, kc)
            uncovered = tuple(gaps(covered or [], period))
        done[r.id] = RequirementCoverage(
            r, status, reason, sum(k.evidence_count for k in kids),
            max((k.newest for k in kids if k.newest), default=None), (), _crosswalk(library, r.id), entry, uncovered)
    return FrameworkCoverage(fw, tuple(done[r.id] for r in reqs), soa)


def _rank(m: Mapping) -> int:
    return ("equal", "superset", "subset", "intersect", "related").index(m.relationship)


def _crosswalk(library: ControlLibrary, requirement: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.source if m.target == requirement else m.target
                               for m in library.crosswalk(requirement)))


def _covered(links: Sequence[ControlLink]) -> list[Interval]:
    strong = [lk for lk in links if lk.mapping.relationship in STRONG]
    weak = [lk for lk in links if lk.mapping.relationship in WEAK]
    parts: list[Interval] = []
    for lk in strong:
        parts.extend(lk.coverage.passing_intervals or ())
    if weak:
        common: list[Interval] | None = None
        for lk in weak:
            iv = list(lk.coverage.passing_intervals or ())
            common = iv if common is None else intersect(common, iv)
        parts.extend(common or [])
    return union(parts)
