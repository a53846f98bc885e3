"""The log in the store: appends, recovery, damage, the pipeline's commit order and crashes at every step.

Crashes are real: a child process runs a collection and dies with ``os._exit``
at a chosen point (no finally blocks, no flushing); the next collection must
find the store and the log in agreement, and a bundle exported then must verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tlog_fixtures import LoggedStore, load_signer, logged_store, reasons, save_signer

from affidavit.errors import ConfigError, PassphraseError, SigningKeyError, StoreError
from affidavit.signing.keys import LocalSigner, generate_private_key, keyid_of, save_private_key
from affidavit.signing.tlog import leaf_hash, verify_consistency, verify_inclusion
from affidavit.signing.tlog_note import Checkpoint, sign_checkpoint, verify_checkpoint
from affidavit.signing.verify import verify_bundle
from affidavit.store.tlog_fsck import check_store_log, fsck_log
from affidavit.store.tlog_files import node_position
from affidavit.store.tlog_store import LogStore, Pending

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
TESTS = Path(__file__).parent


def open_writer(ls: LoggedStore, **kw: object) -> LogStore:
    args: dict[str, object] = dict(origin=None, default_origin="affidavit.local/t", now=T0)
    args.update(kw)
    return LogStore.open_for_append(ls.store.root, ls.log_signer.public_key, **args)  # type: ignore[arg-type]


def envelopes(ls: LoggedStore) -> dict[str, dict[str, object]]:
    return {a.run.run_id: a.document for a in map(ls.store.read_attestation, ls.store.attestation_files())}


# -- the files ----------------------------------------------------------------------------------


def test_appends_survive_reopening_and_prove(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        assert (log.size, log.checkpoint) == (0, None)
        bodies = [f"body {i}".encode() for i in range(37)]
        for i in range(0, 37, 5):  # batches of up to five, one checkpoint each
            log.append([(f"run{j}", bodies[j], 1000 + j) for j in range(i, min(i + 5, 37))], ls.log_signer)
        roots = {n: log.root_at(n) for n in range(38)}
    with LogStore.open(ls.store.root) as log:
        assert log.size == 37 and verify_checkpoint(log.checkpoint or "", ls.log_signer.public_key).size == 37
        assert log.record(11).run_id == "run11" and log.record(11).body == bodies[11]
        assert [r.index for r in log.records()] == list(range(37))
        assert log.leaves_bytes() == b"".join(leaf_hash(b) for b in bodies)
        for i in range(37):
            verify_inclusion(leaf_hash(bodies[i]), i, 37, log.inclusion_proof(i), log.root)
        for m in range(38):
            verify_consistency(m, 37, log.consistency_proof(m), roots[m], log.root)
        meta = json.loads((ls.store.root / "log" / "log.json").read_text())
        assert meta["origin"] == "affidavit.local/t" and meta["log_id"] == keyid_of(ls.log_signer.public_key)
        with pytest.raises(StoreError, match="read-only"):
            log.append([("x", b"x", 1)], ls.log_signer)


def test_uncommitted_tails_are_cut_on_open(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        log.append([("a", b"a", 1), ("b", b"b", 2), ("c", b"c", 3)], ls.log_signer)
        checkpoint = log.checkpoint
    d = ls.store.root / "log"
    sizes = {n: (d / n).stat().st_size for n in ("leaves.bin", "nodes.bin", "entries.jsonl", "offsets.bin")}
    for name in sizes:  # what a process that died mid-append leaves behind
        with (d / name).open("ab") as f:
            f.write(b"\xff" * 45)
    (d / ".tmp-checkpoint.dead").write_text("half")
    with LogStore.open(ls.store.root) as reader:  # a reader ignores what lies past the checkpoint
        assert reader.size == 3 and reader.checkpoint == checkpoint
    with open_writer(ls) as log:
        assert {n: (d / n).stat().st_size for n in sizes} == sizes
        assert not (d / ".tmp-checkpoint.dead").exists()
        log.append([("d", b"d", 4)], ls.log_signer)
        verify_inclusion(leaf_hash(b"d"), 3, 4, log.inclusion_proof(3), log.root)


def test_a_failed_append_commits_nothing(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        log.append([("a", b"a", 1)], ls.log_signer)
        before = (log.size, log.root, log.leaves_bytes())
        other = LocalSigner(generate_private_key())
        with pytest.raises(StoreError, match="not this log's key"):
            log.append([("b", b"b", 2)], other)

        class BadSigner:  # claims the log key, signs garbage: must not commit
            keyid, public_key = ls.log_signer.keyid, ls.log_signer.public_key

            def sign(self, data: bytes) -> bytes:
                return other.sign(data)

        with pytest.raises(SigningKeyError, match="checkpoint its own public key rejects"):
            log.append([("b", b"b", 2)], BadSigner())
        assert (log.size, log.root, log.leaves_bytes()) == before
        assert (ls.store.root / "log" / "leaves.bin").stat().st_size == 32


def test_damaged_logs_are_refused_with_the_reason(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        log.append([(f"r{i}", bytes([i]), i) for i in range(6)], ls.log_signer)
        good_cp = log.checkpoint or ""
    d = ls.store.root / "log"
    leaves = (d / "leaves.bin").read_bytes()
    (d / "leaves.bin").write_bytes(leaves[:-32])
    with pytest.raises(StoreError, match="damaged: its checkpoint says 6 entries"):
        LogStore.open(ls.store.root)
    (d / "leaves.bin").write_bytes(leaves[:40] + bytes([leaves[40] ^ 1]) + leaves[41:])  # a rewritten leaf
    with LogStore.open(ls.store.root) as log:  # opening reads the cached subtrees only (O(log n))...
        with pytest.raises(StoreError, match="leaves.bin does not hash to the root"):
            log.checked_leaves()  # ...export and fsck read every leaf
        with pytest.raises(StoreError, match="does not match its leaf hash"):
            log.record(1)
    assert "does not hash to the root" in fsck_log(ls.store.root, {})[0].problem
    nodes = (d / "nodes.bin").read_bytes()
    top = 32 * node_position(2, 0)  # the subtree of leaves 0-3, which the root of 6 is made from
    (d / "nodes.bin").write_bytes(nodes[:top] + bytes([nodes[top] ^ 1]) + nodes[top + 1:])
    with pytest.raises(StoreError, match="do not hash to the root"):
        LogStore.open(ls.store.root)
    (d / "nodes.bin").write_bytes(nodes)
    (d / "leaves.bin").write_bytes(leaves)
    forged = sign_checkpoint(Checkpoint("affidavit.local/t", 6, LogStore.open(ls.store.root).root),
                             LocalSigner(generate_private_key()))
    (d / "checkpoint").write_text(forged)
    with pytest.raises(StoreError, match="not valid: signed by another key"):
        LogStore.open(ls.store.root)
    (d / "checkpoint").write_text(good_cp)
    meta = json.loads((d / "log.json").read_text())
    (d / "log.json").write_text(json.dumps({**meta, "log_id": "00" * 32}))
    with pytest.raises(StoreError, match="log_id is not the id of its public key"):
        LogStore.open(ls.store.root)
    (d / "log.json").write_text("{")
    with pytest.raises(StoreError, match="not a transparency log description"):
        LogStore.open(ls.store.root)
    with pytest.raises(StoreError, match="no transparency log yet"):
        LogStore.open(tmp_path / "elsewhere")


def test_a_log_keeps_its_key_and_origin(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    open_writer(ls).close()
    other = LocalSigner(generate_private_key())
    with pytest.raises(StoreError, match=f"started with log key {ls.log_signer.keyid}.*holds key {other.keyid}"):
        LogStore.open_for_append(ls.store.root, other.public_key, origin=None, default_origin="x", now=T0)
    with pytest.raises(StoreError, match="is named 'affidavit.local/t', signing.log_origin says 'other.example/x'"):
        open_writer(ls, origin="other.example/x")
    open_writer(ls, origin="affidavit.local/t", default_origin="ignored.example").close()


# -- the pipeline: commit order, backfill, pending runs ----------------------------------------------


def test_collected_runs_are_logged_and_their_bundles_carry_the_entry(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    results = ls.collect(3)
    with LogStore.open(ls.store.root) as log:
        recs = list(log.records())
        assert [r.run_id for r in recs] == [r.run_id for r in results]
        assert not (ls.store.root / "log" / "pending.json").exists()
    for i, r in enumerate(results):
        assert r.attestation is not None
        bundle = json.loads(r.attestation.read_bytes())
        (entry,) = bundle["verificationMaterial"]["tlogEntries"]
        assert entry["logIndex"] == str(i) and entry["inclusionProof"]["treeSize"] == str(i + 1)  # as of its commit
    assert fsck_log(ls.store.root, envelopes(ls)) == []
    assert [p for p in ls.store.fsck([ls.signer.public_key]) if p.severity == "error"] == []


def test_runs_signed_before_the_log_started_are_logged_first(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    old = ls.collect(2, log=False)
    new = ls.collect(1)
    with LogStore.open(ls.store.root) as log:
        assert [r.run_id for r in log.records()] == [r.run_id for r in old + new]
    ls.export(tmp_path / "b")
    report = ls.verify(tmp_path / "b")
    assert report.valid, report.failures
    assert sorted(r.log_index or 0 for r in report.runs) == [0, 1, 2]


def test_runs_by_an_unknown_key_are_not_backfilled_and_verify_says_so(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    (old,) = ls.collect(1, log=False)
    ls.signer, first = LocalSigner(generate_private_key()), ls.signer  # a rotated key: the old one is not at hand
    ls.collect(1)
    with LogStore.open(ls.store.root) as log:
        assert old.run_id not in {r.run_id for r in log.records()}
    problems = fsck_log(ls.store.root, envelopes(ls))
    assert [p.problem for p in problems] == ["the run is not in the transparency log"]
    ls.export(tmp_path / "b")
    ls.signer = first
    report = verify_bundle(tmp_path / "b", {k.keyid: k.public_key for k in (first, ls.signer)},
                           log_key=ls.log_signer.public_key)
    assert not report.valid
    assert any("has no transparency log entry" in r for r in reasons(report, f"runs/{old.run_id}.sigstore.json"))


def test_pending_runs_are_finished_or_dropped(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    ls.collect(1)
    with ls.store.lock(5):
        tlog = ls.open_log()
        try:
            tlog.log.set_pending(Pending(tlog.log.size, "never-committed", {"payload": "", "signatures": []}))
        finally:
            tlog.close()
        tlog = ls.open_log()  # an uncommitted pending run is dropped
        try:
            assert tlog.log.pending() is None and tlog.log.size == 1
            tlog.log.set_pending(Pending(0, "not-that-run", {}))
        finally:
            tlog.close()
        with pytest.raises(StoreError, match="names run not-that-run at log index 0"):
            ls.open_log()


def test_fsck_log_finds_entries_without_runs(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    a, b = (r.run_id or "" for r in ls.collect(2))
    for path in ls.store.attestation_paths(a):
        os.chmod(path, 0o644)
        path.unlink()
    problems = fsck_log(ls.store.root, envelopes(ls))
    assert [p.problem for p in problems] == [f"entry 0 is run {a}, which the store does not hold"]
    env_b = envelopes(ls)[b]
    swapped = {a: env_b, b: env_b}  # an attestation that is not the logged one
    assert any("envelopeHash" in p.problem or "payloadHash" in p.problem for p in fsck_log(ls.store.root, swapped))


def test_store_log_against_the_auditors_key_and_checkpoint(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    ls.collect(2)
    old = ls.checkpoint()
    ls.collect(2)
    root = ls.store.root
    assert check_store_log(root, ls.log_signer.public_key, old) == []
    assert check_store_log(root, None, None) == []
    other = LocalSigner(generate_private_key())
    assert "not your --log-key" in check_store_log(root, other.public_key, None)[0].problem
    assert "signed by another key" in check_store_log(root, ls.log_signer.public_key,
                                                      sign_checkpoint(Checkpoint("affidavit.local/t", 1, b"\0" * 32),
                                                                      other))[0].problem
    fork = sign_checkpoint(Checkpoint(verify_checkpoint(old, ls.log_signer.public_key).origin, 2, b"\1" * 32),
                           ls.log_signer)
    assert "does not extend your checkpoint" in check_store_log(root, ls.log_signer.public_key, fork)[0].problem
    newer = sign_checkpoint(Checkpoint(verify_checkpoint(old, ls.log_signer.public_key).origin, 9, b"\1" * 32),
                            ls.log_signer)
    assert "newer than the store's log" in check_store_log(root, ls.log_signer.public_key, newer)[0].problem
    assert "no transparency log" in check_store_log(tmp_path / "x", ls.log_signer.public_key, None)[0].problem


# -- crashes at every step ----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from tlog_fixtures import load_signer, logged_store
    import affidavit.store.tlog_store as ts
    from affidavit.signing.tlog_runs import RunLog
    from affidavit.store.local import LocalStore
    root, point = Path(sys.argv[1]), sys.argv[2]

    def die(*a, **k):
        os._exit(17)

    if point == "mid-append":  # the leaf is written, its nodes are not
        original = ts.Column.append
        def append(self, index, data):
            if self.path.name == "nodes.bin":
                die()
            return original(self, index, data)
        ts.Column.append = append
    elif point == "before-commit":  # every file written and fsynced, the checkpoint not renamed
        original_write = ts.write_atomically
        def write(path, data):
            if path.name == "checkpoint":
                die()
            return original_write(path, data)
        ts.write_atomically = write
    elif point == "after-commit":
        LocalStore.put_attestation = die
    elif point == "after-attestation":
        LocalStore.index_run = die
    elif point == "before-clearing":
        RunLog.stored = die
    ls = logged_store(root, load_signer(root / "signer.pem"), load_signer(root / "log.pem"))
    ls.counter = 100
    ls.collect(1)
    sys.exit(3)  # not reached: the crash point was
""")


@pytest.mark.parametrize("point, committed", [
    ("mid-append", False), ("before-commit", False), ("after-commit", True), ("after-attestation", True),
    ("before-clearing", True),
])
def test_a_crash_anywhere_leaves_store_and_log_in_agreement(tmp_path: Path, point: str, committed: bool) -> None:
    ls = logged_store(tmp_path)
    ls.collect(3)
    save_signer(tmp_path / "signer.pem", ls.signer)
    save_signer(tmp_path / "log.pem", ls.log_signer)
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), point], env=env, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 17, child.stderr
    # the next collection recovers first, then logs its own run
    ls.counter = 200
    ls.collect(1)
    run_ids = [r.run_id for r in ls.store.runs()]
    with LogStore.open(ls.store.root) as log:
        logged = [r.run_id for r in log.records()]
    crashed = [r for r in logged + run_ids if "src101" in r]
    assert len(run_ids) == len(logged) == (5 if committed else 4)
    assert sorted(run_ids) == sorted(logged)
    assert bool(crashed) == committed
    assert fsck_log(ls.store.root, envelopes(ls)) == []
    errors = [p for p in ls.store.fsck([ls.signer.public_key]) if p.severity == "error"]
    assert errors == []
    ls.export(tmp_path / "bundle.tar")
    report = ls.verify(tmp_path / "bundle.tar")
    assert report.valid, report.failures
    assert report.log.size == len(logged) and sorted(r.log_index or 0 for r in report.runs) == list(range(len(logged)))


# -- the log key and the config --------------------------------------------------------------------


def test_log_key_is_created_once_with_the_signing_keys_passphrase(tmp_path: Path) -> None:
    from affidavit.agent.pipeline import ensure_log_signer
    from affidavit.config.models import SigningConfig
    from affidavit.signing.keys import load_private_key

    save_private_key(tmp_path / "affidavit.key.pem", generate_private_key(), b"s3cret")
    sc = SigningConfig(key=tmp_path / "affidavit.key.pem")
    env = {"AFFIDAVIT_PASSPHRASE": "s3cret"}
    signer, notes = ensure_log_signer(sc, tmp_path, env)
    path = tmp_path / "affidavit-log.key.pem"
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_private_key(path, b"s3cret").public_key() == signer.public_key
    assert (tmp_path / "affidavit-log.pub.pem").is_file() and str(path) in notes[0]
    again, notes = ensure_log_signer(sc, tmp_path, env)
    assert again.keyid == signer.keyid and notes == []
    with pytest.raises(PassphraseError, match="no passphrase for the transparency log key"):
        ensure_log_signer(sc, tmp_path, {})
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        ensure_log_signer(sc, tmp_path, {"AFFIDAVIT_PASSPHRASE": "nope"})
    with pytest.raises(PassphraseError, match="wrong passphrase"):  # never locks a new key with a wrong one
        ensure_log_signer(sc.model_copy(update={"log_key": Path("new-log.key.pem")}), tmp_path,
                          {"AFFIDAVIT_PASSPHRASE": "nope"})
    assert not (tmp_path / "new-log.key.pem").exists()
    save_private_key(tmp_path / "ed.key.pem", generate_private_key("ed25519"), b"s3cret")
    with pytest.raises(SigningKeyError, match="must be one"):
        ensure_log_signer(sc.model_copy(update={"log_key": Path("ed.key.pem")}), tmp_path, env)


def test_log_config_keys(tmp_path: Path) -> None:
    from affidavit.agent.pipeline import default_log_origin
    from affidavit.config.loader import load_config

    cfg = tmp_path / "affidavit.yaml"
    cfg.write_text("signing:\n  log_origin: affidavit.example.org/prod\n  log_key: keys/log.pem\n")
    sc = load_config(cfg, cwd=tmp_path, env={}).config.signing
    assert sc.log_origin == "affidavit.example.org/prod" and sc.log_key.name == "log.pem"
    cfg.write_text("signing:\n  log_origin: has spaces (and parens)\n")
    with pytest.raises(ConfigError, match="signing.log_origin.*not a log origin"):
        load_config(cfg, cwd=tmp_path, env={})
    assert default_log_origin("Prod Agent #1") == "affidavit.local/prod-agent-1"
    assert default_log_origin("((()))") == "affidavit.local/agent"



def test_export_from_an_empty_log_carries_no_log(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    ls.collect(1, log=False)
    ls.signer, first = LocalSigner(generate_private_key()), ls.signer  # the run's key is not at hand: not taken in
    with ls.store.lock(5):
        ls.open_log().close()
    with LogStore.open(ls.store.root) as log:
        assert (log.size, log.checkpoint) == (0, None)
    summary = ls.export(tmp_path / "b")
    assert summary.log_size is None and not (tmp_path / "b" / "log").exists()
    keys = {first.keyid: first.public_key, ls.signer.keyid: ls.signer.public_key}
    assert verify_bundle(tmp_path / "b", keys).valid
    report = verify_bundle(tmp_path / "b", keys, log_key=ls.log_signer.public_key)
    assert reasons(report) == ["missing: the bundle carries no transparency log, but you passed --log-key"]


def test_more_damage_is_named(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        log.append([(f"r{i}", bytes([i]) * 3, i) for i in range(4)], ls.log_signer)
        with pytest.raises(ValueError, match="holds 4 entries, not 5"):
            log.inclusion_proof(0, 5)
    d = ls.store.root / "log"
    good_cp = (d / "checkpoint").read_bytes()
    (d / "checkpoint").write_bytes(b"\xff" + good_cp)
    with pytest.raises(StoreError, match="cannot read the log checkpoint"):
        LogStore.open(ls.store.root)
    with pytest.raises(StoreError, match="cannot read the log checkpoint"):
        open_writer(ls)  # nor will the writer append after it
    (d / "checkpoint").write_bytes(good_cp)


def test_damage_found_by_reading_entries_and_meta(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        log.append([(f"r{i}", bytes([i]) * 3, i) for i in range(4)], ls.log_signer)
        root = log.root
    d = ls.store.root / "log"
    other_origin = sign_checkpoint(Checkpoint("other.example/log", 4, root), ls.log_signer)
    good_cp = (d / "checkpoint").read_text()
    (d / "checkpoint").write_text(other_origin)
    with pytest.raises(StoreError, match="is for log 'other.example/log', not 'affidavit.local/t'"):
        LogStore.open(ls.store.root)
    (d / "checkpoint").write_text(good_cp)
    entries = (d / "entries.jsonl").read_bytes()
    first_line = entries.index(b"\n") + 1
    (d / "entries.jsonl").write_bytes(b"x" * (first_line - 1) + b"\n" + entries[first_line:])
    with LogStore.open(ls.store.root) as log, pytest.raises(StoreError, match="entry 0 of .* is malformed"):
        log.record(0)
    (d / "entries.jsonl").write_bytes(entries[:-10])
    with LogStore.open(ls.store.root) as log, pytest.raises(StoreError, match="shorter than the log's checkpoint"):
        list(log.records())
    (d / "entries.jsonl").write_bytes(entries)
    (d / "pending.json").write_text("{")
    with LogStore.open(ls.store.root) as log, pytest.raises(StoreError, match="cannot read .*pending.json"):
        log.pending()
    (d / "pending.json").unlink()
    meta = json.loads((d / "log.json").read_text())
    (d / "log.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(StoreError, match="unknown format 99"):
        LogStore.open(ls.store.root)
    (d / "log.json").write_text(json.dumps(meta))
    (d / "nodes.bin").unlink()
    with pytest.raises(StoreError, match="cannot open the transparency log"):
        LogStore.open(ls.store.root)


def test_pending_and_backfill_problems(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    (run,) = ls.collect(1)
    with ls.store.lock(5):
        tlog = ls.open_log()
        try:
            tlog.log.set_pending(Pending(0, run.run_id or "", {"signatures": "none"}))
        finally:
            tlog.close()
        with pytest.raises(StoreError, match="pending.json holds a malformed envelope"):
            ls.open_log()
    (ls.store.root / "log" / "pending.json").unlink()
    fresh = logged_store(tmp_path / "fresh")
    (old,) = fresh.collect(1, log=False)
    dsse_path, _ = fresh.store.attestation_paths(old.run_id or "")
    os.chmod(dsse_path, 0o644)
    dsse_path.write_text("{")
    with fresh.store.lock(5), pytest.raises(StoreError, match=f"cannot read the attestation of run {old.run_id}"):
        fresh.open_log()


def test_fsck_log_edge_cases(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    assert fsck_log(ls.store.root, {}) == []  # no log at all: nothing to check
    (a,) = ls.collect(1)
    env = envelopes(ls)
    with ls.store.lock(5), open_writer(ls) as log:  # the same run logged a second time
        log.append([(a.run_id or "", log.record(0).body, 1)], ls.log_signer)
    problems = [p.problem for p in fsck_log(ls.store.root, env)]
    assert problems == [f"run {a.run_id} is logged twice (entries 0 and 1)"]
    assert "envelope is malformed" in fsck_log(ls.store.root, {a.run_id or "": {}})[0].problem
    (ls.store.root / "log" / "log.json").write_text("{")
    assert "not a transparency log description" in fsck_log(ls.store.root, env)[0].problem
    assert "not a transparency log description" in check_store_log(ls.store.root, ls.log_signer.public_key,
                                                                    None)[0].problem


def test_store_log_origin_and_key_only(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    ls.collect(1)
    assert check_store_log(ls.store.root, ls.log_signer.public_key, None) == []
    elsewhere = sign_checkpoint(Checkpoint("other.example/log", 1, b"\0" * 32), ls.log_signer)
    assert "is for log 'other.example/log'" in check_store_log(ls.store.root, ls.log_signer.public_key,
                                                               elsewhere)[0].problem


def test_a_commit_that_fails_after_the_rename_stays_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import affidavit.signing.atomic as files  # where the log's durable writes happen

    ls = logged_store(tmp_path)
    with open_writer(ls) as log:
        log.append([("a", b"a", 1)], ls.log_signer)

        def broken_dir_fsync(path: Path) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(files, "fsync_dir", broken_dir_fsync)  # the rename happened; its durability is unsure
        with pytest.raises(StoreError, match="cannot commit the transparency log's checkpoint.*Input/output error"):
            log.append([("b", b"b", 2)], ls.log_signer)
        assert log.size == 2  # not cut back: the checkpoint on disk says 2
        monkeypatch.undo()

        def broken_rename(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(files.os, "replace", broken_rename)  # before the rename: nothing committed
        with pytest.raises(StoreError, match="No space left on device"):
            log.append([("c", b"c", 3)], ls.log_signer)
        assert log.size == 2
        monkeypatch.undo()
    with LogStore.open(ls.store.root) as log:
        assert log.size == 2 and [r.run_id for r in log.records()] == ["a", "b"]
        assert (ls.store.root / "log" / "leaves.bin").stat().st_size == 64


def test_a_run_finished_after_a_crash_keeps_its_timestamps(tmp_path: Path) -> None:
    ls = logged_store(tmp_path)
    (run_id,) = (r.run_id or "" for r in ls.collect(1))
    dsse_path, bundle_path = ls.store.attestation_paths(run_id)
    envelope = json.loads(dsse_path.read_bytes())
    tokens = {"rfc3161Timestamps": [{"signedTimestamp": "MAMCAQA="}]}
    for path in (dsse_path, bundle_path):  # as if the process died after logging, before storing
        os.chmod(path, 0o644)
        path.unlink()
    with ls.store.lock(5):
        tlog = ls.open_log()
        try:
            tlog.log.set_pending(Pending(0, run_id, envelope, tokens))
        finally:
            tlog.close()
        ls.open_log().close()  # the next process finishes the pending run
    bundle = json.loads(bundle_path.read_bytes())
    assert bundle["verificationMaterial"]["timestampVerificationData"] == tokens
    assert bundle["verificationMaterial"]["tlogEntries"][0]["logIndex"] in (0, "0")
