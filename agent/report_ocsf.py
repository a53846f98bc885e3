"""Coverage as OCSF Compliance Finding events (class 2003), one JSON object per line.

This is the OCSF class CISO Assistant imports. (Prowler emits OCSF *Detection*
Finding events, class 2004, for its checks; Affidavit does not claim Prowler
compatibility, and a tool that reads Prowler's output will not read these.)

One event per requirement of each framework in the coverage, carrying the
requirement's evidence-backed status:

- ``compliance``: ``standards`` [framework title], ``requirements``
  [``iso42001:A.6.2.5``], ``control`` (the framework's own id), ``desc``
  (the short title), ``category`` (its group), ``status_id``, and one
  ``checks`` entry per counted common control with that control's status.
- ``evidences``: the artefacts behind the status (each counted control's
  newest artefact and those behind its latest findings): ``name`` and ``data``
  with the digest, run id, collection time, and the signing key id and
  statement SHA-256 of the run that signed it.
- ``finding_info.uid`` is the requirement's finding UUID, the same as in the
  OSCAL export (a version 5 UUID over the requirement id), so an importer
  updates one finding per requirement; ``metadata.uid`` (this event) adds the
  generation time.
- ``unmapped.affidavit`` keeps Affidavit's own words: status, reason,
  framework, evidence count.

**Status mapping** (coverage status -> ``compliance.status_id``, ``severity_id``):

============== ================== =================
coverage       compliance status  severity
============== ================== =================
passing        1 Pass             1 Informational
failing        3 Fail             3 Medium
partial        2 Warning          2 Low
stale          2 Warning          2 Low
missing        2 Warning          2 Low
not-applicable 99 Other           1 Informational
============== ================== =================

OCSF defines Warning as "did not yield a result due to missing information",
which is what partial (unknown findings, controls not yet evidenced), stale
(evidence expired) and missing (no evidence) mean.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from affidavit import __version__
from affidavit.agent.coverage import Coverage, FrameworkCoverage, RequirementCoverage
from affidavit.agent.report_html import ArtefactDetail, EvidenceKey, cited_evidence
from affidavit.agent.report_oscal import finding_uuid, stable_uuid
from affidavit.signing.predicate import utc_iso

OCSF_VERSION = "1.5.0"
CLASS_UID, CATEGORY_UID, ACTIVITY_CREATE = 2003, 2, 1
COMPLIANCE_STATUS = {"passing": (1, "Pass"), "failing": (3, "Fail"), "partial": (2, "Warning"),
                     "stale": (2, "Warning"), "missing": (2, "Warning"), "not-applicable": (99, "Other")}
SEVERITY = {"passing": (1, "Informational"), "failing": (3, "Medium"), "partial": (2, "Low"), "stale": (2, "Low"),
            "missing": (2, "Low"), "not-applicable": (1, "Informational")}


def _ms(t: datetime) -> int:
    """OCSF timestamps: milliseconds since the epoch."""
    return int(t.timestamp() * 1000)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != []}


def _evidences(r: RequirementCoverage, details: Mapping[EvidenceKey, ArtefactDetail]) -> list[dict[str, Any]]:
    out = []
    for key, ref in cited_evidence(lk.coverage for lk in r.controls if lk.mapping.counted).items():
        d = details.get(key)
        data = _drop_none({
            "digest": f"sha256:{ref.digest}", "run_id": ref.run_id, "collected": utc_iso(ref.collected_at),
            "signature": d.signature if d else "not in the store index",
            "signing_keyid": d.keyid if d else None, "statement_sha256": d.statement_sha256 if d else None,
            "media_type": d.media_type if d else None,
            "effective_from": utc_iso(d.effective_from) if d and d.effective_from else None,
            "effective_to": utc_iso(d.effective_to) if d and d.effective_to else None,
            "ttl": d.ttl if d else None,
        })
        out.append({"name": ref.name, "data": data})
    return out


def compliance_finding(fc: FrameworkCoverage, r: RequirementCoverage, details: Mapping[EvidenceKey, ArtefactDetail],
                       generated_at: datetime) -> dict[str, Any]:
    """One OCSF Compliance Finding event for requirement ``r`` (a JSON-ready dict)."""
    rid, q = r.requirement.id, r.requirement
    status_id, status = COMPLIANCE_STATUS[r.status]
    severity_id, severity = SEVERITY[r.status]
    now = _ms(generated_at)
    checks = [_drop_none({"uid": lk.coverage.control, "name": lk.coverage.title,
                          "status": COMPLIANCE_STATUS[lk.coverage.status][1],
                          "status_id": COMPLIANCE_STATUS[lk.coverage.status][0],
                          "desc": f"{lk.mapping.relationship}: {lk.coverage.reason}"})
              for lk in r.controls if lk.mapping.counted]
    return _drop_none({
        "activity_id": ACTIVITY_CREATE, "activity_name": "Create",
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "class_uid": CLASS_UID, "class_name": "Compliance Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE, "type_name": "Compliance Finding: Create",
        "severity_id": severity_id, "severity": severity,
        "time": now,
        "message": f"{rid} is {r.status}: {r.reason}",
        "status_detail": r.reason,
        "metadata": {"version": OCSF_VERSION, "uid": stable_uuid("ocsf-event", rid, utc_iso(generated_at)),
                     "product": {"name": "Affidavit", "vendor_name": "Affidavit", "version": __version__}},
        "finding_info": _drop_none({
            "uid": finding_uuid(rid), "title": f"{rid} {q.title or ''}".strip(), "desc": r.reason,
            "created_time": now, "types": ["Compliance"],
            "last_seen_time": _ms(r.newest.collected_at) if r.newest else None,
        }),
        "compliance": _drop_none({
            "standards": [fc.framework.title], "requirements": [rid], "control": q.local_id,
            "desc": q.title, "category": q.group, "status_id": status_id, "checks": checks,
        }),
        "evidences": _evidences(r, details),
        "unmapped": {"affidavit": _drop_none({
            "framework": fc.framework.id, "requirement": rid, "status": r.status, "reason": r.reason,
            "evidence_count": r.evidence_count, "compliance_status": status,
            "soa_justification": r.soa.justification if r.soa and not r.soa.applicable else None,
        })},
    })


def compliance_findings(cov: Coverage, details: Mapping[EvidenceKey, ArtefactDetail]) -> Iterator[dict[str, Any]]:
    """Every requirement of every framework in ``cov``, in catalog order."""
    for fc in cov.frameworks:
        for r in fc.requirements:
            yield compliance_finding(fc, r, details, cov.generated_at)


def ocsf_lines(cov: Coverage, details: Mapping[EvidenceKey, ArtefactDetail]) -> str:
    """The events as JSON lines (one compact object per line, keys sorted)."""
    return "".join(json.dumps(e, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for e in compliance_findings(cov, details))
