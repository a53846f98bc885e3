"""RFC 3161 timestamps end to end: collect and export against a real local TSA, then verify.

Every run's signature and the bundle statement's signature get a token from the
TSA (`openssl ts -reply` behind HTTP, tests/tsa_server.py); `affidavit verify`
checks each against the auditor's TSA roots and reports the attested time, and
`openssl ts -verify` accepts the stored tokens. A TSA that is down fails the run
with nothing logged or stored; forged, foreign and untrusted tokens make a bundle
INVALID with a precise reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from tlog_fixtures import resign_bundle

from affidavit.agent.cli import main
from affidavit.errors import ConfigError
from affidavit.signing.keys import LocalSigner, load_private_key
from affidavit.signing.tsa import request_timestamp, timestamp_authority_entry, verify_timestamp
from affidavit.store.tlog_store import LogStore
from conftest import require_tool
from tsa_server import TsaEndpoint
from tsa_server import other_tsa, tsa  # noqa: F401  (pytest fixtures)

PASSPHRASE = "timestamps e2e passphrase"
SOURCES = """sources:
  - name: policies
    type: files
    paths: ["docs/*.md"]
    controls: ["common:CC-AI-POLICY"]
  - name: model-cards
    type: files
    paths: ["cards/*.md"]
    controls: ["common:CC-MODEL-CARD"]
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass
class Work:
    """A configured directory with documents, driven through the CLI in-process."""

    dir: Path
    env: dict[str, str]

    def run(self, *args: str) -> Result:
        old = os.getcwd()
        os.chdir(self.dir)
        try:
            res = CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)
        finally:
            os.chdir(old)
        return Result(res.exit_code, res.stdout, res.stderr)

    def ok(self, *args: str) -> Result:
        res = self.run(*args)
        assert res.code == 0, f"affidavit {' '.join(args)}: {res.stdout}{res.stderr}"
        return res

    def configure(self, signing: str = "", sources: str = SOURCES) -> None:
        (self.dir / "affidavit.yaml").write_text(f"store:\n  path: ./store\nsigning:\n  key: ./affidavit.key.pem\n"
                                                 f"{signing}{sources}")

    def signer(self) -> LocalSigner:
        return LocalSigner(load_private_key(self.dir / "affidavit.key.pem", PASSPHRASE.encode()))

    def verify_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        res = self.run("verify", *args, "--json")
        assert res.code in (0, 1), res.stdout + res.stderr
        return res.code, json.loads(res.stdout)


def tsa_signing(endpoint: TsaEndpoint, roots: Path | None = None) -> str:
    return f"  tsa_url: {endpoint.url}\n  tsa_roots: {roots or endpoint.root_cert_path}\n  tsa_timeout: 5\n"


def make_work(root: Path, signing: str = "") -> Work:
    root.mkdir(parents=True, exist_ok=True)
    for folder, name in (("docs", "ai-policy.md"), ("cards", "churn-model.md")):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / name).write_text(f"# {name}\n\nThe {folder} of record.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env["AFFIDAVIT_PASSPHRASE"] = PASSPHRASE
    work = Work(root, env)
    work.configure(signing)
    return work


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def save(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def run_ids(bundle: Path) -> list[str]:
    return sorted(p.name.removesuffix(".sigstore.json") for p in (bundle / "runs").glob("*.sigstore.json"))


def run_token(bundle: Path, run_id: str) -> bytes:
    obj = load(bundle / "runs" / f"{run_id}.sigstore.json")
    (stamp,) = obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    return base64.b64decode(stamp["signedTimestamp"])


def set_run_token(bundle: Path, run_id: str, token: bytes) -> None:
    path = bundle / "runs" / f"{run_id}.sigstore.json"
    obj = load(path)
    obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
        {"signedTimestamp": base64.b64encode(token).decode()}]
    save(path, obj)


def reasons(report: dict[str, Any], member: str | None = None) -> list[str]:
    return [f["reason"] for f in report["failures"] if member is None or f["member"] == member]


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Exported:
    work: Work
    bundle: Path
    before: datetime
    after: datetime


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tsa: TsaEndpoint) -> Iterator[Exported]:
    """Two runs collected and one bundle exported with the TSA configured."""
    work = make_work(tmp_path_factory.mktemp("stamped"), tsa_signing(tsa))
    before = datetime.now(UTC).replace(microsecond=0)
    work.ok("collect")
    work.ok("export", "--out", "bundle")
    after = datetime.now(UTC) + timedelta(seconds=1)
    yield Exported(work, work.dir / "bundle", before, after)


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- the good path


def test_every_signature_is_timestamped_and_verifies(exported: Exported, tsa: TsaEndpoint) -> None:
    work, bundle = exported.work, exported.bundle
    roots = [cert(tsa.root_cert_path)]
    runs = run_ids(bundle)
    assert len(runs) == 2
    for run_id in runs:
        sig = (bundle / "runs" / f"{run_id}.sig").read_bytes()
        info = verify_timestamp(run_token(bundle, run_id), sig, roots)
        assert exported.before <= info.time <= exported.after
        # the store keeps the same token with the run: the export only carried it
        stored = load(work.dir / "store" / "attestations" / f"{run_id}.sigstore.json")
        assert stored["verificationMaterial"]["timestampVerificationData"] == \
            load(bundle / "runs" / f"{run_id}.sigstore.json")["verificationMaterial"]["timestampVerificationData"]
    info = verify_timestamp((bundle / "bundle.tsr").read_bytes(), (bundle / "bundle.sig").read_bytes(), roots)
    assert exported.before <= info.time <= exported.after
    # trusted_root.json names the TSA with its chain, so Sigstore verifiers can check the tokens
    chain = [cert(tsa.tsa_cert_path), cert(tsa.root_cert_path)]
    assert load(bundle / "trusted_root.json")["timestampAuthorities"] == [timestamp_authority_entry(chain, tsa.url)]
    # bundle.tsr is the one member outside the bundle statement and SHA256SUMS (it timestamps the statement)
    assert "bundle.tsr" not in (bundle / "SHA256SUMS").read_text()
    assert "bundle.tsr" not in (bundle / "bundle.payload.json").read_text()


def test_verify_reports_the_attested_times(exported: Exported, tsa: TsaEndpoint) -> None:
    work = exported.work
    code, report = work.verify_json("bundle", "--key", "affidavit.pub.pem", "--log-key", "affidavit-log.pub.pem",
                                    "--tsa-roots", str(tsa.root_cert_path))
    assert code == 0 and report["valid"] and report["failures"] == []
    stamps = report["timestamps"]
    assert stamps["status"] == "verified"
    assert sorted(t["signature"] for t in stamps["tokens"]) == sorted(
        ["the bundle statement", *(f"run {r}" for r in run_ids(exported.bundle))])
    for t in stamps["tokens"]:
        when = datetime.fromisoformat(t["time"].replace("Z", "+00:00"))
        assert t["status"] == "verified" and t["tsa"] == "CN=Affidavit Test TSA,O=Affidavit Test"
        assert exported.before <= when <= exported.after
    assert report["log"]["status"] == "verified"

    res = work.run("verify", "bundle", "--key", "affidavit.pub.pem", "--tsa-roots", str(tsa.root_cert_path))
    assert res.code == 0 and "timestamps: verified" in res.stdout
    assert "the bundle statement: its signature existed at " in res.stdout


def test_without_tsa_roots_the_tokens_are_not_checked(exported: Exported) -> None:
    code, report = exported.work.verify_json("bundle", "--key", "affidavit.pub.pem")
    assert code == 0 and report["valid"]
    assert report["timestamps"]["status"] == "not checked (no --tsa-roots)"
    assert {t["status"] for t in report["timestamps"]["tokens"]} == {"not checked (no --tsa-roots)"}


def test_openssl_ts_verify_accepts_the_stored_tokens(exported: Exported, tsa: TsaEndpoint, tmp_path: Path) -> None:
    exe = require_tool("openssl")
    bundle = exported.bundle

    def openssl_verify(token: bytes, data: Path) -> subprocess.CompletedProcess[str]:
        tsr = tmp_path / "token.tsr"
        tsr.write_bytes(token)
        return subprocess.run([exe, "ts", "-verify", "-in", str(tsr), "-data", str(data), "-CAfile",
                               str(tsa.root_cert_path)], capture_output=True, text=True, timeout=60)

    for run_id in run_ids(bundle):
        ok = openssl_verify(run_token(bundle, run_id), bundle / "runs" / f"{run_id}.sig")
        assert ok.returncode == 0 and "Verification: OK" in ok.stdout, ok.stderr
    ok = openssl_verify((bundle / "bundle.tsr").read_bytes(), bundle / "bundle.sig")
    assert ok.returncode == 0 and "Verification: OK" in ok.stdout, ok.stderr
    # and OpenSSL refuses a token over another signature
    wrong = openssl_verify((bundle / "bundle.tsr").read_bytes(), bundle / "runs" / f"{run_ids(bundle)[0]}.sig")
    assert wrong.returncode != 0


# ---------------------------------------------------------------- tampering: each INVALID with its reason


def test_a_token_for_a_different_signature_is_invalid(exported: Exported, tsa: TsaEndpoint, tmp_path: Path) -> None:
    bundle = copy(exported.bundle, tmp_path)
    run_id = run_ids(bundle)[0]
    set_run_token(bundle, run_id, request_timestamp(tsa.url, b"some other signature"))
    (bundle / "bundle.tsr").unlink()
    resign_bundle(bundle, exported.work.signer())  # as someone holding the bundle key could
    code, report = exported.work.verify_json(str(bundle), "--key", "affidavit.pub.pem", "--tsa-roots",
                                             str(tsa.root_cert_path))
    assert code == 1 and not report["valid"]
    assert reasons(report, f"runs/{run_id}.sigstore.json") == [
        f"its timestamp token does not prove when run {run_id} was signed: timestamp token is for a different "
        "signature"]
    assert report["timestamps"]["status"] == "failed"
    assert [a["ok"] for a in report["artefacts"] if a["run_id"] == run_id] == [False]
    assert all(a["ok"] for a in report["artefacts"] if a["run_id"] != run_id)


def test_a_token_from_an_untrusted_tsa_is_invalid(exported: Exported, tsa: TsaEndpoint, other_tsa: TsaEndpoint,
                                                  tmp_path: Path) -> None:
    bundle = copy(exported.bundle, tmp_path)
    run_id = run_ids(bundle)[1]
    sig = (bundle / "runs" / f"{run_id}.sig").read_bytes()
    set_run_token(bundle, run_id, request_timestamp(other_tsa.url, sig))  # a real token, for the right signature
    (bundle / "bundle.tsr").unlink()
    resign_bundle(bundle, exported.work.signer())
    code, report = exported.work.verify_json(str(bundle), "--key", "affidavit.pub.pem", "--tsa-roots",
                                             str(tsa.root_cert_path))
    assert code == 1
    (reason,) = reasons(report, f"runs/{run_id}.sigstore.json")
    assert reason == (f"its timestamp token does not prove when run {run_id} was signed: TSA certificate "
                      "'CN=Untrusted TSA,O=Untrusted' not issued by a trusted root")


def test_bundle_tsr_is_checked_though_no_statement_covers_it(exported: Exported, tsa: TsaEndpoint,
                                                             other_tsa: TsaEndpoint, tmp_path: Path) -> None:
    bundle = copy(exported.bundle, tmp_path)
    args = ("--key", "affidavit.pub.pem", "--tsa-roots", str(tsa.root_cert_path))
    (bundle / "bundle.tsr").write_bytes(request_timestamp(tsa.url, b"not the bundle signature"))
    code, report = exported.work.verify_json(str(bundle), *args)
    assert code == 1 and reasons(report, "bundle.tsr") == [
        "its timestamp token does not prove when the bundle statement was signed: timestamp token is for a "
        "different signature"]
    (bundle / "bundle.tsr").write_bytes(request_timestamp(other_tsa.url, (bundle / "bundle.sig").read_bytes()))
    code, report = exported.work.verify_json(str(bundle), *args)
    assert code == 1 and "not issued by a trusted root" in reasons(report, "bundle.tsr")[0]
    (bundle / "bundle.tsr").write_bytes(b"\x30\x03garbage")
    code, report = exported.work.verify_json(str(bundle), *args)
    assert code == 1 and reasons(report, "bundle.tsr")[0].startswith(
        "its timestamp token does not prove when the bundle statement was signed: timestamp token is not a DER")
    # removing it only removes the proof of time: the bundle stays valid, with one token fewer
    (bundle / "bundle.tsr").unlink()
    code, report = exported.work.verify_json(str(bundle), *args)
    assert code == 0 and len(report["timestamps"]["tokens"]) == len(run_ids(bundle))


def test_malformed_timestamp_data_is_invalid(exported: Exported, tsa: TsaEndpoint, tmp_path: Path) -> None:
    bundle = copy(exported.bundle, tmp_path)
    run_id = run_ids(bundle)[0]
    path = bundle / "runs" / f"{run_id}.sigstore.json"
    obj = load(path)
    obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [{"signedTimestamp": "%%"}]
    save(path, obj)
    (bundle / "bundle.tsr").unlink()
    resign_bundle(bundle, exported.work.signer())
    code, report = exported.work.verify_json(str(bundle), "--key", "affidavit.pub.pem", "--tsa-roots",
                                             str(tsa.root_cert_path))
    assert code == 1 and reasons(report, f"runs/{run_id}.sigstore.json") == [
        "verificationMaterial.rfc3161Timestamps[0].signedTimestamp is not base64"]
    obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = \
        [{"signedTimestamp": base64.b64encode(run_token(exported.bundle, run_id)).decode()}] * 9
    save(path, obj)
    resign_bundle(bundle, exported.work.signer())
    code, report = exported.work.verify_json(str(bundle), "--key", "affidavit.pub.pem")
    assert code == 1 and reasons(report, f"runs/{run_id}.sigstore.json") == [
        "verificationMaterial.holds 9 timestamps, more than 8 (limit)"]


# ---------------------------------------------------------------- a TSA that fails


def _no_run_was_kept(work: Work) -> None:
    assert list((work.dir / "store" / "attestations").glob("*")) == []
    store = work.dir / "store"
    if LogStore.exists(store):
        with LogStore.open(store) as log:
            assert log.size == 0 and log.checkpoint is None


def test_a_tsa_that_is_down_fails_the_run_cleanly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    roots = tmp_path / "roots.pem"
    work = make_work(tmp_path / "w")
    work.ok("keys", "generate")
    # any PEM certificate will do as roots: the TSA is never reached
    from tsa_server import make_tsa_pki

    shutil.copy(make_tsa_pki(tmp_path / "pki").root_cert, roots)
    work.configure(f"  tsa_url: {url}\n  tsa_roots: {roots}\n  tsa_timeout: 2\n")
    res = work.run("collect", "--json")
    assert res.code == 1
    report = json.loads(res.stdout)
    assert [r["status"] for r in report["runs"]] == ["failed", "failed"]
    for r in report["runs"]:
        assert f"cannot reach timestamp authority {url}" in r["error"]
        assert "the run was not stored or logged (its signature could not be timestamped)" in r["error"]
        assert r["artefacts"] == []
    _no_run_was_kept(work)


def test_a_failing_tsa_answer_fails_the_run(tmp_path: Path, tsa: TsaEndpoint) -> None:
    work = make_work(tmp_path / "w")
    work.configure(f"  tsa_url: {tsa.url}fault/500\n  tsa_roots: {tsa.root_cert_path}\n", sources=SOURCES)
    res = work.run("collect", "--json")
    assert res.code == 1
    errors = [r["error"] for r in json.loads(res.stdout)["runs"]]
    assert all(f"timestamp authority {tsa.url}fault/500 answered HTTP 500" in e for e in errors), errors
    _no_run_was_kept(work)


def test_tokens_from_a_tsa_the_config_does_not_trust_fail_the_run(tmp_path: Path, tsa: TsaEndpoint,
                                                                   other_tsa: TsaEndpoint) -> None:
    work = make_work(tmp_path / "w", tsa_signing(tsa, roots=other_tsa.root_cert_path))
    res = work.run("collect", "--json")
    assert res.code == 1
    for r in json.loads(res.stdout)["runs"]:
        assert f"timestamp authority {tsa.url}: its token does not verify against signing.tsa_roots" in r["error"]
        assert "not issued by a trusted root" in r["error"]
    _no_run_was_kept(work)


def test_export_with_the_tsa_down_fails_and_writes_nothing(exported: Exported, tmp_path: Path) -> None:
    work = Work(tmp_path / "w", exported.work.env)
    shutil.copytree(exported.work.dir, work.dir, ignore=shutil.ignore_patterns("bundle"))
    text = (work.dir / "affidavit.yaml").read_text()
    url = f"http://127.0.0.1:{free_port()}/"
    (work.dir / "affidavit.yaml").write_text("\n".join(
        f"  tsa_url: {url}" if line.startswith("  tsa_url:") else line for line in text.splitlines()) + "\n")
    res = work.run("export", "--out", "again.tar.gz")
    assert res.code != 0
    assert f"error: cannot reach timestamp authority {url}" in res.stderr
    assert not (work.dir / "again.tar.gz").exists()
    assert [p.name for p in work.dir.iterdir() if "again" in p.name] == []


def test_a_missing_roots_file_stops_collect_before_anything(tmp_path: Path, tsa: TsaEndpoint) -> None:
    work = make_work(tmp_path / "w", f"  tsa_url: {tsa.url}\n  tsa_roots: ./nope.pem\n")
    res = work.run("collect")
    assert res.code == 2
    assert res.stderr.startswith(f"error: cannot read TSA roots {work.dir / 'nope.pem'}")
    assert not (work.dir / "store").exists()


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(("signing", "message"), [
    ("  tsa_url: http://tsa.example/\n",
     "signing.tsa_url: RFC 3161 timestamps need the TSA's root certificate(s) to check its tokens: set "
     "signing.tsa_roots to a PEM file"),
    ("  tsa_url: ftp://tsa.example/\n  tsa_roots: r.pem\n", "signing.tsa_url: 'ftp://tsa.example/' is not an "
                                                            "http:// or https:// URL"),
    ("  tsa_url: http://tsa.example/\n  tsa_roots: r.pem\n  tsa_timeout: 0\n", "signing.tsa_timeout"),
    ("  kms_endpoint: localhost:4566\n", "signing.kms_endpoint: 'localhost:4566' is not an http:// or https:// URL"),
    ("  key: gcpkms://projects/p/keys/k\n", "signing.key: 'gcpkms://projects/p/keys/k' is neither a key file nor "
                                            "an AWS KMS key (awskms://...)"),
])
def test_signing_config_errors(tmp_path: Path, signing: str, message: str) -> None:
    from affidavit.config.loader import load_config

    (tmp_path / "affidavit.yaml").write_text(f"signing:\n{signing}")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "affidavit.yaml", cwd=tmp_path, env={})
    assert message in e.value.message


def test_signing_config_paths_resolve_from_the_config(tmp_path: Path) -> None:
    from affidavit.config.loader import load_config

    (tmp_path / "affidavit.yaml").write_text("signing:\n  tsa_url: https://tsa.example/tsr\n  tsa_roots: pki/r.pem\n"
                                             "  key: awskms://alias/evidence\n  kms_region: eu-west-1\n")
    sc = load_config(tmp_path / "affidavit.yaml", cwd=Path("/"), env={}).config.signing
    assert sc.tsa_roots == tmp_path / "pki" / "r.pem" and sc.key == "awskms://alias/evidence" and sc.key_is_kms
    assert sc.tsa_timeout == 10.0 and sc.kms_region == "eu-west-1"
    with pytest.raises(ConfigError, match="signing.key is the AWS KMS key awskms://alias/evidence"):
        sc.key_file
    schema = json.loads(CliRunner().invoke(main, ["schema"]).stdout)["$defs"]["SigningConfig"]["properties"]
    assert schema["key"]["type"] == "string" and "awskms://" in schema["key"]["description"]
    assert {"tsa_url", "tsa_roots", "tsa_timeout", "kms_region", "kms_endpoint"} <= set(schema)


def test_the_auditor_readme_timestamp_commands_work(exported: Exported, tsa: TsaEndpoint, tmp_path: Path) -> None:
    import re

    bundle = copy(exported.bundle, tmp_path)
    (block,) = re.findall(r"```bash\n(.*?)```", (bundle / "README.md").read_text(), re.S)
    assert block.startswith("TSA_ROOT=tsa-root.pem\n")
    script = block.replace("TSA_ROOT=tsa-root.pem", f"TSA_ROOT={tsa.root_cert_path}", 1)
    for name in ("bash", "openssl", "grep", "cut", "base64", "head", "mktemp"):
        require_tool(name)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([require_tool("bash"), "-c", script], cwd=bundle, capture_output=True, text=True,
                              timeout=120)

    result = run()
    runs = len(run_ids(bundle))
    assert result.stdout.count("Verification: OK") == 1 + runs, result.stdout + result.stderr
    assert result.stdout.count("Time stamp: ") == 1 + runs and "FAILED" not in result.stdout
    (bundle / "bundle.tsr").write_bytes(request_timestamp(tsa.url, b"not the bundle signature"))
    result = run()
    assert result.stdout.count("Verification: OK") == runs and "Verification: FAILED" in result.stdout + result.stderr


def test_a_token_dates_only_the_signature_it_was_made_over(exported: Exported, tsa: TsaEndpoint,
                                                           tmp_path: Path) -> None:
    """A token over another signature in the same envelope cannot lend its time to a revoked key's signature."""
    from affidavit.signing.trust import TrustedKey, TrustStore
    from affidavit.signing.verify import verify_bundle

    signer = exported.work.signer()
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)  # only a timestamp before then saves it
    trust = TrustStore({signer.keyid: TrustedKey.of(signer.public_key, revoked_at=later)}, {},
                       (cert(tsa.root_cert_path),))
    assert verify_bundle(exported.bundle, trust).valid  # every signature is timestamped before the revocation

    bundle = copy(exported.bundle, tmp_path)
    envelope = load(bundle / "bundle.dsse.json")
    garbage = b"\x30\x06\x02\x01\x01\x02\x01\x01"
    envelope["signatures"] = [{"keyid": signer.keyid, "sig": base64.b64encode(garbage).decode()},
                              {"keyid": "", "sig": envelope["signatures"][0]["sig"]}]
    (bundle / "bundle.dsse.json").write_text(json.dumps(envelope, indent=1, sort_keys=True) + "\n")
    (bundle / "bundle.sig").write_bytes(garbage)
    (bundle / "bundle.tsr").write_bytes(request_timestamp(tsa.url, garbage))  # a genuine token, over the garbage
    report = verify_bundle(bundle, trust)
    assert not report.valid
    assert [f.reason for f in report.failures if f.member == "bundle.dsse.json"] == [
        f"key {signer.keyid} was revoked at {later.isoformat().replace('+00:00', 'Z')}; "
        "no trusted timestamp proves the signature predates the revocation"]


@pytest.mark.parametrize("out", ["bundle.tar.gz", "bundle.tar"])
def test_archives_carry_the_bundle_token_too(exported: Exported, tsa: TsaEndpoint, out: str) -> None:
    work = exported.work
    work.ok("export", "--out", out)
    code, report = work.verify_json(out, "--key", "affidavit.pub.pem", "--tsa-roots", str(tsa.root_cert_path))
    assert code == 0, report["failures"]
    assert [t["status"] for t in report["timestamps"]["tokens"] if t["signature"] == "the bundle statement"] == \
        ["verified"]
