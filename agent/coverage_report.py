"""Coverage as data for machines (JSON, CSV rows) and as a text table for people.

The JSON shape (one shape with or without ``--framework``)::

    {"generated_at": "...Z", "period": {"from", "to"} | null,
     "frameworks": [{"id", "title", "soa": path | null, "summary": {status: n},
                     "requirements": [{"id", "title", "group", "status", "reason", "evidence_count",
                                       "newest": {digest, name, collected, run_id} | null,
                                       "controls": [{"id", "relationship", "counted", "status"}],
                                       "related_requirements": [...], "soa": {...} | null,
                                       "uncovered": [{"from", "to"}] (with a period)}]}],
     "controls": {"common:CC-...": {"title", "status", "reason", "evidence_count", "fresh_count",
                                    "unevaluated", "newest", "findings": {"pass", "fail", "unknown"},
                                    "latest_findings": [...], "passing_intervals": [...] (with a period)}}}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from affidavit.agent.coverage import ABBREV, STATUSES, ControlCoverage, Coverage, FrameworkCoverage
from affidavit.agent.coverage_period import Interval
from affidavit.config.catalog import Requirement
from affidavit.signing.predicate import utc_iso

CSV_FIELDS = ("framework", "requirement", "title", "status", "evidence_count", "newest_collected",
              "newest_digest", "controls", "pass", "fail", "unknown", "reason", "uncovered")


def _intervals(iv: Sequence[Interval] | None) -> list[dict[str, str]] | None:
    return None if iv is None else [{"from": utc_iso(s), "to": utc_iso(e)} for s, e in iv]


def control_json(c: ControlCoverage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "title": c.title, "status": c.status, "reason": c.reason, "evidence_count": c.evidence_count,
        "fresh_count": c.fresh_count, "unevaluated": c.unevaluated,
        "newest": c.newest.to_json() if c.newest else None, "findings": c.counts(),
        "latest_findings": [f.to_json() for f in c.findings],
    }
    if c.passing_intervals is not None:
        out["passing_intervals"] = _intervals(c.passing_intervals)
    return out


def framework_json(fc: FrameworkCoverage) -> dict[str, Any]:
    reqs = []
    for r in fc.requirements:
        d: dict[str, Any] = {
            "id": r.requirement.id, "title": r.requirement.title, "group": r.requirement.group,
            "status": r.status, "reason": r.reason, "evidence_count": r.evidence_count,
            "newest": r.newest.to_json() if r.newest else None,
            "controls": [{"id": lk.mapping.source, "relationship": lk.mapping.relationship,
                          "counted": lk.mapping.counted, "status": lk.coverage.status,
                          "provenance": lk.mapping.provenance} for lk in r.controls],
            "related_requirements": list(r.related_requirements),
            "soa": None if r.soa is None else {"applicable": r.soa.applicable,
                                                "justification": r.soa.justification, "owner": r.soa.owner},
        }
        if r.uncovered is not None:
            d["uncovered"] = _intervals(r.uncovered)
        reqs.append(d)
    return {"id": fc.framework.id, "title": fc.framework.title,
            "soa": str(fc.soa.path) if fc.soa and fc.soa.path else None,
            "summary": fc.summary(), "requirements": reqs}


def coverage_json(cov: Coverage) -> dict[str, Any]:
    return {
        "generated_at": utc_iso(cov.generated_at),
        "period": cov.period.to_json() if cov.period else None,
        "frameworks": [framework_json(fc) for fc in cov.frameworks],
        "controls": {cid: control_json(c) for cid, c in cov.controls.items()},
    }


def csv_rows(cov: Coverage) -> Iterator[dict[str, Any]]:
    for fc in cov.frameworks:
        for r in fc.requirements:
            counted = [lk.coverage for lk in r.controls if lk.mapping.counted]
            counts = {k: sum(c.counts()[k] for c in counted) for k in ("pass", "fail", "unknown")}
            yield {
                "framework": fc.framework.id, "requirement": r.requirement.id, "title": r.requirement.title or "",
                "status": r.status, "evidence_count": r.evidence_count,
                "newest_collected": utc_iso(r.newest.collected_at) if r.newest else "",
                "newest_digest": f"sha256:{r.newest.digest}" if r.newest else "",
                "controls": "; ".join(f"{lk.mapping.source} ({lk.mapping.relationship}: {lk.coverage.status})"
                                      for lk in r.controls),
                **counts, "reason": r.reason,
                "uncovered": "; ".join(f"{utc_iso(s)}..{utc_iso(e)}" for s, e in r.uncovered or ()),
            }


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _title(r: Requirement) -> str:
    return r.title or " — ".join(x for x in (r.group, r.note) if x)


def summary_table(cov: Coverage) -> list[str]:
    head = f"{'framework':<12} {'requirements':>12} " + " ".join(f"{s:>14}" for s in STATUSES)
    lines = [head]
    for fc in cov.frameworks:
        n = fc.summary()
        lines.append(f"{fc.framework.id:<12} {len(fc.requirements):>12} " + " ".join(f"{n[k]:>14}" for k in STATUSES))
    return lines


def framework_table(fc: FrameworkCoverage, *, period: bool = False) -> list[str]:
    lines = [f"{fc.framework.title} ({fc.framework.id})",
             f"{'requirement':<24} {'status':<14} {'evid':>5} {'newest':<17} {'controls':<48} title"]
    for r in fc.requirements:
        newest = f"{r.newest.collected_at:%Y-%m-%d %H:%M}" if r.newest else "-"
        ctl = ", ".join(f"{lk.mapping.source.removeprefix('common:')} {ABBREV[lk.mapping.relationship]}"
                        f"={lk.coverage.status}" for lk in r.controls if lk.mapping.counted) or "-"
        lines.append(f"{r.requirement.id:<24} {r.status:<14} {r.evidence_count:>5} {newest:<17} "
                     f"{_cut(ctl, 48):<48} {_cut(_title(r.requirement), 60)}")
        if r.status in ("failing", "partial", "stale"):
            lines.append(f"{'':<24}   {_cut(r.reason, 150)}")
        if period and r.uncovered:
            for s, e in r.uncovered[:5]:
                lines.append(f"{'':<24}   uncovered {utc_iso(s)} .. {utc_iso(e)}")
            if len(r.uncovered) > 5:
                lines.append(f"{'':<24}   … and {len(r.uncovered) - 5} more uncovered interval(s)")
    n = fc.summary()
    lines.append(f"{len(fc.requirements)} requirements: " + ", ".join(f"{n[k]} {k}" for k in STATUSES if n[k]))
    return lines
