"""`affidavit verify --max-*`: the reader's limits from the command line, and names printed safely."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_repo
from test_cli_errors import invoke


@pytest.fixture
def bundle(tmp_path: Path, clean_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    env = {**clean_env, "AFFIDAVIT_PASSPHRASE": "limits test"}
    work = make_repo(tmp_path / "w", {"ai-policy.md": "# AI policy\n"})
    assert invoke(work, env, "collect")[0] == 0
    assert invoke(work, env, "export", "--out", "b.tar")[0] == 0
    return work, env


def test_member_limit_from_the_command_line(bundle: tuple[Path, dict[str, str]]) -> None:
    import json

    work, env = bundle
    members = sum(1 for _ in __import__("tarfile").open(work / "b.tar").getmembers())
    code, out, err = invoke(work, env, "verify", "b.tar", "--key", "affidavit.pub.pem", "--max-members", str(members))
    assert code == 0, out + err
    code, out, err = invoke(work, env, "verify", "b.tar", "--key", "affidavit.pub.pem",
                            "--max-members", str(members - 1), "--json")
    assert code == 1
    reasons = " ".join(f["reason"] for f in json.loads(out)["failures"])
    assert str(members - 1) in reasons


def test_bad_limit_values_are_usage_errors(bundle: tuple[Path, dict[str, str]]) -> None:
    work, env = bundle
    code, _, err = invoke(work, env, "verify", "b.tar", "--key", "affidavit.pub.pem", "--max-json-depth", "0")
    assert code == 2 and "--max-json-depth" in err


def test_names_from_a_bundle_cannot_drive_the_auditors_terminal(tmp_path: Path, clean_env: dict[str, str]) -> None:
    env = {**clean_env, "AFFIDAVIT_PASSPHRASE": "escape test"}
    work = make_repo(tmp_path / "w", {"ai-policy\x1b[2Jwiped.md": "# AI policy\n"})
    assert invoke(work, env, "collect")[0] == 0
    assert invoke(work, env, "export", "--out", "b.tar")[0] == 0
    code, out, err = invoke(work, env, "verify", "b.tar", "--key", "affidavit.pub.pem")
    assert code == 0, out + err
    assert "\x1b" not in out
    assert "ai-policy\\x1b[2Jwiped.md" in out
