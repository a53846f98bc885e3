"""Coverage of one framework as an OSCAL Assessment Results document (JSON).

The document validates against the OSCAL models compliance-trestle implements
(``trestle.oscal.assessment_results``, OSCAL 1.2.1, the version it declares);
it uses only structures that OSCAL 1.1 and 1.2 share. Its shape:

- ``back-matter`` holds one resource naming the framework catalog (title,
  source, version, link); ``import-ap`` points at it, since Affidavit has no
  separate assessment plan: every requirement of the framework is assessed.
- one ``result`` for the framework; ``reviewed-controls`` includes all
  requirements and excludes the ones the Statement of Applicability excludes.
- one ``observation`` per common control that has evidence and is counted for
  some requirement: its status and reason, ``methods`` TEST for controls
  collectors test (automation ``full``) else EXAMINE, and ``relevant-evidence``
  for its newest artefact and the artefacts behind its latest findings, each
  with ``href`` ``sha256:<hex>`` (the artefact's content address in the store
  and in an exported bundle) and props: digest, run id, signing key id,
  statement SHA-256, collected and effective times. The latest findings per
  subject are listed in ``remarks``.
- one ``finding`` per requirement, its ``target`` of type ``statement-id``
  (the requirement's statement, ``<framework>-<id>_smt``), related to the
  observations of its counted controls.

OSCAL ids are tokens (no ``:``, no leading digit), so requirement
``iso42001:6.1.2`` is control ``iso42001-6.1.2`` with statement
``iso42001-6.1.2_smt``; the ``requirement`` prop keeps the Affidavit id.

**Status mapping** (coverage status -> ``target.status``):

============== ============================= ==========================================
coverage       objective status (state/reason) notes
============== ============================= ==========================================
passing        satisfied / pass
failing        not-satisfied / fail
partial        not-satisfied / other          some counted control not (yet) passing
stale          not-satisfied / other          evidence exists, none fresh
missing        not-satisfied / other          no evidence
not-applicable (no status)                    ``implementation-status`` not-applicable,
                                              and the control in ``exclude-controls``
============== ============================= ==========================================

The exact Affidavit status is always in the finding's ``status`` prop.

UUIDs are version 5 over stable inputs: a finding's over its requirement id, an
observation's over its control and newest artefact, the result's over the
framework, the back-matter resource's over the framework. The document's own
UUID is over its content, so the same store, library, SoA and time give the
same document, byte for byte, and a changed document gets a new UUID.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from affidavit import __version__
from affidavit.agent.coverage import ControlCoverage, Coverage, FrameworkCoverage, RequirementCoverage
from affidavit.agent.coverage_query import EvidenceRef
from affidavit.agent.report_html import ArtefactDetail, EvidenceKey, cited_evidence
from affidavit.config.catalog import ControlLibrary
from affidavit.errors import UsageError
from affidavit.signing.predicate import utc_iso

OSCAL_VERSION = "1.2.1"  # the version of the models compliance-trestle validates (it is tested with them)
NS = "urn:affidavit:oscal"  # the namespace of Affidavit's props
UUID_NS = uuid.uuid5(uuid.NAMESPACE_URL, NS)
STATE = {"passing": ("satisfied", "pass"), "failing": ("not-satisfied", "fail"), "partial": ("not-satisfied", "other"),
         "stale": ("not-satisfied", "other"), "missing": ("not-satisfied", "other")}


def stable_uuid(*parts: str) -> str:
    """A version 5 UUID over ``parts`` (deterministic: the same inputs give the same UUID)."""
    return str(uuid.uuid5(UUID_NS, "\x1f".join(parts)))


def finding_uuid(requirement: str) -> str:
    """The UUID of a requirement's finding (OCSF events use it too, so both exports cross-reference)."""
    return stable_uuid("finding", requirement)


def token(requirement: str) -> str:
    """An OSCAL token for a requirement id: ``iso42001:6.1.2`` -> ``iso42001-6.1.2``."""
    text = re.sub(r"[^A-Za-z0-9_.\-]", "_", requirement.replace(":", "-", 1))
    return text if re.match(r"[A-Za-z_]", text) else "_" + text


def _line(text: str) -> str:
    """One line without leading or trailing space (OSCAL titles and prop values)."""
    return " ".join(text.split()) or "-"


def _prop(name: str, value: object) -> dict[str, str] | None:
    text = " ".join(str(value).split()) if value is not None else ""
    return {"name": name, "ns": NS, "value": text} if text else None


def _props(*props: dict[str, str] | None) -> list[dict[str, str]] | None:
    out = [p for p in props if p is not None]
    return out or None


def _clean(obj: Any) -> Any:
    """Drop None values and empty lists (OSCAL forbids empty arrays)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if v is not None and v != []}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _evidence(ref: EvidenceRef, d: ArtefactDetail | None) -> dict[str, Any]:
    sig = f", {d.signature} (statement sha256:{d.statement_sha256})" if d else ", not in the store index"
    return {
        "href": f"sha256:{ref.digest}",
        "description": f"Artefact {ref.name!r} collected {utc_iso(ref.collected_at)}{sig}.",
        "props": _props(
            _prop("artefact-name", ref.name), _prop("digest", f"sha256:{ref.digest}"), _prop("run-id", ref.run_id),
            _prop("collected", utc_iso(ref.collected_at)),
            _prop("signing-keyid", d.keyid if d else None),
            _prop("statement-sha256", d.statement_sha256 if d else None),
            _prop("media-type", d.media_type if d else None),
            _prop("effective-from", utc_iso(d.effective_from) if d and d.effective_from else None),
            _prop("effective-to", utc_iso(d.effective_to) if d and d.effective_to else None),
            _prop("ttl", d.ttl if d else None)),
    }


def observation_uuid(c: ControlCoverage) -> str:
    newest = c.newest
    return stable_uuid("observation", c.control, newest.run_id if newest else "", newest.digest if newest else "")


def _observation(c: ControlCoverage, newest: EvidenceRef, library: ControlLibrary | None,
                 details: Mapping[EvidenceKey, ArtefactDetail]) -> dict[str, Any]:
    cc = library.common_control_or_none(c.control) if library else None
    counts = c.counts()
    refs = cited_evidence([c])
    remarks = "\n".join(f"- {f.result}: {f.subject} — {f.reason} ({f.evidence.name}, sha256:{f.evidence.digest})"
                        for f in c.findings)
    return {
        "uuid": observation_uuid(c),
        "title": _line(f"{c.control} {c.title or ''}"),
        "description": f"{c.control} is {c.status}: {c.reason}. {c.evidence_count} artefact(s), {c.fresh_count} "
                       f"fresh, {c.unevaluated} without a finding; latest findings: {counts['pass']} pass, "
                       f"{counts['fail']} fail, {counts['unknown']} unknown.",
        "props": _props(_prop("common-control", c.control), _prop("status", c.status),
                        _prop("evidence-count", c.evidence_count), _prop("fresh-count", c.fresh_count),
                        *(_prop(f"findings-{k}", v) for k, v in counts.items())),
        "methods": ["TEST" if cc is not None and cc.automation == "full" else "EXAMINE"],
        "types": ["control-objective"],
        "relevant-evidence": [_evidence(ref, details.get(key)) for key, ref in refs.items()],
        "collected": utc_iso(newest.collected_at),
        "remarks": f"Latest findings per subject:\n\n{remarks}" if remarks else None,
    }


def _finding(r: RequirementCoverage, observed: Mapping[str, str]) -> dict[str, Any]:
    rid = r.requirement.id
    target: dict[str, Any] = {"type": "statement-id", "target-id": f"{token(rid)}_smt",
                              "title": _line(f"{rid} {r.requirement.title or ''}")}
    if r.status == "not-applicable":
        just = r.soa.justification if r.soa else ""
        target["implementation-status"] = {"state": "not-applicable", "remarks": just or None}
    else:
        state, reason = STATE[r.status]
        target["status"] = {"state": state, "reason": reason, "remarks": r.reason}
    related = dict.fromkeys(observed[lk.coverage.control] for lk in r.controls
                            if lk.mapping.counted and lk.coverage.control in observed)
    soa = r.soa
    return {
        "uuid": finding_uuid(rid),
        "title": _line(f"{rid} is {r.status}"),
        "description": r.reason,
        "props": _props(_prop("requirement", rid), _prop("status", r.status),
                        _prop("evidence-count", r.evidence_count),
                        _prop("newest-digest", f"sha256:{r.newest.digest}" if r.newest else None),
                        _prop("soa-owner", soa.owner if soa else None)),
        "target": target,
        "related-observations": [{"observation-uuid": u} for u in related],
        "remarks": ("Counted common controls: " + ", ".join(
            f"{lk.mapping.source} ({lk.mapping.relationship}: {lk.coverage.status})"
            for lk in r.controls if lk.mapping.counted)) if any(lk.mapping.counted for lk in r.controls) else None,
    }


def framework_coverage(cov: Coverage, framework: str | None) -> FrameworkCoverage:
    """The one framework an OSCAL or OCSF export describes (UsageError when it is not in ``cov``)."""
    if framework is None:
        if len(cov.frameworks) == 1:
            return cov.frameworks[0]
        raise UsageError("OSCAL Assessment Results describe one framework",
                         hint="add --framework F, e.g. --framework iso42001")
    for fc in cov.frameworks:
        if fc.framework.id == framework:
            return fc
    raise UsageError(f"framework {framework!r} is not in this coverage",
                     hint="compute coverage for it: affidavit coverage --framework F --format oscal")


def assessment_results(cov: Coverage, details: Mapping[EvidenceKey, ArtefactDetail], *,
                       framework: str | None = None, library: ControlLibrary | None = None) -> dict[str, Any]:
    """The OSCAL Assessment Results document (``{"assessment-results": …}``) for one framework of ``cov``."""
    fc = framework_coverage(cov, framework)
    fw = fc.framework
    counted = {lk.coverage.control: lk.coverage for r in fc.requirements for lk in r.controls if lk.mapping.counted}
    with_evidence = [(c, c.newest) for _, c in sorted(counted.items()) if c.newest is not None]
    observations = [_observation(c, newest, library, details) for c, newest in with_evidence]
    observed = {c.control: o["uuid"] for (c, _), o in zip(with_evidence, observations)}
    gen = utc_iso(cov.generated_at)
    times: Sequence[datetime] = [newest.collected_at for _, newest in with_evidence]
    start = cov.period.start if cov.period else min(times, default=cov.generated_at)
    end = min(cov.period.end, cov.generated_at) if cov.period else cov.generated_at
    excluded = [r for r in fc.requirements if r.status == "not-applicable"]
    catalog = stable_uuid("catalog", fw.id)
    selection: dict[str, Any] = {"include-all": {}}
    if excluded:
        selection["exclude-controls"] = [{"control-id": token(r.requirement.id)} for r in excluded]
    n = fc.summary()
    result = {
        "uuid": stable_uuid("result", fw.id),
        "title": _line(f"Evidence coverage of {fw.title}"),
        "description": f"Affidavit coverage of {len(fc.requirements)} requirements of {fw.id} from signed evidence "
                       "in the store: " + ", ".join(f"{v} {k}" for k, v in n.items() if v) + ".",
        "start": utc_iso(start),
        "end": utc_iso(max(end, start)),
        "props": _props(_prop("framework", fw.id), _prop("generated", gen),
                        _prop("soa", str(fc.soa.path) if fc.soa and fc.soa.path else None),
                        *(_prop(f"count-{k}", v) for k, v in n.items())),
        "reviewed-controls": {"control-selections": [selection]},
        "observations": observations,
        "findings": [_finding(r, observed) for r in fc.requirements],
    }
    resource = {"uuid": catalog, "title": _line(fw.title),
                "description": f"The {fw.id} catalog as Affidavit's control library holds it (identifiers and short "
                               f"titles). Source: {fw.source}",
                "props": _props(_prop("framework", fw.id), _prop("version", fw.version)),
                "rlinks": [{"href": fw.url}] if fw.url else None}
    doc = _clean({"assessment-results": {
        "uuid": "",
        "metadata": {"title": _line(f"Affidavit assessment results: {fw.title}"), "last-modified": gen,
                     "version": gen, "oscal-version": OSCAL_VERSION,
                     "props": _props(_prop("generator", f"Affidavit {__version__}")),
                     "remarks": "Status mapping: passing -> satisfied (pass); failing -> not-satisfied (fail); "
                                "partial, stale, missing -> not-satisfied (other); not-applicable -> no status, "
                                "implementation-status not-applicable. The Affidavit status is each finding's "
                                "status prop."},
        "import-ap": {"href": f"#{catalog}", "remarks": "No separate assessment plan: every requirement of the "
                                                       "framework is assessed from the evidence store."},
        "results": [result],
        "back-matter": {"resources": [resource]},
    }})
    body = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
    doc["assessment-results"]["uuid"] = stable_uuid("document", hashlib.sha256(body).hexdigest())
    return dict(doc)


def oscal_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
