"""End to end through the installed console script, in a temporary directory:
collect (first run creates config + key) -> export -> verify VALID; tampering -> INVALID."""

from __future__ import annotations

import json
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import affidavit_bin, make_repo

pytestmark = pytest.mark.slow

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
POLICY = f"""---
owner: Grace Hopper
approved_by: Board of Directors
approved_on: 2026-01-15
next_review: 2099-01-15
---
# AI policy

Models are approved before production. Legacy deploy key: {AWS_KEY}
"""


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([affidavit_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_first_run_collect_export_verify(tmp_path: Path, clean_env: dict[str, str]) -> None:
    work = make_repo(tmp_path / "work", {"docs/ai-policy.md": POLICY, "CODEOWNERS": "* @ml-platform\n",
                                         "src/train.py": "print('train')\n"})
    r = run(work, clean_env, "collect")
    assert r.returncode == 0, r.stderr
    # first run: config, key, public key and passphrase file created, and said so
    assert (work / "affidavit.yaml").is_file()
    assert "wrote the embedded default" in r.stderr
    pw = work / "affidavit.passphrase"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    assert str(pw) in r.stderr
    assert (work / "affidavit.key.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # the summary: what, which controls, where
    assert "ai-governance-docs" in r.stdout and "repo-history" in r.stdout
    assert "files/ai-governance-docs/docs/ai-policy.md" in r.stdout
    assert "common:CC-AI-POLICY" in r.stdout and "common:CC-CODE-REVIEW" in r.stdout
    assert f"evidence store: {work / 'affidavit-store'}" in r.stdout

    r = run(work, clean_env, "export", "--out", "audit.tar.gz")
    assert r.returncode == 0, r.stderr
    r = run(work, clean_env, "verify", "audit.tar.gz", "--key", "affidavit.pub.pem")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("VALID")
    assert "files/ai-governance-docs/docs/ai-policy.md" in r.stdout

    r = run(work, clean_env, "verify", "audit.tar.gz", "--key", "affidavit.pub.pem", "--json")
    report = json.loads(r.stdout)
    assert report["valid"] is True and report["failures"] == []
    names = {a["name"] for a in report["artefacts"]}
    assert {"files/ai-governance-docs/docs/ai-policy.md", "git/repo-history/commits.json",
            "git/repo-history/CODEOWNERS"} <= names

    # the control catalogs and mappings in force travel in the bundle, signed like every member
    with tarfile.open(work / "audit.tar.gz") as tf:
        members = set(tf.getnames())
    assert {"controls/builtin/common.yaml", "controls/builtin/iso42001.yaml"} <= members

    # the planted secret reached neither the store, nor the bundle, nor any output
    everything = b"".join(p.read_bytes() for p in (work / "affidavit-store").rglob("*") if p.is_file())
    with tarfile.open(work / "audit.tar.gz") as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m)
            everything += f.read() if f else b""
    assert AWS_KEY.encode() not in everything
    assert b"[REDACTED:aws-access-key-id]" in everything
    r2 = run(work, clean_env, "-vv", "evidence", "show", "files/ai-governance-docs/docs/ai-policy.md")
    assert r2.returncode == 0 and "aws-access-key-id" in r2.stdout
    assert AWS_KEY not in r.stdout + r.stderr + r2.stdout + r2.stderr

    # store maintenance
    assert run(work, clean_env, "store", "fsck", "--key", "affidavit.pub.pem").returncode == 0
    r = run(work, clean_env, "store", "reindex")
    assert r.returncode == 0 and "reindexed 2 run(s)" in r.stdout
    r = run(work, clean_env, "evidence", "list", "--json")
    assert len(json.loads(r.stdout)) == len(names)  # every artefact of both runs, once each

    # the public key printed is the one verify trusts
    r = run(work, clean_env, "keys", "export-public")
    assert r.returncode == 0 and r.stdout == (work / "affidavit.pub.pem").read_text()


def test_verify_refuses_without_trust_anchor_and_flags_tampering(tmp_path: Path, clean_env: dict[str, str]) -> None:
    work = make_repo(tmp_path / "w", {"model_card.md": "# Model card\n"})
    assert run(work, clean_env, "collect").returncode == 0
    assert run(work, clean_env, "export", "--out", "bundle.tar").returncode == 0

    r = run(work, clean_env, "verify", "bundle.tar")
    assert r.returncode == 2 and "no trust anchor" in r.stderr

    r = run(work, clean_env, "verify", "missing.tar.gz", "--key", "affidavit.pub.pem")
    assert r.returncode == 2

    # tamper with one artefact inside the tar: INVALID, exit 1, member named
    out = tmp_path / "tampered.tar"
    with tarfile.open(work / "bundle.tar") as src, tarfile.open(out, "w") as dst:
        victim = None
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if victim is None and m.name.startswith("artefacts/sha256/"):
                victim = m.name
                data = data[:-1] + bytes([data[-1] ^ 1])
            import io

            dst.addfile(m, io.BytesIO(data))
    r = run(work, clean_env, "verify", str(out), "--key", "affidavit.pub.pem")
    assert r.returncode == 1
    assert r.stdout.startswith("INVALID")
    assert victim is not None and victim in r.stdout


def _run_in_pty(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the CLI with stdin/stdout/stderr on a pseudo-terminal, as a person at a terminal would."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execve(affidavit_bin(), [affidavit_bin(), *args], {**env, "COLUMNS": "120", "TERM": "xterm"})
    import select
    import signal
    import time

    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def test_progress_bars_on_a_terminal(tmp_path: Path, clean_env: dict[str, str]) -> None:
    work = make_repo(tmp_path / "w", {"ai-policy.md": "# AI policy\n"})
    # at a terminal a first run would ask for the new key's passphrase; give it one
    clean_env = {**clean_env, "AFFIDAVIT_PASSPHRASE": "a passphrase for this test"}
    code, screen = _run_in_pty(work, clean_env, "collect")
    assert code == 0, screen
    assert "collecting" in screen or "artefacts" in screen  # the live progress line was drawn
    assert "\x1b[" in screen  # with terminal control sequences
    assert run(work, clean_env, "export", "--out", "b.tar.gz").returncode == 0
    code, screen = _run_in_pty(work, clean_env, "verify", "b.tar.gz", "--key", "affidavit.pub.pem")
    assert code == 0, screen
    assert "verifying" in screen and "VALID" in screen
    # and without a terminal, no control sequences reach a log or a pipe
    r = run(work, clean_env, "collect")
    assert r.returncode == 0 and "\x1b[" not in r.stdout + r.stderr
