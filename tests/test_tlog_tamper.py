"""Tampering with the transparency log, through real exported bundles: each case INVALID with a precise reason.

Two kinds of attacker. One edits an exported bundle (and re-signs the bundle
statement, as someone holding the bundle key could), so only the log checks can
catch the edit. The other is the operator: holding every key, they rewrite the
store (delete or change a run, rebuild the log, re-sign its checkpoint) and
export a bundle that is consistent in itself; only the auditor's older
checkpoint (``--checkpoint``) can expose that history was rewritten.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tlog_fixtures import LoggedStore, logged_store, reasons, resign_bundle

from affidavit.errors import UsageError
from affidavit.signing.dsse import sign_envelope
from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.signing.sigstore import make_bundle
from affidavit.signing.tlog import MemoryTree, leaf_hash
from affidavit.signing.tlog_entry import dsse_body, trusted_root
from affidavit.signing.tlog_note import Checkpoint, sign_checkpoint
from affidavit.signing.verify_report import LOG_ABSENT, LOG_NOT_CHECKED
from affidavit.store.tlog_store import LogStore


@dataclass
class Scenario:
    ls: LoggedStore
    old_checkpoint: str  # what the auditor kept after the first audit (3 runs)
    old_bundle: Path  # exported then
    bundle: Path  # exported after 2 more runs
    runs: list[str]  # run ids, in log order


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("tamper")
    ls = logged_store(root)
    first = ls.collect(3)
    old = ls.checkpoint()
    ls.export(root / "old-bundle")
    second = ls.collect(2)
    ls.export(root / "bundle")
    return Scenario(ls, old, root / "old-bundle", root / "bundle", [r.run_id or "" for r in first + second])


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def sigstore_path(bundle: Path, run_id: str) -> Path:
    return bundle / "runs" / f"{run_id}.sigstore.json"


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def save(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def entry(bundle: Path, run_id: str) -> dict[str, Any]:
    (e,) = load(sigstore_path(bundle, run_id))["verificationMaterial"]["tlogEntries"]
    return dict(e)


def set_entries(bundle: Path, run_id: str, entries: list[dict[str, Any]]) -> None:
    obj = load(sigstore_path(bundle, run_id))
    obj["verificationMaterial"]["tlogEntries"] = entries
    save(sigstore_path(bundle, run_id), obj)


# -- the untampered bundle -----------------------------------------------------------------------


def test_untampered_bundle_verifies_with_the_log_and_old_checkpoint(scenario: Scenario) -> None:
    report = scenario.ls.verify(scenario.bundle, checkpoint=scenario.old_checkpoint)
    assert report.valid, report.failures
    assert (report.log.status, report.log.size, report.log.consistency) == ("verified", 5, "verified from size 3")
    assert [r.log_index for r in report.runs] == list(range(5))
    text = "\n".join(report.summary_lines())
    assert "transparency log: verified" in text and "consistency with your checkpoint: verified from size 3" in text
    data = report.to_json()["log"]
    assert data["status"] == "verified" and data["tree_size"] == 5 and data["checkpoint_size"] == 3


def test_without_a_log_key_the_log_is_never_reported_as_verified(scenario: Scenario) -> None:
    report = scenario.ls.verify(scenario.bundle, log_key=None)
    assert report.valid and report.log.status == LOG_NOT_CHECKED == "not checked (no --log-key)"
    assert "transparency log: not checked (no --log-key)" in report.summary_lines()[1]
    with pytest.raises(UsageError, match="--checkpoint needs --log-key"):
        scenario.ls.verify(scenario.bundle, log_key=None, checkpoint=scenario.old_checkpoint)


def test_tar_gz_bundle_verifies(scenario: Scenario, tmp_path: Path) -> None:
    scenario.ls.export(tmp_path / "b.tar.gz")
    report = scenario.ls.verify(tmp_path / "b.tar.gz", checkpoint=scenario.old_checkpoint)
    assert report.valid and report.log.status == "verified", report.failures


# -- edits to an exported bundle -------------------------------------------------------------------------


def test_a_log_entry_deleted_from_the_leaves(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    leaves = (b / "log" / "leaves.bin").read_bytes()
    (b / "log" / "leaves.bin").write_bytes(leaves[:32] + leaves[64:])  # entry 1 gone
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b, checkpoint=scenario.old_checkpoint)
    assert not report.valid and report.log.status == "failed"
    assert reasons(report, "log/leaves.bin") == [
        "holds 4 leaf hashes; the checkpoint says the log has 5 entries (entries were deleted or added)"]


def test_a_run_whose_log_entry_was_deleted(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    run = scenario.runs[2]
    set_entries(b, run, [])
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert reasons(report) == ["has no transparency log entry: the run was not logged (or its entry was deleted)"]
    assert [r.verified for r in report.runs] == [True, True, False, True, True]


def test_a_log_entry_rewritten(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    leaves = bytearray((b / "log" / "leaves.bin").read_bytes())
    leaves[1 * 32] ^= 0xFF
    (b / "log" / "leaves.bin").write_bytes(bytes(leaves))
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert "the leaf hashes do not hash to the checkpoint's root: an entry was rewritten" in reasons(report,
                                                                                                    "log/leaves.bin")
    assert any("log index 1 holds another entry" in r for r in reasons(report))


def test_a_logged_body_rewritten(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    run = scenario.runs[1]
    e = entry(b, run)
    body = json.loads(base64.b64decode(e["canonicalizedBody"]))
    body["spec"]["payloadHash"]["value"] = "0" * 64
    e["canonicalizedBody"] = base64.b64encode(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).decode()
    set_entries(b, run, [e])
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert reasons(report, f"runs/{run}.sigstore.json") == [
        "its log entry is not this run's: the logged payloadHash is not the SHA-256 of this run's statement"]


def test_a_checkpoint_signed_by_another_key(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    other = LocalSigner(generate_private_key())
    text = (b / "log" / "checkpoint").read_text()
    cp = Checkpoint(text.split("\n")[0], 5, base64.b64decode(text.split("\n")[2]))
    forged = sign_checkpoint(cp, other)
    (b / "log" / "checkpoint").write_text(forged)
    for run in scenario.runs:
        e = entry(b, run)
        e["inclusionProof"]["checkpoint"]["envelope"] = forged
        set_entries(b, run, [e])
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert not report.valid and report.log.status == "failed"
    (reason,) = reasons(report, "log/checkpoint")
    assert reason.startswith("not a valid checkpoint of the trusted log: signed by another key (key hint ")
    # and a trusted_root.json naming the other key (what sigstore-js users would be handed) fails too
    origin = cp.origin
    (b / "trusted_root.json").write_text(json.dumps(trusted_root(other.public_key, origin=origin)))
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert any(r.startswith(f"names log key {bytes.fromhex(other.keyid).hex()}") for r in
               reasons(report, "trusted_root.json"))


def test_a_run_statement_from_an_older_bundle(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    run = scenario.runs[0]
    shutil.copy(sigstore_path(scenario.old_bundle, run), sigstore_path(b, run))  # proved against the old checkpoint
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    (reason,) = reasons(report, f"runs/{run}.sigstore.json")
    assert reason.startswith("its inclusion proof is against a checkpoint of size 3 (root ")
    assert reason.endswith("a run statement taken from another bundle")


def test_an_older_run_statement_presented_as_another_run(scenario: Scenario, tmp_path: Path) -> None:
    """The old run's statement and entry, moved to another run's log index and the bundle's checkpoint."""
    b = copy(scenario.bundle, tmp_path)
    old_run, victim = scenario.runs[0], scenario.runs[4]
    e = entry(scenario.old_bundle, old_run)
    theirs = entry(b, victim)
    e["logIndex"] = theirs["logIndex"]
    e["inclusionProof"] = theirs["inclusionProof"]
    set_entries(b, old_run, [e])
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert reasons(report, f"runs/{old_run}.sigstore.json") == [
        "log index 4 holds another entry: its log index, leaf and checkpoint do not match this run statement"]
    e["inclusionProof"]["logIndex"] = "0"
    set_entries(b, old_run, [e])
    resign_bundle(b, scenario.ls.signer)
    assert reasons(scenario.ls.verify(b), f"runs/{old_run}.sigstore.json") == [
        "logIndex 4 and inclusionProof.logIndex 0 differ"]


def test_a_broken_inclusion_proof_and_foreign_log(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    run = scenario.runs[3]
    e = entry(b, run)
    e["inclusionProof"]["hashes"][0] = base64.b64encode(b"\0" * 32).decode()
    set_entries(b, run, [e])
    run2 = scenario.runs[1]
    e2 = entry(b, run2)
    e2["logId"]["keyId"] = base64.b64encode(b"\1" * 32).decode()
    set_entries(b, run2, [e2])
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert reasons(report, f"runs/{run}.sigstore.json") == [
        "its inclusion proof fails: the inclusion proof of leaf 3 does not lead to the root of the tree of 5"]
    (reason,) = reasons(report, f"runs/{run2}.sigstore.json")
    assert reason.startswith("its log entry is in log 0101") and "not the trusted log" in reason


def test_log_material_must_agree_with_manifest_and_trusted_root(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    manifest = load(b / "manifest.json")
    manifest["log"]["tree_size"] = 3
    save(b / "manifest.json", manifest)
    root = load(b / "trusted_root.json")
    root["tlogs"][0]["baseUrl"] = "https://elsewhere.example"
    save(b / "trusted_root.json", root)
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert "log.tree_size is 3, the checkpoint says 5" in reasons(report, "manifest.json")
    assert any("does not contain the checkpoint's origin" in r for r in reasons(report, "trusted_root.json"))
    (b / "log" / "checkpoint").unlink()
    resign_bundle(b, scenario.ls.signer)
    assert "missing (the bundle's transparency log needs it)" in reasons(scenario.ls.verify(b), "log/checkpoint")


def test_a_bundle_without_a_log(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    for name in ("log/checkpoint", "log/leaves.bin", "trusted_root.json"):
        (b / name).unlink()
    manifest = load(b / "manifest.json")
    manifest["log"] = None
    save(b / "manifest.json", manifest)
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert "missing: the bundle carries no transparency log, but you passed --log-key" in reasons(report,
                                                                                                   "log/checkpoint")
    assert any("has a transparency log entry, but the bundle carries no log checkpoint" in r for r in reasons(report))
    for run in scenario.runs:
        set_entries(b, run, [])
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b, log_key=None)
    assert report.valid and report.log.status == LOG_ABSENT and "transparency log" not in report.summary_lines()[1]


# -- the operator rewrites history (holding every key) -------------------------------------------------------


def rewrite_log(ls: LoggedStore, bodies: dict[str, bytes | None]) -> None:
    """Rebuild the store's log from scratch with some runs' bodies replaced (bytes) or deleted (None)."""
    log_dir = ls.store.root / "log"
    with LogStore.open(ls.store.root) as log:
        records, origin = list(log.records()), log.meta.origin
    shutil.rmtree(log_dir)
    items = [(r.run_id, bodies.get(r.run_id, r.body), r.integrated_time) for r in records]
    with LogStore.open_for_append(ls.store.root, ls.log_signer.public_key, origin=origin, default_origin=origin,
                                  now=ls.clock()) as log:
        log.append([(run_id, body, t) for run_id, body, t in items if body is not None], ls.log_signer)


def remove_run(ls: LoggedStore, run_id: str) -> None:
    for path in ls.store.attestation_paths(run_id):
        os.chmod(path, 0o644)
        path.unlink()
    ls.store.reindex()


def test_operator_deletes_a_logged_run_then_rebuilds_the_log(scenario: Scenario, tmp_path: Path) -> None:
    ls = logged_store(tmp_path / "s")
    runs = ls.collect(3)
    old = ls.checkpoint()
    ls.collect(1)
    victim = runs[1].run_id or ""
    remove_run(ls, victim)
    rewrite_log(ls, {victim: None})
    ls.export(tmp_path / "b")
    alone = ls.verify(tmp_path / "b")
    assert alone.valid and alone.log.size == 3  # consistent in itself: only an old checkpoint can tell
    report = ls.verify(tmp_path / "b", checkpoint=old)
    assert not report.valid and report.log.consistency == "failed"
    (reason,) = reasons(report, "(--checkpoint)")
    assert reason == ("the bundle's log does not extend your checkpoint (size 3): entries logged before it were "
                      "removed or rewritten (two different roots for the same tree size 3: the histories differ)")


def test_operator_rewrites_a_logged_run_a_forked_history(scenario: Scenario, tmp_path: Path) -> None:
    ls = logged_store(tmp_path / "s")
    runs = ls.collect(4)
    old = ls.checkpoint()
    ls.collect(1)
    victim = runs[2].run_id or ""
    dsse_path, bundle_path = ls.store.attestation_paths(victim)
    envelope = load(dsse_path)
    payload = base64.b64decode(envelope["payload"]).replace(b'"common:CC-AI-POLICY"', b'"common:CC-REWRITTEN"')
    forged = sign_envelope(payload, ls.signer)
    for path, obj in ((dsse_path, forged), (bundle_path, make_bundle(forged, ls.signer.keyid))):
        os.chmod(path, 0o644)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True))
    ls.store.reindex()
    rewrite_log(ls, {victim: dsse_body(forged, ls.signer.public_key)})
    ls.export(tmp_path / "b")
    assert ls.verify(tmp_path / "b").valid  # a fork is consistent in itself
    report = ls.verify(tmp_path / "b", checkpoint=old)
    assert not report.valid
    (reason,) = reasons(report, "(--checkpoint)")
    assert reason.startswith("the bundle's log does not extend your checkpoint (size 4): entries logged before it "
                             "were removed or rewritten (")
    # the bundle's own leaves yield a consistency proof that an independent RFC 9162 check also rejects
    from test_tlog import rfc_verify_consistency

    leaves = (tmp_path / "b" / "log" / "leaves.bin").read_bytes()
    fork = MemoryTree(leaves)
    old_root = base64.b64decode(old.split("\n")[2])
    assert not rfc_verify_consistency(4, 5, old_root, fork.root(), fork.consistency_proof(4))
    assert fork.leaf(2) == leaf_hash(dsse_body(forged, ls.signer.public_key))


def test_auditor_checkpoint_problems(scenario: Scenario, tmp_path: Path) -> None:
    ls = scenario.ls
    other = LocalSigner(generate_private_key())
    origin = scenario.old_checkpoint.split("\n")[0]
    cases = {
        sign_checkpoint(Checkpoint(origin, 3, b"\0" * 32), other): "not a checkpoint of the trusted log: signed by "
                                                                    "another key",
        sign_checkpoint(Checkpoint("other.example/log", 3, b"\0" * 32), ls.log_signer):
            "is for log 'other.example/log'",
        sign_checkpoint(Checkpoint(origin, 9, b"\0" * 32), ls.log_signer): "is newer than the bundle's (size 5)",
        "garbage": "not a checkpoint of the trusted log: not a signed note",
    }
    for text, needle in cases.items():
        report = ls.verify(scenario.bundle, checkpoint=text)
        assert not report.valid and report.log.consistency == "failed"
        (reason,) = reasons(report, "(--checkpoint)")
        assert needle in reason
    same = ls.verify(scenario.bundle, checkpoint=(scenario.bundle / "log" / "checkpoint").read_text())
    assert same.valid and same.log.consistency == "verified from size 5"


def _ed25519_der() -> str:
    from cryptography.hazmat.primitives import serialization

    key = generate_private_key("ed25519").public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def _edit_root(change: Any) -> Any:
    def edit(b: Path, runs: list[str]) -> None:
        root = load(b / "trusted_root.json")
        change(root)
        save(b / "trusted_root.json", root)
    return edit


def _edit_entry(change: Any) -> Any:
    def edit(b: Path, runs: list[str]) -> None:
        obj = load(sigstore_path(b, runs[0]))
        change(obj["verificationMaterial"])
        save(sigstore_path(b, runs[0]), obj)
    return edit


def _write(name: str, data: bytes) -> Any:
    def edit(b: Path, runs: list[str]) -> None:
        (b / name).write_bytes(data)
    return edit


@pytest.mark.parametrize("edit, member, needle", [
    (_write("trusted_root.json", b"{"), "trusted_root.json", "not valid JSON"),
    (_edit_root(lambda r: r.update(mediaType="x")), "trusted_root.json", "not a Sigstore trusted root"),
    (_edit_root(lambda r: r.update(tlogs=[])), "trusted_root.json", "exactly one transparency log"),
    (_edit_root(lambda r: r["tlogs"][0]["publicKey"].update(rawBytes="!!")), "trusted_root.json",
     "no readable publicKey.rawBytes"),
    (_edit_root(lambda r: r["tlogs"][0]["publicKey"].update(rawBytes=_ed25519_der())), "trusted_root.json",
     "its log key is not ECDSA P-256"),
    (_edit_root(lambda r: r["tlogs"][0].update(logId={"keyId": base64.b64encode(b"\0" * 32).decode()})),
     "trusted_root.json", "its logId.keyId is not the SHA-256 of its log key"),
    (_edit_root(lambda r: r["tlogs"][0]["publicKey"].update(keyDetails="PKIX_ED25519")), "trusted_root.json",
     "keyDetails is not PKIX_ECDSA_P256_SHA_256"),
    (_write("log/checkpoint", b"\xff\xfe"), "log/checkpoint", "not UTF-8 text"),
    (_write("log/leaves.bin", b"\0" * 33), "log/leaves.bin", "33 bytes is not a whole number"),
    (_edit_entry(lambda vm: vm.update(tlogEntries={})), None, "tlogEntries is not a list"),
    (_edit_entry(lambda vm: vm.update(tlogEntries=vm["tlogEntries"] * 2)), None, "holds 2 log entries"),
    (_edit_entry(lambda vm: vm["tlogEntries"][0].update(kindVersion={"kind": "intoto", "version": "0.0.2"})), None,
     "its log entry is of kind intoto/0.0.2, not dsse/0.0.1"),
    (_edit_entry(lambda vm: vm["tlogEntries"][0].update(integratedTime="soon")), None,
     "tlogEntries[0]: integratedTime is not a non-negative int64"),
])
def test_malformed_log_material_is_a_failure_not_a_crash(scenario: Scenario, tmp_path: Path, edit: Any,
                                                         member: str | None, needle: str) -> None:
    b = copy(scenario.bundle, tmp_path)
    edit(b, scenario.runs)
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert not report.valid and report.log.status == "failed"
    found = reasons(report, member or f"runs/{scenario.runs[0]}.sigstore.json")
    assert any(needle in r for r in found), report.failures


def test_a_non_p256_log_key_is_named(scenario: Scenario) -> None:
    report = scenario.ls.verify(scenario.bundle, log_key=generate_private_key("ed25519").public_key())
    assert "the --log-key is not an ECDSA P-256 key, so it signs no checkpoint" in reasons(report, "log/checkpoint")


def test_reread_of_members_the_reader_only_hashed(scenario: Scenario, tmp_path: Path) -> None:
    """log/leaves.bin and log/checkpoint are read again from the bundle, and must be what was hashed."""
    import hashlib

    from affidavit.signing.archive import Member, ReadLimits
    from affidavit.signing.verify_log import BundleSource, reread

    data = (scenario.bundle / "log" / "leaves.bin").read_bytes()
    member = Member("log/leaves.bin", hashlib.sha256(data).hexdigest(), len(data), None)
    assert reread(BundleSource(scenario.bundle, "directory", 1 << 20), member) == data
    assert reread(BundleSource(scenario.bundle, "directory", 10), member) is None  # over the limit
    assert reread(BundleSource(tmp_path / "gone", "directory", 1 << 20), member) is None
    assert reread(BundleSource(tmp_path / "gone.tar", "tar", 1 << 20), member) is None
    changed = Member("log/leaves.bin", "0" * 64, len(data), None)
    assert reread(BundleSource(scenario.bundle, "directory", 1 << 20), changed) is None
    report = scenario.ls.verify(scenario.bundle, limits=ReadLimits(max_metadata_bytes=100))
    assert "cannot be read (too large, or it changed while being verified)" in reasons(report, "log/leaves.bin")


def test_checkpoint_hint_must_match_the_trusted_root_without_a_log_key(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    text = (b / "log" / "checkpoint").read_text()
    other = LocalSigner(generate_private_key())
    (b / "log" / "checkpoint").write_text(
        sign_checkpoint(Checkpoint(text.split("\n")[0], 5, base64.b64decode(text.split("\n")[2])), other))
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b, log_key=None)  # structure only: still caught
    assert "its key hint is not that of the log named in trusted_root.json" in reasons(report, "log/checkpoint")
    assert report.log.status == "failed"


def test_manifest_without_log_section_and_unusable_material(scenario: Scenario, tmp_path: Path) -> None:
    b = copy(scenario.bundle, tmp_path)
    manifest = load(b / "manifest.json")
    del manifest["log"]
    save(b / "manifest.json", manifest)
    (b / "log" / "leaves.bin").write_bytes(b"\0" * 33)
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b, checkpoint=scenario.old_checkpoint)
    assert "has no log section, but the bundle carries a transparency log" in reasons(report, "manifest.json")
    assert reasons(report, "(--checkpoint)") == [
        "cannot check consistency: the bundle's own checkpoint or leaves are unusable"]
    (b / "manifest.json").write_text("{")
    resign_bundle(b, scenario.ls.signer)
    report = scenario.ls.verify(b)
    assert "not valid JSON" in reasons(report, "manifest.json") and report.log.status == "failed"
