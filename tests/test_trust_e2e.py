"""The key lifecycle end to end: `keys rotate`, `keys revoke`, `keys trust-export`, then `verify --trust`.

Evidence signed before a rotation still verifies with the exported trust file; a
revoked key's evidence fails without timestamps and passes with timestamps that
predate the revocation; a signature timestamped outside its key's window fails
with that reason. Every user error of the `keys` commands is a one-line error.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_timestamps_e2e import PASSPHRASE, Work, make_work, reasons, run_ids, tsa_signing

from affidavit.signing.keys import keyid_of, load_private_key, load_public_key_file
from affidavit.signing.trust import TrustStore
from tsa_server import TsaEndpoint
from tsa_server import tsa  # noqa: F401  (pytest fixture)


def history(work: Work) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((work.dir / "affidavit.keys.json").read_text())
    return data


def key_entry(doc: dict[str, Any], keyid: str) -> dict[str, Any]:
    (entry,) = [k for k in doc["keys"] if k["keyid"] == keyid]
    return entry


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# ---------------------------------------------------------------- rotation


def test_rotation_keeps_evidence_signed_before_it_verifiable(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect", "--source", "policies")
    old = work.signer()
    before = datetime.now(UTC).replace(microsecond=0)
    res = work.ok("keys", "rotate")
    new = work.signer()
    assert new.keyid != old.keyid and f"{old.keyid} -> {new.keyid}" in res.stderr
    # the old private key is kept aside, the public key file is the new key's
    retired = work.dir / f"affidavit.key.{old.keyid[:8]}.pem"
    assert load_private_key(retired, PASSPHRASE.encode()).public_key() == old.public_key
    assert keyid_of(load_public_key_file(work.dir / "affidavit.pub.pem")) == new.keyid
    assert keyid_of(load_public_key_file(work.dir / f"affidavit.key.{old.keyid[:8]}.pub.pem")) == old.keyid
    doc = history(work)
    a, b = key_entry(doc, old.keyid), key_entry(doc, new.keyid)
    assert a["not_before"] is None and a["revoked_at"] is None and iso(a["not_after"]) >= before
    assert iso(b["not_before"]) <= iso(a["not_after"]) and b["not_after"] is None
    assert not list(work.dir.glob(".*.rotating"))

    work.ok("collect", "--source", "model-cards")
    work.ok("export", "--out", "bundle")
    res = work.ok("keys", "trust-export", "--out", "trust.json")
    assert "2 signing key(s), 1 log key(s), 0 TSA root(s)" in res.stderr
    trust = TrustStore.from_file(work.dir / "trust.json")
    assert set(trust.keys) == {old.keyid, new.keyid} and len(trust.log_keys) == 1

    code, report = work.verify_json("bundle", "--trust", "trust.json")
    assert code == 0 and report["valid"], report["failures"]
    keys = {k["keyid"]: k for k in report["keys"]}
    assert keys[old.keyid]["source"] == "trust file" and keys[old.keyid]["not_after"] == a["not_after"]
    assert len(keys[old.keyid]["signed"]) == 1 and keys[old.keyid]["signed"][0].startswith("run ")
    assert keys[new.keyid]["signed"][0] == "the bundle statement" and len(keys[new.keyid]["signed"]) == 2
    assert report["log"]["status"] == "verified"  # the log key came from the trust file
    # with only the new key, the run signed before the rotation cannot verify
    code, report = work.verify_json("bundle", "--key", "affidavit.pub.pem")
    assert code == 1
    assert any("signature does not verify with any trusted key" in r for r in reasons(report))


def test_rotation_with_timestamps_and_the_trust_files_tsa_roots(tmp_path: Path, tsa: TsaEndpoint) -> None:
    work = make_work(tmp_path / "w", tsa_signing(tsa))
    work.ok("collect", "--source", "policies")
    old = work.signer()
    work.ok("keys", "rotate")
    work.ok("collect", "--source", "model-cards")
    work.ok("export", "--out", "bundle")
    res = work.ok("keys", "trust-export", "--out", "trust.json", "--comment", "ACME evidence keys")
    assert "1 TSA root(s)" in res.stderr
    doc = json.loads((work.dir / "trust.json").read_text())
    assert doc["comment"] == "ACME evidence keys" and doc["tsa_roots"] == [tsa.root_cert_path.read_text()]
    code, report = work.verify_json("bundle", "--trust", "trust.json")  # no --tsa-roots: they are in the file
    assert code == 0, report["failures"]
    assert report["timestamps"]["status"] == "verified" and len(report["timestamps"]["tokens"]) == 3
    # the old key's run was timestamped inside its window
    (stamp,) = [t for t in report["timestamps"]["tokens"] if t["signature"] in key_entry(report, old.keyid)["signed"]]
    assert iso(stamp["time"]) < iso(key_entry(doc, old.keyid)["not_after"])


def test_a_signature_timestamped_outside_its_keys_window_fails(tmp_path: Path, tsa: TsaEndpoint) -> None:
    work = make_work(tmp_path / "w", tsa_signing(tsa))
    work.ok("collect", "--source", "policies")
    work.ok("export", "--out", "bundle")
    work.ok("keys", "trust-export", "--out", "trust.json")
    keyid = work.signer().keyid
    doc = json.loads((work.dir / "trust.json").read_text())
    for window, reason in (
        (("2020-01-01T00:00:00Z", "2020-06-01T00:00:00Z"), "validity window ended (2020-06-01T00:00:00Z)"),
        (("2099-01-01T00:00:00Z", None), "validity window starts (2099-01-01T00:00:00Z)"),
    ):
        key_entry(doc, keyid).update(not_before=window[0], not_after=window[1])
        (work.dir / "windowed.json").write_text(json.dumps(doc))
        code, report = work.verify_json("bundle", "--trust", "windowed.json")
        assert code == 1
        (run_id,) = run_ids(work.dir / "bundle")
        for member in (f"runs/{run_id}.dsse.json", "bundle.dsse.json"):
            (got,) = reasons(report, member)
            assert got.startswith("signed at 20") and f"key {keyid}'s {reason}" in got, got


# ---------------------------------------------------------------- revocation


def test_a_revoked_keys_evidence_fails_without_timestamps(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect")
    work.ok("export", "--out", "bundle")
    keyid = work.signer().keyid
    res = work.ok("keys", "revoke", keyid[:12])
    assert f"revoked key {keyid} from " in res.stderr
    revoked_at = key_entry(history(work), keyid)["revoked_at"]
    work.ok("keys", "trust-export", "--out", "trust.json")
    code, report = work.verify_json("bundle", "--trust", "trust.json")
    assert code == 1 and not report["valid"]
    expected = (f"key {keyid} was revoked at {revoked_at}; no trusted timestamp proves the signature predates "
                "the revocation")
    for run_id in run_ids(work.dir / "bundle"):
        assert reasons(report, f"runs/{run_id}.dsse.json") == [expected]
    assert reasons(report, "bundle.dsse.json") == [expected]
    assert report["signer_keyids"] == [] and not any(a["ok"] for a in report["artefacts"])
    (key,) = report["keys"]
    assert key["revoked_at"] == revoked_at and key["signed"] == [] and len(key["refused"]) == 3
    text = work.run("verify", "bundle", "--trust", "trust.json").stdout
    assert "bundle signed by no key in force when it signed" in text.splitlines()[0]
    assert "REFUSED for the bundle statement, 2 run(s)" in text
    # passing the same key bare does not lift the trust file's revocation
    code, _ = work.verify_json("bundle", "--trust", "trust.json", "--key", "affidavit.pub.pem")
    assert code == 1
    # the agent refuses to sign with it; a rotation makes a key it can use
    res = work.run("collect")
    assert res.code == 2
    assert one_error(res.stderr).startswith(f"error: refusing to sign: signing key {keyid} was revoked at {revoked_at}")
    res = work.run("export", "--out", "again")
    assert res.code == 2 and "refusing to sign" in res.stderr
    work.ok("keys", "rotate")
    work.ok("collect")


def revoked_after_timestamps(tmp_path: Path, tsa: TsaEndpoint, *, export: bool) -> tuple[Work, Work, str]:
    """(a store whose timestamped runs predate the key's revocation, with trust.json exported; a copy taken
    before the revocation, to revoke with an earlier date; the keyid). ``export``: a bundle first."""
    work = make_work(tmp_path / "w", tsa_signing(tsa))
    work.ok("collect")
    if export:
        work.ok("export", "--out", "bundle")
    keyid = work.signer().keyid
    backdated = Work(tmp_path / "backdated", work.env)
    shutil.copytree(work.dir, backdated.dir)
    time.sleep(1.1)  # TSA times are whole seconds; the revocation comes a second later
    work.ok("keys", "revoke", keyid)
    work.ok("keys", "trust-export", "--out", "trust.json")
    return work, backdated, keyid


def without_tsa_roots(work: Work) -> str:
    """A copy of the work's trust.json with no TSA roots; its file name."""
    doc = json.loads((work.dir / "trust.json").read_text())
    doc["tsa_roots"] = []
    (work.dir / "no-roots.json").write_text(json.dumps(doc))
    return "no-roots.json"


def test_timestamps_before_the_revocation_keep_the_evidence_valid(tmp_path: Path, tsa: TsaEndpoint) -> None:
    work, backdated, keyid = revoked_after_timestamps(tmp_path, tsa, export=True)
    code, report = work.verify_json("bundle", "--trust", "trust.json")
    assert code == 0, report["failures"]
    (key,) = report["keys"]
    assert key["revoked_at"] is not None and key["refused"] == [] and len(key["signed"]) == 3
    assert all(iso(t["time"]) < iso(key["revoked_at"]) for t in report["timestamps"]["tokens"])
    # without the TSA roots nothing proves the time: the revocation wins, and the report says why
    code, report = work.verify_json("bundle", "--trust", without_tsa_roots(work))
    assert code == 1 and reasons(report, "bundle.dsse.json")[0].endswith(
        "(the bundle carries a timestamp for it: pass --tsa-roots to check it)")
    code, report = work.verify_json("bundle", "--trust", "no-roots.json", "--tsa-roots", str(tsa.root_cert_path))
    assert code == 0

    # a revocation dated before the signatures: each is timestamped after it
    backdated.ok("keys", "revoke", keyid, "--at", "2020-01-01T00:00:00Z")
    backdated.ok("keys", "trust-export", "--out", "trust.json")
    code, report = backdated.verify_json("bundle", "--trust", "trust.json")
    assert code == 1
    for run_id in run_ids(backdated.dir / "bundle"):
        (got,) = reasons(report, f"runs/{run_id}.dsse.json")
        assert got.startswith("signed at 20") and got.endswith(
            f", after key {keyid} was revoked at 2020-01-01T00:00:00Z"), got


def test_a_revoked_log_key_is_refused(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect")
    work.ok("export", "--out", "bundle")
    work.ok("keys", "trust-export", "--out", "trust.json")
    log_keyid = json.loads((work.dir / "trust.json").read_text())["log_keys"][0]["keyid"]
    code, report = work.verify_json("bundle", "--trust", "trust.json")
    assert code == 0 and report["log"]["status"] == "verified"
    work.ok("keys", "revoke", log_keyid)
    work.ok("keys", "trust-export", "--out", "trust.json")
    code, report = work.verify_json("bundle", "--trust", "trust.json")
    assert code == 1
    (got,) = reasons(report, "log/checkpoint")
    assert got.startswith(f"signed by a log key you no longer trust: key {log_keyid} was revoked at ")


# ---------------------------------------------------------------- crashes and errors


def test_an_interrupted_rotation_is_refused_then_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import affidavit.agent.keyring as keyring

    work = make_work(tmp_path / "w")
    work.ok("collect", "--source", "policies")
    old = work.signer()
    real_replace = os.replace

    def crash(src: Any, dst: Any) -> None:
        if str(src).endswith(".rotating"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(keyring.os, "replace", crash)
    res = work.run("keys", "rotate")
    assert res.code == 2
    assert one_error(res.stderr) == (f"error: cannot put the new key in place of {work.dir / 'affidavit.key.pem'}: "
                                     "No space left on device (fix the cause, then run `affidavit keys rotate` "
                                     "again to finish)")
    monkeypatch.undo()
    assert work.signer().keyid == old.keyid  # the key file still holds the old key, which the history closed
    time.sleep(1.1)  # its window ends at the next whole second
    res = work.run("collect")
    assert res.code == 2 and f"refusing to sign: signing key {old.keyid} was rotated out at" in res.stderr
    assert "run it again to finish" in res.stderr
    res = work.ok("keys", "rotate")
    assert "finished an interrupted rotation" in res.stderr
    new = work.signer()
    assert new.keyid != old.keyid and key_entry(history(work), new.keyid)["not_after"] is None
    assert len(history(work)["keys"]) == 2  # finishing did not rotate again
    work.ok("collect", "--source", "model-cards")


def test_keys_command_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import affidavit.agent.keyring as keyring

    work = make_work(tmp_path / "w")
    work.ok("collect", "--source", "policies")
    keyid = work.signer().keyid
    cases = [
        (("keys", "revoke", "xyz"), "error: 'xyz' is not a keyid: give at least its first 8 lowercase hex digits"),
        (("keys", "revoke", "deadbeefdeadbeef"), "error: no key in the key history"),
        (("keys", "revoke", keyid, "--at", "yesterday"), "is not an ISO 8601 time"),
    ]
    for args, message in cases:
        res = work.run(*args)
        assert res.code == 2 and message in res.stderr, (args, res.stderr)
    work.ok("keys", "revoke", keyid, "--at", "2026-01-01T00:00:00")
    assert key_entry(history(work), keyid)["revoked_at"] == "2026-01-01T00:00:00Z"  # no zone: UTC
    res = work.run("keys", "revoke", keyid)
    assert res.code == 2 and f"key {keyid} was already revoked at 2026-01-01T00:00:00Z" in res.stderr

    no_pw = Work(work.dir, {k: v for k, v in work.env.items() if k != "AFFIDAVIT_PASSPHRASE"})
    res = no_pw.run("keys", "rotate")
    assert res.code == 2 and "no passphrase for signing key" in one_error(res.stderr)

    monkeypatch.setattr(keyring, "LOCK_TIMEOUT", 0.2)
    fd = os.open(work.dir / "affidavit.keys.json.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        res = work.run("keys", "rotate")
        assert res.code == 2 and "another `affidavit keys` command is changing" in one_error(res.stderr)
    finally:
        os.close(fd)

    (work.dir / "affidavit.yaml").write_text("store:\n  path: ./store\nsigning:\n  key: awskms://alias/evidence\n")
    res = work.run("keys", "rotate")
    assert res.code == 2
    assert one_error(res.stderr).startswith("error: signing.key is the AWS KMS key awskms://alias/evidence; "
                                            "this command needs a key file")


def test_trust_export_to_stdout_and_verify_errors(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect")
    work.ok("export", "--out", "bundle")
    res = work.ok("keys", "trust-export", "--out", "-")
    doc = json.loads(res.stdout)
    assert [k["keyid"] for k in doc["keys"]] == [work.signer().keyid] and doc["format"] == 1

    (work.dir / "bad-trust.json").write_text(json.dumps({"format": 1, "keys": [{"keyid": "x"}]}))
    res = work.run("verify", "bundle", "--trust", "bad-trust.json")
    assert res.code == 2 and "bad-trust.json is not a valid trust file: keys[0].algorithm is missing" in res.stderr
    res = work.run("verify", "bundle")
    assert res.code == 2 and "no trust anchor: pass --key PEM" in res.stderr and "--trust FILE" in res.stderr
    doc["log_keys"] = []
    (work.dir / "no-log.json").write_text(json.dumps(doc))
    (work.dir / "old.checkpoint").write_text("x")
    res = work.run("verify", "bundle", "--trust", "no-log.json", "--checkpoint", "old.checkpoint")
    assert res.code == 2 and "--checkpoint needs --log-key" in res.stderr
    res = work.run("verify", "bundle", "--key", "affidavit.pub.pem", "--tsa-roots", "missing.pem")
    assert res.code == 2 and "cannot read TSA roots" in res.stderr
    # a trust file with log keys is enough for --checkpoint: the log's own checkpoint is consistent with itself
    work.ok("keys", "trust-export", "--out", "trust.json")
    checkpoint = work.ok("log", "checkpoint").stdout
    (work.dir / "q.checkpoint").write_text(checkpoint)
    code, report = work.verify_json("bundle", "--trust", "trust.json", "--checkpoint", "q.checkpoint")
    assert code == 0 and report["log"]["consistency"].startswith("verified from size")


def test_rotation_refuses_to_lose_keys(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect", "--source", "policies")
    old = work.signer()
    squatter = work.dir / f"affidavit.key.{old.keyid[:8]}.pem"
    squatter.write_text("something else\n")
    res = work.run("keys", "rotate")
    assert res.code == 2 and one_error(res.stderr) == (f"error: {squatter} exists and holds another key; refusing "
                                                       "to overwrite it")
    assert work.signer().keyid == old.keyid and not list(work.dir.glob(".*.rotating"))
    assert not (work.dir / "affidavit.keys.json").exists() or old.keyid in json.dumps(history(work))
    squatter.unlink()
    work.ok("keys", "rotate")
    # a key file swapped behind the history's back is not silently trusted
    (work.dir / "affidavit.key.pem").unlink()
    work.ok("keys", "generate")
    res = work.run("keys", "trust-export", "--out", "trust.json")
    assert res.code == 2 and "is not in the key history" in res.stderr
    assert "without `affidavit keys rotate`" in res.stderr


# ---------------------------------------------------------------- verify STORE --trust


def stored_runs(work: Work) -> list[str]:
    return sorted(p.name.removesuffix(".dsse.json") for p in (work.dir / "store" / "attestations").glob("*.dsse.json"))


def test_verify_store_applies_the_trust_files_windows_and_revocations(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect")
    old = work.signer().keyid
    work.ok("keys", "rotate")
    work.ok("collect")  # by the new key
    work.ok("keys", "trust-export", "--out", "trust.json")
    code, report = work.verify_json("store", "--trust", "trust.json")
    assert code == 0 and report["kind"] == "store", report["failures"]  # the old key signed inside its window

    work.ok("keys", "revoke", old)
    work.ok("keys", "trust-export", "--out", "trust.json")
    code, report = work.verify_json("store", "--trust", "trust.json")
    assert code == 1 and not report["valid"]
    revoked_at = key_entry(history(work), old)["revoked_at"]
    expected = f"key {old} was revoked at {revoked_at}; no trusted timestamp proves the signature predates the revocation"
    refused = {f["member"] for f in report["failures"] if f["reason"] == expected}
    by_old = [r for r in stored_runs(work)
              if json.loads((work.dir / "store" / "attestations" / f"{r}.dsse.json").read_text())
              ["signatures"][0]["keyid"] == old]
    assert by_old and refused == {f"attestations/{r}.dsse.json" for r in by_old}
    assert len(report["failures"]) == len(by_old)  # the new key's runs stay good
    text = work.run("verify", "store", "--trust", "trust.json")
    assert text.code == 1 and text.stdout.splitlines()[0] == f"INVALID: store {work.dir / 'store'}"


def test_verify_store_takes_a_timestamp_before_the_revocation(tmp_path: Path, tsa: TsaEndpoint) -> None:
    work, backdated, keyid = revoked_after_timestamps(tmp_path, tsa, export=False)
    code, report = work.verify_json("store", "--trust", "trust.json")
    assert code == 0, report["failures"]
    # without TSA roots the tokens prove nothing, and the reason says so
    code, report = work.verify_json("store", "--trust", without_tsa_roots(work))
    assert code == 1 and all(f["reason"].endswith("(the bundle carries a timestamp for it: pass --tsa-roots to "
                                                  "check it)") for f in report["failures"]), report["failures"]
    code, _ = work.verify_json("store", "--trust", "no-roots.json", "--tsa-roots", str(tsa.root_cert_path))
    assert code == 0
    # a revocation dated before the signatures: each is timestamped after it
    backdated.ok("keys", "revoke", keyid, "--at", "2020-01-01T00:00:00Z")
    backdated.ok("keys", "trust-export", "--out", "trust.json")
    code, report = backdated.verify_json("store", "--trust", "trust.json")
    assert code == 1 and report["failures"]
    assert all(f["reason"].startswith("signed at 20") and f["reason"].endswith(
        f", after key {keyid} was revoked at 2020-01-01T00:00:00Z") for f in report["failures"]), report["failures"]
