"""OSCAL Assessment Results: valid for compliance-trestle's models, evidence by digest, deterministic UUIDs."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_report_html import APPROVAL, KEY_A, KEY_B, LOGGING, NOW, Scenario, invoke, scenario
from trestle.oscal import OSCAL_VERSION_REGEX
from trestle.oscal.assessment_results import AssessmentResults

from affidavit.agent.coverage import Coverage, compute_coverage
from affidavit.agent.report_html import cited_evidence, evidence_details, report_controls
from affidavit.agent.report_oscal import STATE, assessment_results, finding_uuid, oscal_json, token
from affidavit.config.catalog import load_library
from affidavit.errors import UsageError

TOKEN = re.compile(r"^[_A-Za-z][_A-Za-z0-9.\-]*$")


def document(s: Scenario, cov: Coverage | None = None, framework: str = "iso42001") -> dict[str, Any]:
    cov = cov or s.cov
    details = evidence_details(s.store.index_path, cited_evidence(report_controls(cov)).values())
    return assessment_results(cov, details, framework=framework, library=s.lib)


def load_with_trestle(doc: dict[str, Any], path: Path) -> AssessmentResults:
    path.write_text(oscal_json(doc), encoding="utf-8")
    model = AssessmentResults.oscal_read(path)
    assert isinstance(model, AssessmentResults)
    return model


def findings_by_requirement(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for f in doc["assessment-results"]["results"][0]["findings"]:
        props = {p["name"]: p["value"] for p in f["props"]}
        out[props["requirement"]] = f
    return out


def test_loads_with_trestle_and_has_one_finding_per_requirement(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    doc = document(s)
    model = load_with_trestle(doc, tmp_path / "ar.json")
    assert re.match(OSCAL_VERSION_REGEX, model.metadata.oscal_version.root.root) is not None  # trestle's strict check
    result = model.results[0]
    assert result.findings is not None and result.observations is not None
    fc = next(f for f in s.cov.frameworks if f.framework.id == "iso42001")
    assert [f.target.target_id for f in result.findings] == [f"{token(r.requirement.id)}_smt" for r in fc.requirements]
    assert {f.target.type.value for f in result.findings} == {"statement-id"}
    # round trip: trestle keeps every field we wrote
    again = json.loads(model.oscal_serialize_json())
    assert len(again["assessment-results"]["results"][0]["findings"]) == len(fc.requirements)
    assert again["assessment-results"]["uuid"] == doc["assessment-results"]["uuid"]


def test_every_framework_validates(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    for fw in s.lib.frameworks():
        doc = document(s, framework=fw.id)
        model = load_with_trestle(doc, tmp_path / f"{fw.id}.json")
        assert model.results[0].findings is not None
        assert len(model.results[0].findings) == len(s.lib.requirements(fw.id)), fw.id
        assert all(TOKEN.match(f.target.target_id) for f in model.results[0].findings)


def test_status_mapping_and_soa_exclusion(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    doc = document(s)
    by_req = findings_by_requirement(doc)
    fc = next(f for f in s.cov.frameworks if f.framework.id == "iso42001")
    seen = set()
    for r in fc.requirements:
        f = by_req[r.requirement.id]
        props = {p["name"]: p["value"] for p in f["props"]}
        assert props["status"] == r.status
        seen.add(r.status)
        if r.status == "not-applicable":
            assert "status" not in f["target"]
            assert f["target"]["implementation-status"] == {"state": "not-applicable", "remarks": "No customers <yet>"}
        else:
            assert (f["target"]["status"]["state"], f["target"]["status"]["reason"]) == STATE[r.status]
    assert {"passing", "failing", "stale", "missing", "not-applicable"} <= seen
    assert by_req["iso42001:A.6.2.8"]["target"]["status"]["state"] == "satisfied"
    assert by_req["iso42001:A.6.2.5"]["target"]["status"] == {
        "state": "not-satisfied", "reason": "fail", "remarks": by_req["iso42001:A.6.2.5"]["description"]}
    assert by_req["iso42001:5.2"]["target"]["status"]["reason"] == "other"  # stale
    selection = doc["assessment-results"]["results"][0]["reviewed-controls"]["control-selections"][0]
    assert selection == {"include-all": {}, "exclude-controls": [{"control-id": "iso42001-A.10.4"}]}


def test_observations_point_at_artefact_digests_and_signing_runs(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    doc = document(s)
    result = doc["assessment-results"]["results"][0]
    observations = {o["uuid"]: o for o in result["observations"]}
    for req, control, label, key in (("iso42001:A.6.2.8", LOGGING, "logging", KEY_A),
                                     ("iso42001:A.6.2.5", APPROVAL, "approval", KEY_B)):
        f = findings_by_requirement(doc)[req]
        related = [observations[r["observation-uuid"]] for r in f["related-observations"]]
        obs = next(o for o in related if {"name": "common-control", "ns": "urn:affidavit:oscal",
                                          "value": control} in o["props"])
        ev = obs["relevant-evidence"][0]
        a = s.arts[label]
        assert ev["href"] == f"sha256:{a.digest}"
        props = {p["name"]: p["value"] for p in ev["props"]}
        assert props["digest"] == f"sha256:{a.digest}" and props["run-id"] == s.runs[label]
        assert props["signing-keyid"] == key and props["artefact-name"] == a.name
        assert f"signed in run {s.runs[label]} by key {key}" in ev["description"]
        assert obs["collected"] == "2025-06-15T11:00:00Z"
    logging_obs = next(o for o in result["observations"] if o["title"].startswith(LOGGING))
    assert logging_obs["methods"] == ["TEST"]  # collectors test logging (automation: full)
    assert "- pass: us-east-1 — capture on" in logging_obs["remarks"]
    policy_obs = next(o for o in result["observations"] if o["title"].startswith("common:CC-AI-POLICY"))
    assert policy_obs["methods"] == ["EXAMINE"]
    assert {p["name"]: p["value"] for p in policy_obs["props"]}["status"] == "stale"
    # missing controls have no observation; every related observation exists
    assert all(r["observation-uuid"] in observations for f in result["findings"]
               for r in f.get("related-observations", []))


def test_uuids_are_deterministic(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    first, second = document(s), document(s)
    assert oscal_json(first) == oscal_json(second)
    all_uuids = re.findall(r'"(?:uuid|observation-uuid)": "([0-9a-f-]{36})"', oscal_json(first))
    assert all_uuids and all(uuid.UUID(u).version == 5 for u in all_uuids)
    later = compute_coverage(load_library(), s.store.index_path, ["iso42001"], now=NOW + timedelta(minutes=5))
    third = document(s, later)
    assert third["assessment-results"]["uuid"] != first["assessment-results"]["uuid"]  # new content, new document
    assert [f["uuid"] for f in third["assessment-results"]["results"][0]["findings"]] == \
        [f["uuid"] for f in first["assessment-results"]["results"][0]["findings"]]
    assert findings_by_requirement(first)["iso42001:A.6.2.5"]["uuid"] == finding_uuid("iso42001:A.6.2.5")


def test_tokens() -> None:
    assert token("iso42001:6.1.2") == "iso42001-6.1.2"
    assert token("nist-ai-rmf:MS-2.5") == "nist-ai-rmf-MS-2.5"
    assert token("9fw:a b/c") == "_9fw-a_b_c"
    assert all(TOKEN.match(token(x)) for x in ("eu-ai-act:Art.12", "soc2:CC6.1", "x:ü"))


def test_one_framework_only(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    details = evidence_details(s.store.index_path, [])
    with pytest.raises(UsageError, match="one framework"):
        assessment_results(s.cov, details)
    only = compute_coverage(s.lib, s.store.index_path, ["soc2"], now=NOW)
    assert assessment_results(only, details)["assessment-results"]["results"][0]["props"][0]["value"] == "soc2"
    with pytest.raises(UsageError, match="'iso42001' is not in this coverage"):
        assessment_results(only, details, framework="iso42001")
    assert assessment_results(s.cov, details, framework="soc2")["assessment-results"]["results"][0]["props"][0][
        "value"] == "soc2"


def test_coverage_command_oscal(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    s.store.close()
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("store: {path: ./store}\n")
    code, _, err = invoke("--config", str(cfg), "coverage", "--format", "oscal")
    assert code == 2 and "one framework" in err and "--framework" in err
    out = tmp_path / "ar.json"
    code, _, err = invoke("--config", str(cfg), "coverage", "--format", "oscal", "--framework", "eu-ai-act",
                          "--out", str(out))
    assert code == 0, err
    model = AssessmentResults.oscal_read(out)
    assert isinstance(model, AssessmentResults) and model.results[0].findings is not None
    assert len(model.results[0].findings) == 35
