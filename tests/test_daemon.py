"""The daemon runs each source on its schedule, survives a failing source, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import affidavit_bin, make_repo

from affidavit.agent.daemon import trigger_for

pytestmark = pytest.mark.slow

CONFIG = """
store:
  path: ./store
sources:
  - name: docs
    type: files
    schedule: "every 1s"
    paths: ["*.md"]
  - name: broken
    type: git
    schedule: "every 1s"
    repo: {nowhere}
"""


def test_daemon_schedules_survives_failures_and_stops_on_sigterm(tmp_path: Path, clean_env: dict[str, str]) -> None:
    work = make_repo(tmp_path / "w", {"ai-policy.md": "# policy\n"})
    nowhere = tmp_path / "not-a-repo"  # outside the repository, so git cannot find one above it
    nowhere.mkdir()
    env = {**clean_env, "AFFIDAVIT_PASSPHRASE": "daemon test passphrase"}
    assert subprocess.run([affidavit_bin(), "init"], cwd=work, env=env, capture_output=True).returncode == 0
    (work / "affidavit.yaml").write_text(CONFIG.format(nowhere=nowhere))
    proc = subprocess.Popen([affidavit_bin(), "daemon"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    health_path = work / "affidavit-health.json"
    try:
        deadline = time.monotonic() + 120  # generous: CI machines can be loaded
        runs: list[str] = []
        health: dict = {}
        while time.monotonic() < deadline:
            runs = [p.name for p in (work / "store" / "attestations").glob("*.dsse.json")]
            health = json.loads(health_path.read_text()) if health_path.exists() else {}
            ran = {n: h.get("last_run") for n, h in health.get("sources", {}).items()}
            if len(runs) >= 3 and ran.get("docs") and ran.get("broken"):
                break
            time.sleep(0.2)
        assert len(runs) >= 3, "the docs source did not run on its 1 s schedule"
        assert health["sources"]["docs"]["status"] == "signed"
        assert health["sources"]["broken"]["status"] == "failed"
        assert "not a git repository" in health["sources"]["broken"]["error"]
        assert proc.poll() is None  # a failing source did not stop the daemon
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a hung daemon behind
            out, err = proc.communicate()
            raise AssertionError(f"the daemon did not stop within 60 s of SIGTERM: {err}") from None
    assert proc.returncode == 0, err
    # stopped cleanly: the store is consistent, no half-written run
    fsck = subprocess.run([affidavit_bin(), "store", "fsck", "--key", "affidavit.pub.pem"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_triggers() -> None:
    assert trigger_for("every 90s").interval.total_seconds() == 90
    cron = trigger_for("0 3 * * *")
    assert str(cron) == "cron[month='*', day='*', day_of_week='*', hour='3', minute='0']"


@pytest.mark.timeout(60)
def test_sigterm_during_a_running_collection_waits_for_it_then_stops(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the job used to ask the scheduler for its next run time while shutdown held the
    scheduler's lock waiting for that job: SIGTERM during a collection hung the daemon."""
    import threading

    import affidavit.agent.daemon as daemon_mod
    from affidavit.agent.pipeline import RunResult
    from affidavit.agent.runner import CollectReport
    from affidavit.config.loader import load_config
    from affidavit.signing.keys import LocalSigner, generate_private_key

    (tmp_path / "affidavit.yaml").write_text(
        "sources:\n  - {name: docs, type: files, paths: ['*.md'], schedule: 'every 1h'}\n")
    loaded = load_config(tmp_path / "affidavit.yaml", cwd=tmp_path, env={})
    started, finished = threading.Event(), threading.Event()

    def slow_collect(loaded: object, signer: object, sources: list[object], **kw: object) -> CollectReport:
        started.set()
        time.sleep(1.0)  # SIGTERM arrives while this runs
        finished.set()
        return CollectReport(tmp_path, [RunResult("docs", "files", "empty")])

    monkeypatch.setattr(daemon_mod, "collect", slow_collect)
    d = daemon_mod.Daemon(loaded, LocalSigner(generate_private_key()), tmp_path / "health.json", {})
    threading.Thread(target=lambda: (started.wait(10), os.kill(os.getpid(), signal.SIGTERM)), daemon=True).start()
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        d.run()  # returns only after the running collection finished
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
    assert finished.is_set()
    health = json.loads((tmp_path / "health.json").read_text())
    assert health["sources"]["docs"]["status"] == "empty"
    assert health["sources"]["docs"]["next_run"]  # computed without the scheduler's lock
