"""Coverage over a real LocalStore index: relationships, freshness, findings, SoA, overrides, periods, CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from affidavit.agent import cli, cli_controls
from affidavit.agent.coverage import Coverage, RequirementCoverage, compute_coverage
from affidavit.agent.coverage_period import Period, parse_period
from affidavit.agent.coverage_query import has_ttl_index, parse_ttl
from affidavit.agent.coverage_report import coverage_json
from affidavit.agent.soa import parse_soa
from affidavit.config.catalog import ControlLibrary, load_library
from affidavit.errors import StoreError, UsageError
from affidavit.store.base import ArtefactRecord, RunRecord
from affidavit.store.local import LocalStore

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
LOGGING = "common:CC-INFERENCE-LOGGING"


@pytest.fixture(scope="module")
def lib() -> ControlLibrary:
    return load_library()


def finding(control: str, result: str, subject: str | None = None, reason: str = "checked") -> dict[str, Any]:
    f = {"control": control, "result": result, "reason": reason}
    if subject is not None:
        f["subject"] = subject
    return f


def art(name: str, controls: Sequence[str], findings: Sequence[dict[str, Any]] = (), *,
        at: datetime = NOW - timedelta(hours=1), ttl: str | None = "P1D", eff_from: datetime | None = None,
        eff_to: datetime | None = None, collector: str = "files") -> ArtefactRecord:
    return ArtefactRecord(run_id="", digest=hashlib.sha256(f"{name}@{at}".encode()).hexdigest(), name=name,
                          media_type="application/json", size=10, collector=collector, collected_at=at,
                          controls=tuple(controls), findings=tuple(findings), effective_from=eff_from,
                          effective_to=eff_to, ttl=ttl)


_runs = iter(range(10**6))


def add_run(store: LocalStore, *arts: ArtefactRecord, source_type: str = "files") -> str:
    started = min(a.collected_at for a in arts)
    run_id = f"{started:%Y%m%dT%H%M%S}Z-src-{next(_runs):06d}"
    records = tuple(ArtefactRecord(**{**a.__dict__, "run_id": run_id}) for a in arts)
    store.index_run(RunRecord(run_id=run_id, source="src", source_type=source_type, started=started,
                              finished=max(a.collected_at for a in arts), keyid="k" * 16,
                              statement_sha256="0" * 64, artefact_count=len(records), artefacts=records))
    return run_id


def coverage(store: LocalStore, lib: ControlLibrary, frameworks: Sequence[str] | None = None, **kw: Any) -> Coverage:
    return compute_coverage(lib, store.index_path, frameworks, now=kw.pop("now", NOW), **kw)


def req(cov: Coverage, id: str) -> RequirementCoverage:
    fw = id.split(":", 1)[0]
    fc = next(f for f in cov.frameworks if f.framework.id == fw)
    return next(r for r in fc.requirements if r.requirement.id == id)


def link(r: RequirementCoverage, control: str) -> tuple[str, bool, str]:
    lk = next(lk for lk in r.controls if lk.mapping.source == control)
    return lk.mapping.relationship, lk.mapping.counted, lk.coverage.status


# -- one artefact, three frameworks -----------------------------------------------------------

def test_one_artefact_counts_in_every_framework_as_its_relationships_allow(store: LocalStore, lib: ControlLibrary) -> None:
    a = art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "pass", "us-east-1")])
    run_id = add_run(store, a)
    cov = coverage(store, lib)
    # ISO 42001 A.6.2.8: its only counted mapping is this intersect control, which passes
    r = req(cov, "iso42001:A.6.2.8")
    assert r.status == "passing" and r.evidence_count == 1
    assert r.newest is not None and (r.newest.digest, r.newest.run_id) == (a.digest, run_id)
    assert link(r, LOGGING) == ("intersect", True, "passing")
    assert link(r, "common:CC-CLOUD-AUDIT-TRAIL") == ("related", False, "missing")
    # ISO 27001 A.8.15: a second intersect control has no evidence, so partial
    r = req(cov, "iso27001:A.8.15")
    assert r.status == "partial" and link(r, "common:CC-CLOUD-AUDIT-TRAIL") == ("intersect", True, "missing")
    # AI Act: Art.12 passes the same way, Art.19 needs record retention too
    assert req(cov, "eu-ai-act:Art.12").status == "passing"
    assert req(cov, "eu-ai-act:Art.19").status == "partial"
    # NIST AI RMF: the crosswalk-backed link is related: shown, never counted
    r = req(cov, "nist-ai-rmf:MS-2.4")
    assert r.status == "missing" and link(r, LOGGING) == ("related", False, "passing")
    assert "nist-ai-rmf:MS-2.4" in req(cov, "iso42001:A.6.2.6").related_requirements
    summary = {fc.framework.id: fc.summary() for fc in cov.frameworks}
    assert summary["iso42001"]["passing"] == 1 and summary["iso42001"]["missing"] == 73


def test_related_only_requirement_stays_missing(store: LocalStore, lib: ControlLibrary) -> None:
    approval = "common:CC-MODEL-APPROVAL"
    add_run(store, art("mlflow/credit-risk/v7.json", [approval], [finding(approval, "pass", "credit-risk v7")]))
    cov = coverage(store, lib, ["iso42001", "iso27001", "eu-ai-act"])
    assert req(cov, "iso42001:A.6.2.5").status == "passing"
    assert req(cov, "iso27001:A.8.32").status == "partial"
    r = req(cov, "eu-ai-act:Art.16")
    assert r.status == "missing" and link(r, approval) == ("related", False, "passing")
    assert r.evidence_count == 0 and r.newest is None


def test_equal_mapping_passes_alone_and_a_failing_control_wins(store: LocalStore, lib: ControlLibrary,
                                                                 tmp_path: Path) -> None:
    doc, review = "common:CC-DOC-CONTROL", "common:CC-CODE-REVIEW"
    add_run(store, art("git/docs.json", [doc], [finding(doc, "pass")]))
    assert req(coverage(store, lib, ["iso42001"]), "iso42001:7.5.2").status == "passing"
    user = tmp_path / "more.yaml"
    user.write_text(f"mappings:\n  - {{from: '{review}', to: 'iso42001:7.5.2', relationship: intersect}}\n")
    lib2 = load_library([user])
    add_run(store, art("github/protection.json", [review], [finding(review, "fail", "main", "force pushes allowed")],
                       collector="git"), source_type="git")
    r = req(coverage(store, lib2, ["iso42001"]), "iso42001:7.5.2")
    assert r.status == "failing" and "force pushes allowed" in r.reason and "main" in r.reason


# -- SoA, staleness, findings -------------------------------------------------------------------

def test_soa_exclusion_is_not_applicable(store: LocalStore, lib: ControlLibrary) -> None:
    add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "pass")]))
    soa = parse_soa("framework: iso42001\nrequirements:\n  - {id: A.6.2.8, applicable: no, "
                    "justification: No AI system in scope produces logs.}\n", "soa.yaml", lib)
    cov = coverage(store, lib, ["iso42001", "eu-ai-act"], soas=[soa])
    r = req(cov, "iso42001:A.6.2.8")
    assert r.status == "not-applicable" and "No AI system in scope produces logs." in r.reason
    assert r.soa is not None and r.evidence_count == 1  # the evidence is still shown
    assert cov.frameworks[0].summary()["not-applicable"] == 1
    assert req(cov, "eu-ai-act:Art.12").status == "passing"  # the SoA is for iso42001 only


def test_stale_evidence_by_ttl_and_by_effective_period(store: LocalStore, lib: ControlLibrary) -> None:
    add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "pass")], at=NOW - timedelta(days=3)))
    cov = coverage(store, lib, ["iso42001"])
    assert req(cov, "iso42001:A.6.2.8").status == "stale"
    assert cov.controls[LOGGING].status == "stale" and "none fresh" in cov.controls[LOGGING].reason
    add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "pass")], ttl="P30D",
                       eff_to=NOW - timedelta(minutes=1)))
    assert req(coverage(store, lib, ["iso42001"]), "iso42001:A.6.2.8").status == "stale"
    add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "pass")], at=NOW - timedelta(minutes=5)))
    cov = coverage(store, lib, ["iso42001"])
    assert req(cov, "iso42001:A.6.2.8").status == "passing"
    assert cov.controls[LOGGING].evidence_count == 3 and cov.controls[LOGGING].fresh_count == 1
    newest = req(cov, "iso42001:A.6.2.8").newest
    assert newest is not None and newest.collected_at == NOW - timedelta(minutes=5)


def test_unknown_never_counts_as_pass(store: LocalStore, lib: ControlLibrary) -> None:
    add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "unknown", "eu-west-1", "access denied")]))
    cov = coverage(store, lib, ["iso42001"])
    assert cov.controls[LOGGING].status == "partial" and "access denied" in cov.controls[LOGGING].reason
    assert req(cov, "iso42001:A.6.2.8").status == "partial"
    add_run(store, art("bedrock/other.json", [LOGGING], [finding(LOGGING, "pass", "us-east-1"),
                                                         finding(LOGGING, "bogus", "ap-south-1")]))
    cov = coverage(store, lib, ["iso42001"])
    assert cov.controls[LOGGING].counts() == {"pass": 1, "fail": 0, "unknown": 2}
    assert req(cov, "iso42001:A.6.2.8").status == "partial"


def test_failing_finding_and_latest_finding_per_subject(store: LocalStore, lib: ControlLibrary) -> None:
    old = NOW - timedelta(hours=5)
    add_run(store, art("logging-a.json", [LOGGING], [finding(LOGGING, "fail", "ep1", "capture off")], at=old),
            art("logging-b.json", [LOGGING], [finding(LOGGING, "fail", "ep2", "no retention")], at=old, ttl="PT6H"))
    cov = coverage(store, lib, ["iso42001"])
    assert cov.controls[LOGGING].status == "failing" and req(cov, "iso42001:A.6.2.8").status == "failing"
    add_run(store, art("logging-a.json", [LOGGING], [finding(LOGGING, "pass", "ep1")]))
    cov = coverage(store, lib, ["iso42001"])  # ep1 is fixed, ep2's failure is still fresh
    assert {f.subject: f.result for f in cov.controls[LOGGING].findings} == {"ep1": "pass", "ep2": "fail"}
    assert req(cov, "iso42001:A.6.2.8").status == "failing"
    cov = coverage(store, lib, ["iso42001"], now=NOW + timedelta(hours=2))  # ep2's evidence is now stale
    assert req(cov, "iso42001:A.6.2.8").status == "passing"


def test_evidence_without_findings_depends_on_the_controls_automation(store: LocalStore, lib: ControlLibrary) -> None:
    policy, iam = "common:CC-AI-POLICY", "common:CC-IAM-ACCESS"
    assert lib.common_control(policy).automation == "partial" and lib.common_control(iam).automation == "full"
    add_run(store, art("docs/ai-policy.md", [policy]), art("aws/credential-report.csv", [iam]))
    cov = coverage(store, lib, ["iso42001", "iso27001"])
    assert cov.controls[policy].status == "passing" and cov.controls[policy].unevaluated == 1
    assert req(cov, "iso42001:5.2").status == "passing"
    assert cov.controls[iam].status == "partial" and "not evaluated" in cov.controls[iam].reason
    assert req(cov, "iso27001:A.5.16").status == "partial"


def test_evidence_without_ttl_takes_its_controls_ttl(store: LocalStore, lib: ControlLibrary) -> None:
    policy = "common:CC-AI-POLICY"
    add_run(store, art("docs/ai-policy.md", [policy], ttl=None, at=NOW - timedelta(days=400)))
    assert coverage(store, lib, ["iso42001"]).controls[policy].status == "stale"
    add_run(store, art("docs/ai-policy.md", [policy], ttl=None, at=NOW - timedelta(days=10)))
    assert coverage(store, lib, ["iso42001"]).controls[policy].status == "passing"


def test_collector_override_applies_to_stored_evidence(store: LocalStore, tmp_path: Path) -> None:
    user = tmp_path / "overrides.yaml"
    user.write_text("collector_overrides:\n  - collector: files\n    control: common:CC-AI-POLICY\n"
                    "    controls: [common:CC-DOC-CONTROL]\n")
    lib = load_library([user])
    add_run(store, art("docs/ai-policy.md", ["common:CC-AI-POLICY"], [finding("common:CC-AI-POLICY", "pass")]))
    cov = coverage(store, lib, ["iso42001"])
    assert cov.controls["common:CC-DOC-CONTROL"].evidence_count == 1
    assert cov.controls["common:CC-DOC-CONTROL"].counts()["pass"] == 1
    assert req(cov, "iso42001:7.5.2").status == "passing"
    assert cov.controls["common:CC-AI-POLICY"].status == "missing"
    add_run(store, art("git/ai-policy.json", ["common:CC-AI-POLICY"], collector="git"), source_type="git")
    assert coverage(store, lib, ["iso42001"]).controls["common:CC-AI-POLICY"].status == "passing"


def test_nist_categories_roll_up_their_subcategories(store: LocalStore, lib: ControlLibrary) -> None:
    fair = "common:CC-FAIRNESS-EVAL"
    add_run(store, art("mlflow/fairness.json", [fair], [finding(fair, "pass", "credit-risk v7")]))
    cov = coverage(store, lib, ["nist-ai-rmf"])
    assert req(cov, "nist-ai-rmf:MS-2.11").status == "passing"
    cat = req(cov, "nist-ai-rmf:MS-2")
    assert cat.status == "partial" and "rolled up from 13 sub-requirements" in cat.reason
    assert cat.evidence_count == 1 and req(cov, "nist-ai-rmf:MS-1").status == "missing"


def test_empty_store_is_all_missing(store: LocalStore, lib: ControlLibrary) -> None:
    cov = coverage(store, lib)
    for fc in cov.frameworks:
        assert fc.summary()["missing"] == len(fc.requirements), fc.framework.id


# -- the ttl index, errors ---------------------------------------------------------------------------

def test_ttl_index_fast_path_matches_the_scan(store: LocalStore, lib: ControlLibrary) -> None:
    for i in range(30):
        at = NOW - timedelta(hours=7 * i)
        add_run(store, art(f"x{i % 4}.json", [LOGGING, "common:CC-PROD-MONITORING"],
                           [finding(LOGGING, ("pass", "fail", "unknown")[i % 3], f"s{i % 5}")], at=at,
                           ttl=("P1D", "PT12H", None, "P1W")[i % 4]))
    conn = sqlite3.connect(store.index_path)
    assert has_ttl_index(conn)  # the store creates it
    before = coverage_json(coverage(store, lib))
    conn.execute("DROP INDEX artefacts_by_ttl")  # an index from before the fast path: the full scan
    conn.commit()
    assert not has_ttl_index(conn)
    conn.close()
    assert coverage_json(coverage(store, lib)) == before
    assert before["controls"][LOGGING]["fresh_count"] > 0


def test_missing_or_foreign_index_is_a_store_error(store: LocalStore, lib: ControlLibrary, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing"):
        compute_coverage(lib, tmp_path / "nothing.db", now=NOW)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="unknown layout"):
        compute_coverage(lib, other, now=NOW)


def test_parse_ttl() -> None:
    assert parse_ttl("P7D") == timedelta(days=7)
    assert parse_ttl("PT12H") == timedelta(hours=12)
    assert parse_ttl("P1Y2M") == timedelta(days=365 + 60)
    assert parse_ttl(None) is None and parse_ttl("soon") is None


# -- audit periods ---------------------------------------------------------------------------------

def test_period_reports_uncovered_intervals(store: LocalStore, lib: ControlLibrary) -> None:
    d0 = datetime(2025, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    for i in range(10):
        if i == 5:
            continue  # a missed collection
        result = "fail" if i == 7 else "pass"
        add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, result)], at=d0 + i * day))
    policy = "common:CC-AI-POLICY"
    add_run(store, art("docs/ai-policy.md", [policy], at=d0 + 3 * day, eff_from=d0 + 2 * day, eff_to=d0 + 20 * day))
    period = parse_period("2025-01-01..2025-01-10")
    assert period == Period(d0, d0 + 10 * day)
    cov = coverage(store, lib, ["iso42001"], period=period, now=d0 + 10 * day)
    assert req(cov, "iso42001:A.6.2.8").uncovered == ((d0 + 5 * day, d0 + 6 * day), (d0 + 7 * day, d0 + 8 * day))
    assert req(cov, "iso42001:5.2").uncovered == ((d0, d0 + 2 * day),)
    assert req(cov, "iso42001:4.1").uncovered == ((d0, d0 + 10 * day),)
    passing = cov.controls[LOGGING].passing_intervals
    assert passing is not None and passing[0] == (d0, d0 + 5 * day)
    data = coverage_json(cov)
    a628 = next(r for r in data["frameworks"][0]["requirements"] if r["id"] == "iso42001:A.6.2.8")
    assert a628["uncovered"][0] == {"from": "2025-01-06T00:00:00Z", "to": "2025-01-07T00:00:00Z"}


def test_parse_period_errors() -> None:
    assert parse_period("2025-01-01T06:00:00Z..2025-01-02T00:00:00Z").start == datetime(2025, 1, 1, 6, tzinfo=UTC)
    for bad in ("2025-01-01", "..2025-01-02", "2025-13-01..2025-12-31", "2025-02-01..2025-01-01"):
        with pytest.raises(UsageError):
            parse_period(bad)


# -- the coverage command ------------------------------------------------------------------------

def invoke(*args: str) -> tuple[int, str, str]:
    group = cli.AffidavitGroup(name="affidavit", params=cli.main.params, callback=cli.main.callback,
                               commands={**cli.main.commands, **{c.name or "": c for c in cli_controls.COMMANDS}})
    res = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_coverage_command_formats(tmp_path: Path, lib: ControlLibrary) -> None:
    store = LocalStore.open(tmp_path / "store", create=True)
    now = datetime.now(UTC)
    add_run(store, art("bedrock/logging.json", [LOGGING], [finding(LOGGING, "pass", "us-east-1")],
                       at=now - timedelta(minutes=1)))
    (tmp_path / "soa.yaml").write_text("framework: iso42001\nrequirements:\n"
                                       "  - {id: A.10.4, applicable: no, justification: no customers}\n")
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("store: {path: ./store}\ncontrols:\n  soa: soa.yaml\n")
    code, out, err = invoke("--config", str(cfg), "coverage", "--framework", "iso42001")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("iso42001:A.6.2.8 "))
    assert "passing" in line and "CC-INFERENCE-LOGGING int=passing" in line
    assert "1 passing" in out and "1 not-applicable" in out and "72 missing" in out
    code, out, _ = invoke("--config", str(cfg), "coverage", "--framework", "eu-ai-act", "--format", "json")
    data = json.loads(out)
    art12 = next(r for r in data["frameworks"][0]["requirements"] if r["id"] == "eu-ai-act:Art.12")
    assert art12["status"] == "passing" and art12["newest"]["name"] == "bedrock/logging.json"
    assert data["controls"][LOGGING]["latest_findings"][0]["subject"] == "us-east-1"
    code, out, _ = invoke("--config", str(cfg), "coverage", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == sum(len(lib.requirements(f.id)) for f in lib.frameworks())
    row = next(r for r in rows if r["requirement"] == "iso27001:A.8.15")
    assert row["status"] == "partial" and row["pass"] == "1" and "CC-CLOUD-AUDIT-TRAIL (intersect: missing)" in row["controls"]
    add_run(store, art("typo.json", ["common:CC-AI-POLICI"], at=now - timedelta(minutes=1)))
    code, out, err = invoke("--config", str(cfg), "coverage")
    assert code == 0 and [x.split()[:2] for x in out.splitlines()[1:3]] == [["iso42001", "74"], ["iso27001", "127"]]
    assert "common:CC-AI-POLICI" in err and "count for nothing" in err
    today = f"{now:%Y-%m-%d}"
    code, out, _ = invoke("--config", str(cfg), "coverage", "--framework", "iso42001", "--period", f"{today}..{today}")
    assert code == 0 and "uncovered" in out
    code, _, err = invoke("--config", str(cfg), "coverage", "--period", "yesterday")
    assert code == 2 and "not a period" in err
    code, _, err = invoke("--config", str(cfg), "coverage", "--framework", "iso9001")
    assert code == 2 and "unknown framework 'iso9001'" in err
    (tmp_path / "soa.yaml").write_text("framework: iso42001\nrequirements:\n  - {id: A.10.9, applicable: yes}\n")
    code, _, err = invoke("--config", str(cfg), "coverage")
    assert code == 2 and "soa.yaml:3: requirements[0].id" in err
    cfg.write_text("store: {path: ./nostore}\n")
    code, _, err = invoke("--config", str(cfg), "coverage")
    assert code == 2 and "not an Affidavit store" in err
