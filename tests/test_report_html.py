"""The HTML coverage report: self-contained, escaped, counts equal to the JSON coverage, rendered in Chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sqlite3
import struct
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from affidavit.agent import cli, cli_controls
from affidavit.agent.coverage import Coverage, compute_coverage
from affidavit.agent.coverage_report import coverage_json
from affidavit.agent.report_html import cited_evidence, evidence_details, render_html, report_controls
from affidavit.agent.soa import parse_soa
from affidavit.config.catalog import ControlLibrary, load_library
from affidavit.errors import StoreError
from affidavit.store.base import ArtefactRecord, RunRecord
from affidavit.store.local import LocalStore

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
LOGGING, APPROVAL, POLICY, IAM = ("common:CC-INFERENCE-LOGGING", "common:CC-MODEL-APPROVAL", "common:CC-AI-POLICY",
                                  "common:CC-IAM-ACCESS")
EVIL_NAME = "<script>document.body.setAttribute('data-pwned','1')</script>x.json"
EVIL_SUBJECT = "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">"
EVIL_REASON = "access denied </td></tr></table><b>bold</b>"
KEY_A, KEY_B = "a1" * 8, "b2" * 8


def art(name: str, controls: Sequence[str], findings: Sequence[dict[str, Any]] = (), *, at: datetime = NOW - timedelta(hours=1),
        ttl: str | None = "P1D", eff_to: datetime | None = None) -> ArtefactRecord:
    return ArtefactRecord(run_id="", digest=hashlib.sha256(f"{name}@{at}".encode()).hexdigest(), name=name,
                          media_type="application/json", size=42, collector="files", collected_at=at,
                          controls=tuple(controls), findings=tuple(findings), effective_to=eff_to, ttl=ttl)


def signed_run(store: LocalStore, n: int, keyid: str, *arts: ArtefactRecord) -> str:
    started = min(a.collected_at for a in arts)
    run_id = f"{started:%Y%m%dT%H%M%S}Z-src-{n:06d}"
    records = tuple(ArtefactRecord(**{**a.__dict__, "run_id": run_id}) for a in arts)
    store.index_run(RunRecord(run_id=run_id, source="src", source_type="files", started=started, finished=started,
                              keyid=keyid, statement_sha256=hashlib.sha256(run_id.encode()).hexdigest(),
                              artefact_count=len(records), artefacts=records))
    return run_id


@dataclass
class Scenario:
    store: LocalStore
    lib: ControlLibrary
    cov: Coverage
    runs: dict[str, str]  # label -> run id
    arts: dict[str, ArtefactRecord]


def scenario(root: Path, frameworks: list[str] | None = None, now: datetime = NOW) -> Scenario:
    """A store with passing, failing, stale and unknown evidence (one artefact named like a script) and an SoA."""
    store = LocalStore.open(root, create=True)
    lib = load_library()
    arts = {
        "logging": art("bedrock/logging.json", [LOGGING], [{"control": LOGGING, "result": "pass",
                                                           "subject": "us-east-1", "reason": "capture on"}],
                       eff_to=NOW + timedelta(days=30)),
        "approval": art("mlflow/credit-risk/v7.json", [APPROVAL], [{"control": APPROVAL, "result": "fail",
                                                                  "subject": "credit-risk v7", "reason": "no approval"}]),
        "policy": art("docs/ai-policy.md", [POLICY], at=NOW - timedelta(days=3)),
        "evil": art(EVIL_NAME, [IAM], [{"control": IAM, "result": "unknown", "subject": EVIL_SUBJECT,
                                        "reason": EVIL_REASON}]),
    }
    runs = {"logging": signed_run(store, 1, KEY_A, arts["logging"]),
            "approval": signed_run(store, 2, KEY_B, arts["approval"]),
            "policy": signed_run(store, 3, KEY_A, arts["policy"]),
            "evil": signed_run(store, 4, KEY_B, arts["evil"])}
    soa = parse_soa("framework: iso42001\nrequirements:\n  - {id: A.10.4, applicable: no, "
                    "justification: 'No customers <yet>'}\n", "soa.yaml", lib)
    cov = compute_coverage(lib, store.index_path, frameworks, now=now, soas=[soa])
    return Scenario(store, lib, cov, runs, arts)


def page_for(s: Scenario) -> str:
    details = evidence_details(s.store.index_path, cited_evidence(report_controls(s.cov)).values())
    return render_html(s.cov, details)


class Elements(HTMLParser):
    """Every element's attributes, and the text of elements that have an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag not in ("br", "meta", "img", "input", "link", "hr"):
            self._open.append((tag, a.get("id")))
            if a.get("id"):
                self.text[a["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, eid in self._open:
            if eid:
                self.text[eid] += data

    def with_attr(self, name: str, tag: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.elements if name in a and (tag is None or t == tag)]


def parse(page: str) -> Elements:
    p = Elements()
    p.feed(page)
    p.close()
    return p


def assert_counts_match(doc: Elements, data: dict[str, Any]) -> None:
    """The page's numbers, heatmap, lists and drill-downs say what the JSON coverage says."""
    assert [a["data-framework"] for a in doc.with_attr("data-framework", "section")] == \
        [f["id"] for f in data["frameworks"]]
    for fw in data["frameworks"]:
        fid = fw["id"]
        assert doc.text[f"total-{fid}"].strip() == str(len(fw["requirements"]))
        for status, n in fw["summary"].items():
            cell = next(a for a in doc.with_attr("data-count", "td") if a.get("id") == f"count-{fid}-{status}")
            assert (cell["data-framework"], cell["data-status"], cell["data-count"]) == (fid, status, str(n))
            assert doc.text[f"count-{fid}-{status}"].strip() == str(n)
        expected = {r["id"]: r["status"] for r in fw["requirements"]}
        cells = {a["data-requirement"]: a["data-status"] for a in doc.with_attr("data-requirement", "a")
                 if "cell" in a.get("class", "") and a["data-requirement"].startswith(fid + ":")}
        assert cells == expected
        drill = {a["data-requirement"]: a["data-status"] for a in doc.with_attr("data-requirement", "details")
                 if a["data-requirement"].startswith(fid + ":")}
        assert drill == expected
        assert Counter(cells.values()) == Counter({k: v for k, v in fw["summary"].items() if v})
        for status in ("stale", "missing", "failing"):
            listed = next(a for a in doc.with_attr("data-count", "section") if a.get("id") == f"{status}-{fid}")
            assert listed["data-count"] == str(fw["summary"][status])


# -- the page as written --------------------------------------------------------------------------

def test_page_counts_equal_the_json_coverage(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    data = coverage_json(s.cov)
    assert_counts_match(parse(page_for(s)), data)
    iso = next(f for f in data["frameworks"] if f["id"] == "iso42001")["summary"]
    assert (iso["passing"], iso["failing"], iso["not-applicable"]) == (1, 1, 1) and iso["stale"] >= 1


def test_user_framework_without_groups(tmp_path: Path) -> None:
    user = tmp_path / "fw.yaml"
    user.write_text("framework: {id: acme, title: 'ACME <AI> rules', source: internal}\n"
                    "requirements: [{id: R-1, title: One}, {id: '2', title: Two}]\n"
                    f"mappings: [{{from: '{LOGGING}', to: 'acme:R-1', relationship: equal}}]\n")
    s = scenario(tmp_path / "store")
    lib = load_library([user])
    cov = compute_coverage(lib, s.store.index_path, ["acme"], now=NOW)
    page = render_html(cov, evidence_details(s.store.index_path, cited_evidence(report_controls(cov)).values()))
    assert_counts_match(parse(page), coverage_json(cov))
    assert 'class="group"' not in page and "ACME &lt;AI&gt; rules" in page
    assert 'data-requirement="acme:R-1" data-status="passing"' in page and 'id="req-acme:2"' in page


def test_page_is_self_contained_and_pins_its_only_script_and_style(tmp_path: Path) -> None:
    page = page_for(scenario(tmp_path / "store"))
    assert re.search(r"<link\b|@import|url\(|<iframe|<object|<embed", page) is None
    refs = re.findall(r'\b(?:src|href|action)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith("#") for r in refs), [r for r in refs if not r.startswith("#")][:5]
    assert "http://" not in page and "https://" not in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp is not None and "default-src 'none'" in csp.group(1)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(scripts) == 1 and len(styles) == 1 and page.count("<script") == 1
    for body, directive in ((scripts[0], "script-src"), (styles[0], "style-src")):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp.group(1)


def test_every_string_from_evidence_is_escaped(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    page = page_for(s)
    assert page.count("<script") == 1 and "<img" not in page and "<b>bold" not in page
    assert "&lt;script&gt;document.body.setAttribute(&#x27;data-pwned&#x27;,&#x27;1&#x27;)&lt;/script&gt;x.json" in page
    assert "&lt;img src=x onerror=&quot;" in page and "&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;" in page
    assert "No customers &lt;yet&gt;" in page  # SoA text from configuration too
    doc = parse(page)
    finding = next(a for a in doc.with_attr("data-result", "tr"))
    assert finding["data-result"] == "unknown"


def test_drill_down_shows_evidence_findings_and_signature(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    page = page_for(s)
    doc = parse(page)
    a = s.arts["approval"]
    row = next(x for x in doc.with_attr("data-digest", "tr") if x["data-digest"] == f"sha256:{a.digest}")
    text = doc.text[row["id"]]
    assert "mlflow/credit-risk/v7.json" in text and f"sha256:{a.digest}" in text
    assert f"signed in run {s.runs['approval']} by key {KEY_B}" in text
    assert "2025-06-15T11:00:00Z" in text and "fresh until 2025-06-16T11:00:00Z" in text
    logging = next(x for x in doc.with_attr("data-digest", "tr") if x["data-digest"] == f"sha256:{s.arts['logging'].digest}")
    assert "2025-07-15T12:00:00Z" in doc.text[logging["id"]]  # the end of the effective period
    stale = next(x for x in doc.with_attr("data-digest", "tr") if x["data-digest"] == f"sha256:{s.arts['policy'].digest}")
    assert "stale since 2025-06-13T12:00:00Z" in doc.text[stale["id"]]
    control = doc.text[f"ctl-{APPROVAL}"]
    assert "credit-risk v7" in control and "no approval" in control and f"by key {KEY_B}" in control
    req = doc.text["req-iso42001:A.6.2.5"]
    assert "failing" in req and APPROVAL in req
    assert f'href="#{row["id"]}"' in page  # findings link to the artefact row
    assert "not-applicable" in doc.text["req-iso42001:A.10.4"] and "No customers <yet>" in doc.text["req-iso42001:A.10.4"]


def test_evidence_details_from_the_index(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    refs = cited_evidence(report_controls(s.cov))
    details = evidence_details(s.store.index_path, refs.values())
    assert set(details) == set(refs) and len(details) == 4
    d = next(d for d in details.values() if d.ref.name == EVIL_NAME)
    assert (d.keyid, d.statement_sha256, d.source, d.media_type, d.size) == (
        KEY_B, hashlib.sha256(s.runs["evil"].encode()).hexdigest(), "src", "application/json", 42)
    assert d.signature == f"signed in run {s.runs['evil']} by key {KEY_B}"
    gone = next(iter(refs.values()))
    conn = sqlite3.connect(s.store.index_path)
    conn.execute("DELETE FROM artefacts WHERE run_id = ?", (gone.run_id,))
    conn.commit()
    conn.close()
    details = evidence_details(s.store.index_path, refs.values())
    assert len(details) == 3 and "not in the store index" in render_html(s.cov, details)
    with pytest.raises(StoreError, match="missing"):
        evidence_details(tmp_path / "nothing.db", refs.values())


# -- in a real browser ----------------------------------------------------------------------------

def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.fail("the HTML report tests need Debian's chromium: apt-get update && apt-get install -y chromium")
    return path


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
def test_rendered_page_in_chromium(tmp_path: Path) -> None:
    s = scenario(tmp_path / "store")
    report = tmp_path / "report.html"
    report.write_text(page_for(s), encoding="utf-8")
    res = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert res.returncode == 0 and "<html" in res.stdout, res.stderr[-2000:]
    dom = res.stdout
    assert 'data-script="ran"' in dom  # the page's own (hash-pinned) script ran ...
    assert "data-pwned" not in dom.replace("&#x27;data-pwned&#x27;", "").replace("'data-pwned'", "")  # ... no other
    doc = parse(dom)
    assert_counts_match(doc, coverage_json(s.cov))
    assert EVIL_NAME in doc.text[f"ctl-{IAM}"] and EVIL_SUBJECT in doc.text[f"ctl-{IAM}"]
    assert sum(1 for t, _ in doc.elements if t == "script") == 1 and not any(t == "img" for t, _ in doc.elements)
    shot = tmp_path / "report.png"
    res = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert png_size(shot) == (1280, 2000) and shot.stat().st_size > 50_000


# -- the command ----------------------------------------------------------------------------------

def invoke(*args: str) -> tuple[int, str, str]:
    group = cli.AffidavitGroup(name="affidavit", params=cli.main.params, callback=cli.main.callback,
                               commands={**cli.main.commands, **{c.name or "": c for c in cli_controls.COMMANDS}})
    res = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_coverage_command_writes_the_html_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    s = scenario(tmp_path / "store", now=now)
    s.store.close()
    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("store: {path: ./store}\n")
    out = tmp_path / "report.html"
    code, stdout, err = invoke("--config", str(cfg), "coverage", "--format", "html", "--out", str(out))
    assert code == 0 and stdout == "" and f"wrote {out}" in err
    page = out.read_text(encoding="utf-8")
    code, json_out, _ = invoke("--config", str(cfg), "coverage", "--format", "json")
    data = json.loads(json_out)
    assert_counts_match(parse(page), data)
    code, stdout, _ = invoke("--config", str(cfg), "coverage", "--framework", "eu-ai-act", "--format", "html")
    assert code == 0 and stdout.startswith("<!DOCTYPE html>")
    assert [a["data-framework"] for a in parse(stdout).with_attr("data-framework", "section")] == ["eu-ai-act"]
    code, _, err = invoke("--config", str(cfg), "coverage", "--format", "html", "--out", str(tmp_path / "no" / "r.html"))
    assert code == 2 and "cannot write" in err and "--out" in err
    monkeypatch.chdir(tmp_path)  # a relative --out is relative to the working directory
    code, _, err = invoke("--config", str(cfg), "coverage", "--format", "csv", "--out", "cov.csv")
    assert code == 0 and (tmp_path / "cov.csv").read_text().startswith("framework,requirement,")
