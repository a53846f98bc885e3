"""Independent verifiers accept what Affidavit signs, and refuse it after tampering.

securesystemslib, the openssl command line, the auditor README's own shell
commands (OpenSSL + coreutils only), and in-toto-attestation's Statement v1.
A missing tool is a failure, never a skip.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

from affidavit.signing.bundle import RunAttestation, write_bundle
from affidavit.signing.dsse import pae, sign_envelope
from affidavit.signing.keys import LocalSigner, algorithm_of, generate_private_key, public_pem
from affidavit.signing.predicate import run_statement
from affidavit.signing.sigstore import make_bundle
from affidavit.signing.verify import verify_bundle
from affidavit.store.base import ArtefactRecord, RunRecord

T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
ALGORITHMS = ["ecdsa-p256", "ed25519"]


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is required by this test and is not installed"
    return path


@dataclass
class Exported:
    signer: LocalSigner
    runs: list[RunAttestation]
    blobs: dict[str, bytes]
    bundle: Path  # a .tar.gz

    def envelopes(self) -> list[dict[str, Any]]:
        """Every run envelope and the bundle envelope, as written into the archive."""
        with tarfile.open(self.bundle) as tf:
            names = [n for n in tf.getnames() if n.endswith(".dsse.json")]
            return [json.loads(tf.extractfile(n).read()) for n in names]  # type: ignore[union-attr]


def make_run(signer: LocalSigner, run_id: str, items: list[tuple[str, bytes]],
             blobs: dict[str, bytes]) -> RunAttestation:
    arts = []
    for name, content in items:
        digest = hashlib.sha256(content).hexdigest()
        blobs[digest] = content
        arts.append(ArtefactRecord(run_id=run_id, digest=digest, name=name, media_type="text/plain", size=len(content),
                                   collector="files", collected_at=T0, controls=("common:ai-policy-documented",)))
    record = RunRecord(run_id, "policies", "files", T0, T0 + timedelta(seconds=30), signer.keyid, "", len(arts),
                       tuple(arts))
    envelope = sign_envelope(run_statement(record, "interop-agent"), signer)
    return RunAttestation(run_id, envelope, make_bundle(envelope, signer.keyid))


def export(tmp_path: Path, algorithm: str) -> Exported:
    signer = LocalSigner(generate_private_key(algorithm))  # type: ignore[arg-type]
    blobs: dict[str, bytes] = {}
    runs = [
        make_run(signer, "run-1", [("policy.md", b"# AI policy\n"), ("risk.md", b"# Risk register\n" * 100)], blobs),
        make_run(signer, "run-2", [("card.md", b"# Model card\n"), ("policy.md", b"# AI policy\n")], blobs),
    ]
    out = tmp_path / "bundle.tar.gz"
    write_bundle(out, runs=runs, open_blob=lambda h: io.BytesIO(blobs[h]), signer=signer,
                 public_keys=[signer.public_key], agent="interop-agent", created=T0)
    return Exported(signer, runs, blobs, out)


@pytest.fixture(params=ALGORITHMS)
def exported(request: pytest.FixtureRequest, tmp_path: Path) -> Exported:
    return export(tmp_path, request.param)


def test_securesystemslib_accepts_every_envelope(exported: Exported) -> None:
    key = SSlibKey.from_crypto(exported.signer.public_key, keyid=exported.signer.keyid)
    envelopes = exported.envelopes()
    assert len(envelopes) == 3  # two runs and the bundle statement
    for env in envelopes:
        verified = SslibEnvelope.from_dict(copy.deepcopy(env)).verify([key], 1)
        assert list(verified) == [exported.signer.keyid]
        tampered = copy.deepcopy(env)
        tampered["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b"sha256", b"sha257")).decode()
        with pytest.raises(VerificationError):
            SslibEnvelope.from_dict(tampered).verify([key], 1)
    other = LocalSigner(generate_private_key())
    with pytest.raises(VerificationError):
        wrong = SSlibKey.from_crypto(other.public_key, keyid=exported.signer.keyid)
        SslibEnvelope.from_dict(copy.deepcopy(envelopes[0])).verify([wrong], 1)


def openssl_verify(folder: Path, pubkey: Path, message: Path, sig: Path,
                   ed25519: bool) -> subprocess.CompletedProcess[str]:
    if ed25519:
        cmd = [tool("openssl"), "pkeyutl", "-verify", "-pubin", "-inkey", str(pubkey), "-rawin", "-in", str(message),
               "-sigfile", str(sig)]
    else:
        cmd = [tool("openssl"), "dgst", "-sha256", "-verify", str(pubkey), "-signature", str(sig), str(message)]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=30)


def test_openssl_command_line_verifies_every_envelope(exported: Exported, tmp_path: Path) -> None:
    ed = algorithm_of(exported.signer.public_key) == "ed25519"
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem(exported.signer.public_key))
    ok_text = "Signature Verified Successfully" if ed else "Verified OK"
    for i, env in enumerate(exported.envelopes()):
        payload = base64.b64decode(env["payload"])
        message, sig = tmp_path / f"pae{i}.bin", tmp_path / f"sig{i}.bin"
        message.write_bytes(pae(env["payloadType"], payload))
        sig.write_bytes(base64.b64decode(env["signatures"][0]["sig"]))
        good = openssl_verify(tmp_path, pub, message, sig, ed)
        assert good.returncode == 0 and ok_text in good.stdout, good.stdout + good.stderr
        message.write_bytes(pae(env["payloadType"], payload + b" "))
        bad = openssl_verify(tmp_path, pub, message, sig, ed)
        assert bad.returncode != 0 and "Verif" in bad.stdout + bad.stderr and ok_text not in bad.stdout


def readme_blocks(folder: Path) -> list[str]:
    """The shell code blocks of the auditor README, in order."""
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", (folder / "README.md").read_text(), re.S)
    assert len(blocks) == 6  # one per step
    return blocks


def readme_script(folder: Path) -> str:
    return "set -euo pipefail\n" + "\n".join(readme_blocks(folder))


def run_readme(folder: Path) -> subprocess.CompletedProcess[str]:
    for name in ("bash", "openssl", "sha256sum", "grep", "cut", "wc", "find", "sort", "diff", "mktemp"):
        tool(name)
    return subprocess.run([tool("bash"), "-c", readme_script(folder)], cwd=folder, capture_output=True, text=True,
                          timeout=120)


def test_auditor_readme_commands_work(exported: Exported, tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    folder.mkdir()
    subprocess.run([tool("tar"), "-xzf", str(exported.bundle), "-C", str(folder)], check=True, timeout=60)
    result = run_readme(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    ok_text = "Signature Verified Successfully" if "pkeyutl" in readme_script(folder) else "Verified OK"
    assert result.stdout.count(ok_text) == 1 + len(exported.runs)  # the bundle and each run
    assert f"{exported.signer.keyid}  -" in result.stdout  # step 1 prints the key id
    assert '"name": "SHA256SUMS"' in result.stdout  # step 3 finds the signed digest of SHA256SUMS
    assert "FAILED" not in result.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "SHA256SUMS", "artefacts", "bundle.dsse.json",
                                                       "bundle.payload.json", "bundle.sig", "keys", "manifest.json",
                                                       "runs"]  # the commands leave the bundle untouched
    assert verify_bundle(folder, {exported.signer.keyid: exported.signer.public_key}).valid


@pytest.mark.parametrize(("tamper", "marker"), [
    ("artefact", ": FAILED"),  # step 4, sha256sum -c
    ("added-file", "> artefacts/sha256/" + "0" * 64),  # step 5, diff
    ("run-payload", "runs/run-1.payload.json: FAILED"),  # step 4 (and step 6, below)
    ("sums", ""),  # step 3: grep finds no signed digest for the new SHA256SUMS
    ("bundle-payload", "Verification failure"),  # step 2, openssl
])
def test_auditor_readme_commands_fail_after_tampering(tmp_path: Path, tamper: str, marker: str) -> None:
    ex = export(tmp_path, "ecdsa-p256")
    folder = tmp_path / "extracted"
    folder.mkdir()
    subprocess.run([tool("tar"), "-xzf", str(ex.bundle), "-C", str(folder)], check=True, timeout=60)
    artefact = next((folder / "artefacts" / "sha256").iterdir())
    if tamper == "artefact":
        data = bytearray(artefact.read_bytes())
        data[0] ^= 1
        artefact.write_bytes(bytes(data))
    elif tamper == "added-file":
        (folder / "artefacts" / "sha256" / ("0" * 64)).write_bytes(b"smuggled")
    elif tamper == "run-payload":
        p = folder / "runs" / "run-1.payload.json"
        p.write_bytes(p.read_bytes().replace(b"policies", b"forgeries"))
    elif tamper == "sums":  # a changed file with a matching, re-computed SHA256SUMS
        old = hashlib.sha256(artefact.read_bytes()).hexdigest()
        artefact.write_bytes(b"forged")
        sums = (folder / "SHA256SUMS").read_text()
        (folder / "SHA256SUMS").write_text(sums.replace(old, hashlib.sha256(b"forged").hexdigest()))
    else:
        p = folder / "bundle.payload.json"
        p.write_bytes(p.read_bytes().replace(b"interop-agent", b"interop-agenT"))
    result = run_readme(folder)
    assert result.returncode != 0, result.stdout + result.stderr
    assert marker in result.stdout
    if tamper == "sums":
        assert result.stdout.count("Verified OK") == 1 and '"name": "SHA256SUMS"' not in result.stdout
    if tamper == "run-payload":  # the per-run signature check catches it on its own too
        blocks = readme_blocks(folder)  # step 1 (sets WORK and KEY) and step 6 alone, without set -e
        alone = subprocess.run([tool("bash"), "-c", "set -u\n" + blocks[0] + blocks[-1]], cwd=folder,
                               capture_output=True, text=True, timeout=60)
        assert "runs/run-1:\nVerification failure" in alone.stdout, alone.stdout + alone.stderr
        assert alone.stdout.count("Verified OK") == 1  # run-2 still verifies


def parse_in_toto(payload: bytes) -> Statement:
    pb = json_format.Parse(payload.decode("utf-8"), statement_pb2.Statement())  # type: ignore[attr-defined]
    stmt = Statement.copy_from_pb(pb)
    stmt.validate()
    return stmt


def test_in_toto_attestation_parses_statements(exported: Exported) -> None:
    envelopes = exported.envelopes()
    for env in envelopes:
        stmt = parse_in_toto(base64.b64decode(env["payload"]))
        assert stmt.pb.type == "https://in-toto.io/Statement/v1"
        assert all(len(s.digest["sha256"]) == 64 for s in stmt.pb.subject)
    run = parse_in_toto(base64.b64decode(exported.runs[0].dsse["payload"]))
    assert run.pb.predicate_type.endswith("/evidence/v1")
    assert [s.name for s in run.pb.subject] == ["policy.md", "risk.md"]
    # the validator is a real check: a statement without subjects or with a misspelt field is refused
    stmt = json.loads(base64.b64decode(exported.runs[0].dsse["payload"]))
    with pytest.raises(ValueError, match="subject"):
        parse_in_toto(json.dumps(dict(stmt, subject=[])).encode())
    with pytest.raises(json_format.ParseError):
        parse_in_toto(json.dumps(dict(stmt, predicatetype="x")).encode())
