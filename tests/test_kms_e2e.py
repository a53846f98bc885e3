"""Signing through AWS KMS end to end, against a real moto server: collect -> export -> verify.

`signing.key: awskms://alias/...` (with kms_region and kms_endpoint) makes collect
and export sign in KMS; no signing passphrase is involved. A hook on every boto3
session enforces the 4,096-byte RAW limit of real KMS (moto does not), so these
runs prove the signatures a real KMS would make for the same messages. moto signs
a DIGEST request wrongly (signing.md), so the bundles here hold one run, which
keeps the bundle statement under 4 KB; the DIGEST path is tested in test_kms.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from test_timestamps_e2e import Work, make_work

from affidavit.signing.keys import keyid_of, load_public_key_pem
from affidavit.signing.kms import RAW_MESSAGE_LIMIT
from affidavit.signing.trust import TrustStore

from moto_server import free_port, moto_url  # noqa: F401  (moto_url: the shared server fixture)

REGION = "us-east-1"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}




@pytest.fixture
def kms_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every KMS Sign call (message type, message size), refusing RAW messages over 4 KB as real KMS does."""
    seen: list[tuple[str, int]] = []

    def check(params: dict[str, Any], **_: Any) -> None:
        kind, message = params.get("MessageType", "RAW"), params["Message"]
        seen.append((kind, len(message)))
        if kind == "RAW" and len(message) > RAW_MESSAGE_LIMIT:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "message longer than 4096"}},
                              "Sign")

    real = boto3.Session

    def session(*args: Any, **kwargs: Any) -> boto3.Session:
        s = real(*args, **kwargs)
        s.events.register("before-parameter-build.kms.Sign", check)
        return s

    monkeypatch.setattr(boto3, "Session", session)
    return seen


def kms_key(moto_url: str, alias: str) -> bytes:
    """A new ECC_NIST_P256 signing key under ``alias``; its public key as PEM."""
    kms = boto3.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing") \
        .client("kms", endpoint_url=moto_url)
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    der = kms.get_public_key(KeyId=key["KeyId"])["PublicKey"]
    return serialization.load_der_public_key(der).public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo)


def kms_work(tmp_path: Path, moto_url: str, key: str, log_key: str | None = None) -> Work:
    work = make_work(tmp_path / "w")
    work.env = {k: v for k, v in work.env.items() if not k.startswith("AWS_") and k != "AFFIDAVIT_PASSPHRASE"}
    work.env.update(AWS_ENV)
    log_line = f"  log_key: {log_key}\n" if log_key else ""
    work.configure(f"  key: {key}\n{log_line}  kms_region: {REGION}\n  kms_endpoint: {moto_url}\n")
    text = (work.dir / "affidavit.yaml").read_text().replace("  key: ./affidavit.key.pem\n", "")
    (work.dir / "affidavit.yaml").write_text(text)
    return work


def test_collect_export_verify_with_a_kms_key(tmp_path: Path, moto_url: str, kms_calls: list[tuple[str, int]]) -> None:
    pem = kms_key(moto_url, "alias/affidavit-e2e")
    work = kms_work(tmp_path, moto_url, "awskms://alias/affidavit-e2e")
    res = work.ok("collect", "--source", "policies", "--json")  # no AFFIDAVIT_PASSPHRASE anywhere
    runs = json.loads(res.stdout)["runs"]
    assert [r["status"] for r in runs] == ["signed"]
    assert not (work.dir / "affidavit.key.pem").exists()  # nothing local signs the evidence
    # the transparency log key is local: its passphrase was made for it, mode 0600, and the user told
    pw = work.dir / "affidavit-log.passphrase"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600 and str(pw) in res.stderr
    work.ok("export", "--out", "bundle.tar.gz")
    assert kms_calls and all(kind == "RAW" and size <= RAW_MESSAGE_LIMIT for kind, size in kms_calls)
    assert len(kms_calls) == 2  # the run and the bundle statement

    (work.dir / "kms.pub.pem").write_bytes(pem)
    assert work.ok("keys", "export-public").stdout.encode() == pem
    code, report = work.verify_json("bundle.tar.gz", "--key", "kms.pub.pem", "--log-key", "affidavit-log.pub.pem")
    assert code == 0 and report["valid"], report["failures"]
    keyid = keyid_of(load_public_key_pem(pem, "kms"))
    assert report["signer_keyids"] == [keyid] and {r["keyid"] for r in report["runs"]} == {keyid}
    assert report["log"]["status"] == "verified"

    # the trust file of a KMS key lives beside the config
    work.ok("keys", "trust-export", "--out", "trust.json")
    assert set(TrustStore.from_file(work.dir / "trust.json").keys) == {keyid}
    assert (work.dir / "affidavit.keys.json").is_file()
    code, report = work.verify_json("bundle.tar.gz", "--trust", "trust.json")
    assert code == 0 and report["log"]["status"] == "verified"

    # the log key's passphrase is needed from now on, like any key file's
    pw.rename(work.dir / "elsewhere")
    res = work.run("collect", "--source", "policies")
    assert res.code == 2 and "error: no passphrase for the transparency log key" in res.stderr
    res = work.run("evidence", "add", "docs/ai-policy.md", "--control", "common:CC-AI-POLICY")
    assert res.code == 2 and "error: no passphrase for the transparency log key" in res.stderr
    # manual evidence signs through KMS like collect does
    (work.dir / "elsewhere").rename(pw)
    res = work.run("evidence", "add", "docs/ai-policy.md", "--control", "common:CC-AI-POLICY")
    assert res.code == 0, res.stderr
    assert "signed manual/ai-policy.md" in res.stdout


def test_log_key_in_kms_too_needs_no_passphrase_at_all(tmp_path: Path, moto_url: str,
                                                       kms_calls: list[tuple[str, int]]) -> None:
    kms_key(moto_url, "alias/evidence-2")
    log_pem = kms_key(moto_url, "alias/log-2")
    work = kms_work(tmp_path, moto_url, "awskms://alias/evidence-2", log_key="awskms://alias/log-2")
    work.ok("collect", "--source", "policies")
    assert not list(work.dir.glob("*.passphrase")) and not list(work.dir.glob("*.key.pem"))
    (work.dir / "log.pub.pem").write_bytes(log_pem)
    checkpoint = work.ok("log", "checkpoint").stdout
    work.ok("export", "--out", "bundle")
    res = work.ok("keys", "export-public")
    (work.dir / "kms.pub.pem").write_text(res.stdout)
    code, report = work.verify_json("bundle", "--key", "kms.pub.pem", "--log-key", "log.pub.pem")
    assert code == 0 and report["log"]["status"] == "verified", report["failures"]
    assert report["log"]["log_id"] == keyid_of(load_public_key_pem(log_pem, "log"))
    assert checkpoint.startswith(report["log"]["origin"] + "\n1\n")
    assert all(kind == "RAW" for kind, _ in kms_calls)  # checkpoints are signed in KMS too


def test_kms_errors_are_one_clean_line(tmp_path: Path, moto_url: str) -> None:
    work = kms_work(tmp_path, moto_url, "awskms://alias/does-not-exist")
    res = work.run("collect")
    assert res.code == 2
    assert "KMS key alias/does-not-exist does not exist" in res.stderr and "Traceback" not in res.stderr
    assert not (work.dir / "store").exists()

    work = kms_work(tmp_path / "down", f"http://127.0.0.1:{free_port()}", "awskms://alias/affidavit-e2e")
    res = work.run("collect")
    assert res.code != 0 and "cannot reach AWS KMS to read the public key with key alias/affidavit-e2e" in res.stderr
    assert not (work.dir / "store").exists()
