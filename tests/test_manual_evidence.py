"""`affidavit evidence add`: a document a person provides is signed, stored, and counts in coverage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_errors import invoke


@pytest.fixture
def work(tmp_path: Path, clean_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    env = {**clean_env, "AFFIDAVIT_PASSPHRASE": "manual evidence test"}
    w = tmp_path / "w"
    w.mkdir()
    assert invoke(w, env, "init")[0] == 0
    (w / "affidavit.yaml").write_text("sources: []\n")
    (w / "review-2026.md").write_text("# Management review 2026\nAttendees: board.\n")
    return w, env


def test_added_document_is_signed_and_counts_in_three_frameworks(work: tuple[Path, dict[str, str]]) -> None:
    w, env = work
    code, out, err = invoke(w, env, "evidence", "add", "review-2026.md", "--control", "common:CC-MGMT-REVIEW",
                            "--note", "annual review signed off by the CEO", "--effective", "2026-01-01..2099-01-01",
                            "--by", "grace@example.org", "--json")
    assert code == 0, err
    run = json.loads(out)["runs"][0]
    assert run["source"] == "manual" and run["status"] == "signed"
    names = [a["name"] for a in run["artefacts"]]
    assert names == ["manual/review-2026.md", "manual/review-2026.md.record.json"]
    assert run["artefacts"][0]["controls"] == ["common:CC-MGMT-REVIEW"]
    # the record of who added it, when and why is signed in the same run
    code, record, _ = invoke(w, env, "evidence", "show", "manual/review-2026.md.record.json", "--content")
    rec = json.loads(record)
    assert rec["added_by"] == "grace@example.org" and rec["note"] == "annual review signed off by the CEO"
    assert rec["effective"] == {"from": "2026-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z"}
    # it counts in coverage like collected evidence: ISO 42001 9.3 (superset mapping) is evidenced
    code, out, err = invoke(w, env, "coverage", "--framework", "iso42001", "--format", "json")
    assert code == 0, err
    reqs = {r["id"]: r for r in json.loads(out)["frameworks"][0]["requirements"]}
    assert reqs["iso42001:9.3"]["status"] == "passing"
    assert reqs["iso42001:9.3"]["evidence_count"] == 1
    # and the store stays consistent and verifiable
    assert invoke(w, env, "store", "fsck", "--key", "affidavit.pub.pem")[0] == 0


@pytest.mark.parametrize("args,needle", [
    (["--control", "common:CC-MGMT-REVEIW"], "did you mean 'common:CC-MGMT-REVIEW'"),
    (["--control", "common:CC-MGMT-REVIEW", "--effective", "2026-01-01"], "FROM..TO"),
    (["--control", "common:CC-MGMT-REVIEW", "--effective", "2026-05-01..2026-01-01"], "ends before it starts"),
    (["--control", "common:CC-MGMT-REVIEW", "--ttl", "forever"], "not a duration"),
])
def test_bad_input_is_refused_and_nothing_signed(work: tuple[Path, dict[str, str]], args: list[str],
                                                 needle: str) -> None:
    w, env = work
    code, _, err = invoke(w, env, "evidence", "add", "review-2026.md", *args)
    assert code == 2
    assert needle in err
    assert not (w / "affidavit-store").exists()


def test_missing_file(work: tuple[Path, dict[str, str]]) -> None:
    w, env = work
    code, _, err = invoke(w, env, "evidence", "add", "nope.pdf", "--control", "common:CC-MGMT-REVIEW")
    assert code == 2 and "'nope.pdf' does not exist" in err
