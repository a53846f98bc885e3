"""Bad input: each a one-line error naming the problem, exit 2, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_repo

from affidavit.agent.cli import main
from affidavit.store.local import LocalStore


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def invoke(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
    return res.exit_code, res.stdout, res.stderr


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def env(clean_env: dict[str, str]) -> dict[str, str]:
    return {**clean_env, "AFFIDAVIT_PASSPHRASE": "correct horse battery staple"}


def configured(tmp_path: Path, env: dict[str, str], body: str) -> Path:
    work = tmp_path / "w"
    work.mkdir()
    (work / "policy.md").write_text("# AI policy\n")
    code, _, err = invoke(work, env, "init")
    assert code == 0, err
    (work / "affidavit.yaml").write_text(body)
    return work


FILES_SOURCE = "sources:\n  - name: docs\n    type: files\n    paths: ['*.md']\n"


@pytest.mark.parametrize("body,needle", [
    ("sources: [\n", "malformed YAML"),
    ("sources:\n  - name: x\n    type: jira-cloud\n", "unknown source type 'jira-cloud'"),
    ("sources:\n  - name: x\n    type: git\n    repo: ${NOT_SET_ANYWHERE}\n", "NOT_SET_ANYWHERE is not set"),
])
def test_config_errors(tmp_path: Path, env: dict[str, str], body: str, needle: str) -> None:
    work = configured(tmp_path, env, body)
    before = snapshot(work)
    code, out, err = invoke(work, env, "collect")
    assert code == 2
    assert needle in one_line_error(err)
    assert snapshot(work) == before
    assert not (work / "affidavit-store").exists()


def test_wrong_passphrase(tmp_path: Path, env: dict[str, str]) -> None:
    work = configured(tmp_path, env, FILES_SOURCE)
    before = snapshot(work)
    code, _, err = invoke(work, {**env, "AFFIDAVIT_PASSPHRASE": "wrong"}, "collect")
    assert code == 2
    assert "wrong passphrase for signing key" in one_line_error(err)
    assert snapshot(work) == before


def test_missing_passphrase_unattended(tmp_path: Path, env: dict[str, str], clean_env: dict[str, str]) -> None:
    work = configured(tmp_path, env, FILES_SOURCE)
    code, _, err = invoke(work, clean_env, "collect")
    assert code == 2
    assert "no passphrase for signing key" in one_line_error(err)


def test_unreadable_store(tmp_path: Path, env: dict[str, str]) -> None:
    work = configured(tmp_path, env, "store:\n  path: ./not-a-dir\n" + FILES_SOURCE)
    (work / "not-a-dir").write_text("I am a file\n")
    before = snapshot(work)
    code, _, err = invoke(work, env, "collect")
    assert code == 2
    assert "not-a-dir" in one_line_error(err)
    assert snapshot(work) == before


def test_second_concurrent_collect_waits_then_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    work = configured(tmp_path, env, "store:\n  lock_timeout: 0.3\n" + FILES_SOURCE)
    assert invoke(work, env, "collect")[0] == 0
    store_root = work / "affidavit-store"
    before = snapshot(store_root)
    holder = LocalStore.open(store_root)
    with holder.lock(timeout=1):
        code, _, err = invoke(work, env, "collect")
    assert code == 2
    assert "busy" in one_line_error(err)
    after = snapshot(store_root)
    after.pop("lock", None), before.pop("lock", None)
    assert after == before


def test_unknown_source_name(tmp_path: Path, env: dict[str, str]) -> None:
    work = configured(tmp_path, env, FILES_SOURCE)
    code, _, err = invoke(work, env, "collect", "--source", "nope")
    assert code == 2
    assert "no source named 'nope'" in one_line_error(err)


def test_failing_source_exit_1_others_stored(tmp_path: Path, env: dict[str, str]) -> None:
    body = FILES_SOURCE + "  - name: history\n    type: git\n    repo: ./not-a-repo\n"
    work = configured(tmp_path, env, body)
    (work / "not-a-repo").mkdir()
    code, out, err = invoke(work, env, "collect", "--json")
    assert code == 1
    import json

    report = json.loads(out)
    status = {r["source"]: r["status"] for r in report["runs"]}
    assert status == {"docs": "signed", "history": "failed"}
    assert "not a git repository" in next(r["error"] for r in report["runs"] if r["source"] == "history")


def test_init_refuses_to_overwrite(tmp_path: Path, env: dict[str, str]) -> None:
    work = configured(tmp_path, env, FILES_SOURCE)
    code, _, err = invoke(work, env, "init")
    assert code == 2
    assert "already exists" in err


def test_verify_usage_errors(tmp_path: Path, env: dict[str, str]) -> None:
    code, _, err = invoke(tmp_path, env, "verify", "x.tar.gz")
    assert code == 2 and "no trust anchor" in one_line_error(err)
    (tmp_path / "k.pem").write_text("not a key")
    code, _, err = invoke(tmp_path, env, "verify", "x.tar.gz", "--key", "k.pem")
    assert code == 2 and "not a PEM public key" in one_line_error(err)


def test_git_repo_default_includes_history(tmp_path: Path, env: dict[str, str]) -> None:
    work = make_repo(tmp_path / "repo", {"README.md": "hi\n"})
    code, out, err = invoke(work, env, "collect", "--json")
    assert code == 0, err
    import json

    runs = {r["source"]: r for r in json.loads(out)["runs"]}
    assert runs["repo-history"]["status"] == "signed"
    assert runs["ai-governance-docs"]["status"] == "empty"  # no governance documents here: nothing to sign
