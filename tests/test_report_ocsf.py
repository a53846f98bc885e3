"""OCSF Compliance Finding (class 2003) JSON lines, validated with py-ocsf-models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from py_ocsf_models.events.findings.compliance_finding import ComplianceFinding
from py_ocsf_models.objects.compliance_status import StatusID
from test_report_html import APPROVAL, EVIL_NAME, KEY_B, Scenario, invoke, scenario

from affidavit.agent.report_html import cited_evidence, evidence_details, report_controls
from affidavit.agent.report_ocsf import COMPLIANCE_STATUS, OCSF_VERSION, ocsf_lines
from affidavit.agent.report_oscal import finding_uuid


def lines(s: Scenario) -> list[str]:
    details = evidence_details(s.store.index_path, cited_evidence(report_controls(s.cov)).values())
    return ocsf_lines(s.cov, details).splitlines()


def validate(line: str) -> tuple[ComplianceFinding, dict[str, Any]]:
    """One line: a Compliance Finding for py-ocsf-models, with no field the model does not know."""
    event = json.loads(line)
    model = ComplianceFinding.model_validate(event)
    assert model.model_dump(mode="json", exclude_unset=True) == event  # nothing dropped, nothing coerced
    return model, event


def test_every_line_is_a_valid_compliance_finding(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    out = lines(s)
    assert len(out) == sum(len(fc.requirements) for fc in s.cov.frameworks)
    requirements = []
    for line in out:
        model, event = validate(line)
        assert (model.class_uid, model.category_uid, model.type_uid, model.activity_id) == (2003, 2, 200301, 1)
        assert model.metadata.version == OCSF_VERSION and model.metadata.product.name == "Affidavit"
        assert model.compliance.requirements is not None and len(model.compliance.requirements) == 1
        requirements.append(model.compliance.requirements[0])
    expected = [r.requirement.id for fc in s.cov.frameworks for r in fc.requirements]
    assert requirements == expected  # one event per requirement, in catalog order


def test_status_mapping_and_evidence(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    events = {json.loads(x)["compliance"]["requirements"][0]: json.loads(x) for x in lines(s)}
    seen = set()
    for fc in s.cov.frameworks:
        for r in fc.requirements:
            e = events[r.requirement.id]
            assert e["unmapped"]["affidavit"]["status"] == r.status
            assert e["compliance"]["status_id"] == COMPLIANCE_STATUS[r.status][0]
            assert e["finding_info"]["uid"] == finding_uuid(r.requirement.id)  # the OSCAL finding's UUID
            seen.add(r.status)
    assert {"passing", "failing", "partial", "stale", "missing", "not-applicable"} <= seen
    assert events["iso42001:A.6.2.8"]["compliance"]["status_id"] == StatusID.Pass
    failing = events["iso42001:A.6.2.5"]
    assert failing["compliance"]["status_id"] == StatusID.Fail and failing["severity_id"] == 3
    assert failing["compliance"]["checks"] == [
        {"uid": APPROVAL, "name": "Production model versions approved before release", "status": "Fail",
         "status_id": 3, "desc": "intersect: 1 failing finding(s), e.g. credit-risk v7: no approval"}]
    [ev] = failing["evidences"]
    a = s.arts["approval"]
    assert ev["name"] == a.name and ev["data"]["digest"] == f"sha256:{a.digest}"
    assert ev["data"]["signing_keyid"] == KEY_B and ev["data"]["run_id"] == s.runs["approval"]
    assert ev["data"]["signature"] == f"signed in run {s.runs['approval']} by key {KEY_B}"
    assert events["iso42001:4.1"]["compliance"]["status_id"] == StatusID.Warning and "evidences" not in events["iso42001:4.1"]
    na = events["iso42001:A.10.4"]
    assert na["compliance"]["status_id"] == StatusID.Other
    assert na["unmapped"]["affidavit"]["soa_justification"] == "No customers <yet>"
    iam = events["iso27001:A.5.16"]
    assert iam["compliance"]["status_id"] == StatusID.Warning
    assert [e["name"] for e in iam["evidences"]] == [EVIL_NAME]  # data, not markup: JSON needs no escaping


def test_output_is_deterministic_and_time_stamped(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    assert lines(s) == lines(s)
    first = json.loads(lines(s)[0])
    assert first["time"] == int(s.cov.generated_at.timestamp() * 1000) == first["finding_info"]["created_time"]


def test_coverage_command_ocsf(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    s.store.close()
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("store: {path: ./store}\n")
    code, out, err = invoke("--config", str(cfg), "coverage", "--format", "ocsf", "--framework", "iso27001")
    assert code == 0, err
    got = out.splitlines()
    assert len(got) == 127
    for line in got:
        validate(line)
    path = tmp_path / "findings.jsonl"
    code, out, err = invoke("--config", str(cfg), "coverage", "--format", "ocsf", "--out", str(path))
    assert code == 0 and out == "" and f"wrote {path}" in err
    assert len(path.read_text(encoding="utf-8").splitlines()) == sum(len(fc.requirements) for fc in s.cov.frameworks)
