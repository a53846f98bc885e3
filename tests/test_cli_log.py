"""The log on the command line: `log checkpoint`, `log prove --from`, `verify --log-key --checkpoint`.

Proofs printed by `log prove` are checked with the independent RFC 9162
verifier of test_tlog.py. Exit codes: 0 ok, 1 inconsistent / INVALID, 2 usage or input errors.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_tlog import rfc_verify_consistency
from tlog_fixtures import LoggedStore, logged_store

from affidavit.agent.cli import main
from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.signing.tlog_note import Checkpoint, sign_checkpoint, verify_checkpoint


def invoke(cwd: Path, *args: str) -> tuple[int, str, str]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(main, list(args), env={"AFFIDAVIT_PASSPHRASE": ""}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return res.exit_code, res.stdout, res.stderr


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture
def work(tmp_path: Path) -> LoggedStore:
    ls = logged_store(tmp_path)
    (tmp_path / "affidavit.yaml").write_text("store:\n  path: ./store\n")
    ls.write_keys(tmp_path)
    return ls


def test_checkpoint_then_prove_consistency(work: LoggedStore) -> None:
    w = work.root
    work.collect(3)
    code, out, err = invoke(w, "log", "checkpoint")
    assert code == 0, err
    assert out == work.checkpoint() and verify_checkpoint(out, work.log_signer.public_key).size == 3
    (w / "q3.checkpoint").write_text(out)
    code, out, _ = invoke(w, "log", "checkpoint", "--json")
    data = json.loads(out)
    assert data["tree_size"] == 3 and data["checkpoint"] == work.checkpoint()
    assert data["log_id"] == work.log_signer.keyid and data["origin"] == "affidavit.local/affidavit-tests"
    work.collect(2)
    code, out, err = invoke(w, "log", "prove", "--from", "q3.checkpoint")
    assert code == 0, err
    proof = json.loads(out)
    new = verify_checkpoint(proof["checkpoint"], work.log_signer.public_key)
    old = verify_checkpoint((w / "q3.checkpoint").read_text(), work.log_signer.public_key)
    assert (proof["old"]["tree_size"], proof["new"]["tree_size"], new.size) == (3, 5, 5)
    assert base64.b64decode(proof["new"]["root_hash"]) == new.root
    hashes = [base64.b64decode(h) for h in proof["proof"]]
    assert rfc_verify_consistency(3, 5, old.root, new.root, hashes)
    assert not rfc_verify_consistency(3, 5, old.root, new.root, hashes[::-1])


def test_prove_refuses_checkpoints_the_log_does_not_extend(work: LoggedStore) -> None:
    w = work.root
    work.collect(4)
    origin = work.checkpoint().split("\n")[0]
    other = LocalSigner(generate_private_key())
    cases = {
        sign_checkpoint(Checkpoint(origin, 2, b"\7" * 32), other):
            "not a checkpoint of this log: signed by another key",
        sign_checkpoint(Checkpoint(origin, 2, b"\7" * 32), work.log_signer):
            "this log's first 2 entries no longer hash to the root in",
        sign_checkpoint(Checkpoint(origin, 9, b"\7" * 32), work.log_signer): "is newer than this log (size 4)",
        sign_checkpoint(Checkpoint("other.example/x", 2, b"\7" * 32), work.log_signer):
            "is a checkpoint of log 'other.example/x'",
    }
    for text, needle in cases.items():
        (w / "old.checkpoint").write_text(text)
        code, out, err = invoke(w, "log", "prove", "--from", "old.checkpoint")
        assert code == 1 and out == "" and needle in error_line(err)
    (w / "old.checkpoint").write_text("not a checkpoint")
    code, _, err = invoke(w, "log", "prove", "--from", "old.checkpoint")
    assert code == 2 and "old.checkpoint is not a signed checkpoint" in error_line(err)
    code, _, err = invoke(w, "log", "prove", "--from", "missing.checkpoint")
    assert code == 2 and "cannot read checkpoint missing.checkpoint" in error_line(err)


def test_log_commands_on_a_store_without_a_log(work: LoggedStore) -> None:
    code, _, err = invoke(work.root, "log", "checkpoint")
    assert code == 2 and "has no transparency log yet" in error_line(err)
    with work.store.lock(5):
        work.open_log().close()  # a log with nothing in it: the store has no runs to take in
    code, _, err = invoke(work.root, "log", "checkpoint")
    assert code == 2 and "has no entries yet" in error_line(err)
    work.collect(1, log=False)
    with work.store.lock(5):
        work.open_log().close()  # now it takes in the run signed before it
    code, out, _ = invoke(work.root, "log", "checkpoint")
    assert code == 0 and verify_checkpoint(out, work.log_signer.public_key).size == 1


def test_verify_with_log_key_and_checkpoint(work: LoggedStore) -> None:
    w = work.root
    work.collect(3)
    (w / "q3.checkpoint").write_text(work.checkpoint())
    work.collect(1)
    work.export(w / "audit.tar.gz")
    args = ["verify", "audit.tar.gz", "--key", "signer.pub.pem", "--log-key", "log.pub.pem"]
    code, out, err = invoke(w, *args, "--checkpoint", "q3.checkpoint")
    assert code == 0, out + err
    assert out.startswith("VALID") and "transparency log: verified (affidavit.local/affidavit-tests, 4 entries" in out
    assert "consistency with your checkpoint: verified from size 3" in out
    code, out, _ = invoke(w, *args, "--json")
    report = json.loads(out)
    assert report["log"]["status"] == "verified" and report["log"]["consistency"] == "not checked (no --checkpoint)"
    assert sorted(r["log_index"] for r in report["runs"]) == [0, 1, 2, 3]
    code, out, _ = invoke(w, "verify", "audit.tar.gz", "--key", "signer.pub.pem")
    assert code == 0 and "transparency log: not checked (no --log-key)" in out
    forked = sign_checkpoint(Checkpoint(work.checkpoint().split("\n")[0], 3, b"\7" * 32), work.log_signer)
    (w / "forked.checkpoint").write_text(forked)
    code, out, _ = invoke(w, *args, "--checkpoint", "forked.checkpoint")
    assert code == 1 and out.startswith("INVALID")
    assert "(--checkpoint): the bundle's log does not extend your checkpoint (size 3)" in out


def test_verify_log_usage_errors(work: LoggedStore) -> None:
    w = work.root
    work.collect(1)
    work.export(w / "audit.tar")
    (w / "q.checkpoint").write_text(work.checkpoint())
    code, _, err = invoke(w, "verify", "audit.tar", "--key", "signer.pub.pem", "--checkpoint", "q.checkpoint")
    assert code == 2 and "--checkpoint needs --log-key" in error_line(err)
    base = ["verify", "audit.tar", "--key", "signer.pub.pem", "--log-key", "log.pub.pem"]
    code, _, err = invoke(w, *base, "--checkpoint", "nope.checkpoint")
    assert code == 2 and "cannot read checkpoint nope.checkpoint" in error_line(err)
    (w / "bin.checkpoint").write_bytes(b"\xff\xfe")
    code, _, err = invoke(w, *base, "--checkpoint", "bin.checkpoint")
    assert code == 2 and "not a checkpoint (not UTF-8 text)" in error_line(err)
    code, _, err = invoke(w, "verify", "audit.tar", "--key", "signer.pub.pem", "--log-key", "missing.pem")
    assert code == 2 and "missing.pem: No such file or directory" in error_line(err)


def test_verify_a_store_checks_its_log(work: LoggedStore) -> None:
    w = work.root
    work.collect(2)
    (w / "q.checkpoint").write_text(work.checkpoint())
    work.collect(1)
    code, out, err = invoke(w, "verify", "store", "--key", "signer.pub.pem", "--log-key", "log.pub.pem",
                            "--checkpoint", "q.checkpoint")
    assert code == 0 and out.startswith("VALID"), out + err
    (w / "other.pub.pem").write_bytes((w / "signer.pub.pem").read_bytes())
    code, out, _ = invoke(w, "verify", "store", "--key", "signer.pub.pem", "--log-key", "other.pub.pem")
    assert code == 1 and "not your --log-key" in out
    forked = sign_checkpoint(Checkpoint(work.checkpoint().split("\n")[0], 2, b"\7" * 32), work.log_signer)
    (w / "forked.checkpoint").write_text(forked)
    code, out, _ = invoke(w, "verify", "store", "--key", "signer.pub.pem", "--log-key", "log.pub.pem",
                          "--checkpoint", "forked.checkpoint")
    assert code == 1 and "the store's log does not extend your checkpoint" in out
