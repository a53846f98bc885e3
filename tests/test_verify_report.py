"""The verification report an auditor pastes into a working paper, and its JSON twin.

The human form lists, in order: the verdict, the signer keys (where each came from
and its validity), the evidence (runs, artefacts, time range), the controls covered
grouped by framework, the timestamps with their attested times, the transparency
log, every failure with its reason, then one line per artefact. `--json` carries the
same content. The control grouping is checked against the project's own control
library, loaded independently.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_timestamps_e2e import Work, make_work, run_ids, tsa_signing

from affidavit.config.catalog import STRONG, WEAK, load_library
from affidavit.signing.verify_report import group_controls
from tsa_server import TsaEndpoint
from tsa_server import tsa  # noqa: F401  (pytest fixture)

SECTIONS = ("signer keys:", "evidence:", "controls covered:", "timestamps:", "transparency log:", "artefacts:")


@dataclass
class Audit:
    work: Work
    text: list[str]  # the human report's lines
    report: dict[str, Any]  # the --json report


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory, tsa: TsaEndpoint) -> Iterator[Audit]:
    work = make_work(tmp_path_factory.mktemp("report"), tsa_signing(tsa))
    work.ok("collect")
    work.ok("export", "--out", "bundle")
    work.ok("keys", "trust-export", "--out", "trust.json", "--comment", "ACME")
    text = work.ok("verify", "bundle", "--trust", "trust.json").stdout.splitlines()
    code, report = work.verify_json("bundle", "--trust", "trust.json")
    assert code == 0
    yield Audit(work, text, report)


def section(lines: list[str], header: str) -> list[str]:
    """The header line and the indented lines under it."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_the_human_report_has_every_section_in_order(audit: Audit) -> None:
    lines = audit.text
    assert lines[0].startswith(f"VALID: {audit.work.dir / 'bundle'} (2 run(s), 2 artefact(s); bundle signed by ")
    positions = [next(i for i, line in enumerate(lines) if line.startswith(h)) for h in SECTIONS]
    assert positions == sorted(positions), lines
    assert not any("problem(s):" in line for line in lines)
    # the per-artefact lines come last
    artefacts = section(lines, "artefacts:")[1:]
    assert len(artefacts) == 2 and artefacts == lines[-2:]
    assert all(line.startswith("  ok       ") for line in artefacts)


def test_signer_keys_evidence_and_time_range(audit: Audit) -> None:
    report, lines = audit.report, audit.text
    keyid = audit.work.signer().keyid
    (key,) = report["keys"]
    assert key["keyid"] == keyid and key["source"] == "trust file" and key["revoked_at"] is None
    assert key["signed"][0] == "the bundle statement" and len(key["signed"]) == 3
    (key_line,) = section(lines, "signer keys:")[1:]
    assert key_line.startswith(f"  {keyid}  from trust file; no validity window")
    assert key_line.endswith(": signed the bundle statement, 2 run(s)")

    period = report["evidence_period"]
    runs = report["runs"]
    assert period == {"from": min(r["started"] for r in runs), "to": max(r["finished"] for r in runs)}
    assert report["artefact_count"] == len(report["artefacts"]) == 2
    (evidence,) = section(lines, "evidence:")
    assert evidence == (f"evidence: 2 run(s) (2 verified), 2 artefact(s) (2 verified), collected {period['from']} "
                        f"to {period['to']}")


def test_controls_are_grouped_by_framework_through_the_library(audit: Audit) -> None:
    report = audit.report
    named = sorted({c for a in report["artefacts"] for c in a["controls"]})
    assert report["controls"]["named"] == named
    assert {"common:CC-AI-POLICY", "common:CC-MODEL-CARD"} <= set(named)
    # the expectation, from the control library as the agent loads it (not from the report's code)
    library = load_library()
    expected: dict[str, set[str]] = {}
    for c in named:
        expected.setdefault(c.split(":")[0], set()).add(c)
        for m in library.mappings_from(c):
            if m.relationship in STRONG | WEAK:
                expected.setdefault(m.target.split(":")[0], set()).add(m.target)
    assert report["controls"]["by_framework"] == {k: sorted(v) for k, v in sorted(expected.items())}
    assert {"iso42001", "iso27001"} <= set(report["controls"]["by_framework"])
    assert sorted(report["controls"]["catalogs"]) == sorted(f.bundle_path for f in library.files)
    lines = section(audit.text, "controls covered:")
    assert lines[0] == (f"controls covered: {len(named)} named by verified evidence and the mappings in "
                        f"{len(library.files)} catalog(s) of the bundle (evidence offered, not a pass/fail verdict):")
    for framework, ids in report["controls"]["by_framework"].items():
        assert f"  {framework} ({len(ids)}): {', '.join(i.split(':', 1)[1] for i in ids)}" in lines


def test_timestamps_and_log_in_both_forms(audit: Audit) -> None:
    report = audit.report
    tokens = report["timestamps"]["tokens"]
    assert report["timestamps"]["status"] == "verified" and len(tokens) == 3
    lines = section(audit.text, "timestamps:")
    assert lines[0] == "timestamps: verified"
    for t in tokens:
        assert f"  {t['signature']}: its signature existed at {t['time']} (TSA {t['tsa']})" in lines
    log = report["log"]
    (head, consistency) = section(audit.text, "transparency log:")
    assert head == (f"transparency log: verified ({log['origin']}, {log['tree_size']} entries, "
                    f"root {log['root_hash'][:16]}…)")
    assert consistency == "  consistency with your checkpoint: not checked (no --checkpoint)"


def test_an_invalid_bundle_reports_every_failure_before_the_artefacts(audit: Audit, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(audit.work.dir / "bundle", bundle)
    target = next((bundle / "artefacts" / "sha256").iterdir())
    target.write_bytes(target.read_bytes() + b"tampered")
    (bundle / "controls" / "builtin" / "soc2.yaml").write_text("controls: []\n")  # a changed catalog
    res = audit.work.run("verify", str(bundle), "--trust", "trust.json")
    assert res.code == 1
    lines = res.stdout.splitlines()
    assert lines[0].startswith("INVALID: ")
    code, report = audit.work.verify_json(str(bundle), "--trust", "trust.json")
    assert code == 1
    problems = next(i for i, line in enumerate(lines) if line.endswith("problem(s):"))
    assert lines[problems] == f"{len(report['failures'])} problem(s):"
    assert problems < lines.index("artefacts:")
    for f in report["failures"]:
        assert f"  {f['member']}: {f['reason']}" in lines[problems + 1:lines.index("artefacts:")]
    members = {f["member"] for f in report["failures"]}
    assert f"artefacts/sha256/{target.name}" in members and "controls/builtin/soc2.yaml" in members
    bad = [a for a in report["artefacts"] if a["digest"] == f"sha256:{target.name}"]
    assert bad and not any(a["ok"] for a in bad)
    assert any(line.startswith("  INVALID  ") and target.name[:12] in line for line in lines)
    # a changed catalog is not used to group controls; the bad artefact's controls count no more
    assert "controls/builtin/soc2.yaml" not in report["controls"]["catalogs"]
    good = {c for a in report["artefacts"] if a["ok"] for c in a["controls"]}
    assert set(report["controls"]["named"]) == good


def test_a_bundle_without_timestamps_or_log_key(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect", "--source", "policies")
    work.ok("export", "--out", "bundle")
    res = work.ok("verify", "bundle", "--key", "affidavit.pub.pem")
    lines = res.stdout.splitlines()
    assert "timestamps: absent (no signature in the bundle carries an RFC 3161 timestamp)" in lines
    assert any(line.startswith("transparency log: not checked (no --log-key) (") for line in lines)
    (key_line,) = section(lines, "signer keys:")[1:]
    assert key_line.startswith(f"  {work.signer().keyid}  from --key; no validity window")
    code, report = work.verify_json("bundle", "--key", "affidavit.pub.pem")
    assert report["timestamps"] == {"status": "absent (no signature in the bundle carries an RFC 3161 timestamp)",
                                    "tokens": []}
    assert report["keys"][0]["source"] == "--key" and len(run_ids(work.dir / "bundle")) == 1


# ---------------------------------------------------------------- the grouping rule


CATALOG = b"""
controls:
- id: common:CC-A
  mappings:
  - {target: fw1:R-1, relationship: equal}
  - {target: fw1:R-2, relationship: subset}
  - {target: fw2:R-9, relationship: related}
- id: common:CC-B
  mappings:
  - {target: fw2:R-3, relationship: intersect}
mappings:
- {from: fw1:R-1, to: fw3:X-1, relationship: equal}
- {from: common:CC-A, to: fw3:X-2, relationship: superset}
"""


def test_group_controls_follows_counted_mappings_of_common_controls_only() -> None:
    report = group_controls(["common:CC-A", "fw1:R-7", "common:CC-A"], [("controls/builtin/c.yaml", CATALOG)])
    assert report.named == ("common:CC-A", "fw1:R-7")
    # "related" is not counted, CC-B is not named, and fw1:R-1 -> fw3:X-1 is a crosswalk: not followed
    assert report.by_framework == {"common": ("common:CC-A",), "fw1": ("fw1:R-1", "fw1:R-2", "fw1:R-7"),
                                   "fw3": ("fw3:X-2",)}
    assert report.catalogs == ("controls/builtin/c.yaml",)


def test_a_later_catalog_restating_a_mapping_replaces_it() -> None:
    user = b"mappings:\n- {from: common:CC-A, to: fw1:R-2, relationship: related}\n"
    report = group_controls(["common:CC-A"], [("controls/builtin/c.yaml", CATALOG), ("controls/user/u.yaml", user)])
    assert report.by_framework["fw1"] == ("fw1:R-1",)


@pytest.mark.parametrize("data", [b"{unclosed", b"- a list\n", b"\xff\xfe", b"controls: 7\nmappings: {a: 1}\n",
                                  b"controls:\n- id: 5\n  mappings: [{target: [1], relationship: equal}]\n"])
def test_unreadable_or_odd_catalogs_are_skipped(data: bytes) -> None:
    report = group_controls(["common:CC-A"], [("controls/user/odd.yaml", data)])
    assert report.by_framework == {"common": ("common:CC-A",)}


def test_no_catalog_groups_by_prefix() -> None:
    report = group_controls(["iso42001:A.6.2.5", "common:CC-X", "eu-ai-act:Art.12"], [])
    assert report.by_framework == {"common": ("common:CC-X",), "eu-ai-act": ("eu-ai-act:Art.12",),
                                   "iso42001": ("iso42001:A.6.2.5",)}
    assert report.to_json() == {"named": ["common:CC-X", "eu-ai-act:Art.12", "iso42001:A.6.2.5"],
                                "by_framework": {"common": ["common:CC-X"], "eu-ai-act": ["eu-ai-act:Art.12"],
                                                 "iso42001": ["iso42001:A.6.2.5"]}, "catalogs": []}


def test_the_json_report_round_trips(audit: Audit) -> None:
    assert json.loads(json.dumps(audit.report)) == audit.report
    assert set(audit.report) >= {"valid", "bundle", "keys", "evidence_period", "artefact_count", "controls",
                                 "timestamps", "log", "failures", "runs", "artefacts", "signer_keyids"}
