"""Independent verification of exported bundles with sigstore-js (`@sigstore/verify`), offline.

Each run's Sigstore bundle from a real export is verified by tests/sigstore-js/verify.js
with the signer's public key and the bundle's own trusted_root.json (the log key
and the TSA chain), requiring one transparency-log entry and, where the run was
timestamped, one RFC 3161 timestamp. Log entries carry no signed entry timestamp
(inclusionPromise), so without a TSA token the timestamp threshold is 0.
The same verifier must reject the tamper cases: a broken inclusion proof, a
checkpoint signed by another key, a token for another signature, and a token from
a TSA the trusted root does not name.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_timestamps_e2e import Work, make_work, run_ids, tsa_signing

from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.signing.tlog_note import parse_checkpoint, sign_checkpoint
from affidavit.signing.tsa import request_timestamp
from tsa_server import TsaEndpoint
from tsa_server import other_tsa, tsa  # noqa: F401  (pytest fixtures)

JS_DIR = Path(__file__).parent / "sigstore-js"
SETUP = "run `npm ci --prefix tests/sigstore-js` (Node 20 or later) to install the independent verifier"


def node() -> str:
    exe = shutil.which("node")
    assert exe, f"node is not installed: {SETUP}"
    assert (JS_DIR / "node_modules" / "@sigstore" / "verify").is_dir(), \
        f"tests/sigstore-js/node_modules is missing: {SETUP}"
    return exe


def sigstore_js(bundle_json: Path, trusted_root: Path, public_key: Path, hint: str, tlog: int, tsa: int) -> str:
    """The verifier's verdict line: "OK" or "FAIL <code> <message>"."""
    proc = subprocess.run([node(), str(JS_DIR / "verify.js"), str(bundle_json), str(trusted_root), str(public_key),
                           hint, str(tlog), str(tsa)], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"verify.js printed nothing: {proc.stderr}"
    verdict = lines[-1]
    assert (proc.returncode == 0) == (verdict == "OK"), (proc.returncode, proc.stdout, proc.stderr)
    return verdict


@dataclass
class Exported:
    work: Work
    bundle: Path

    def check(self, run_id: str, sigstore: Path | None = None, tsa: int = 1) -> str:
        path = sigstore or self.bundle / "runs" / f"{run_id}.sigstore.json"
        hint = json.loads(path.read_text())["verificationMaterial"]["publicKey"]["hint"]
        return sigstore_js(path, self.bundle / "trusted_root.json", self.work.dir / "affidavit.pub.pem", hint, 1, tsa)


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory, tsa: TsaEndpoint) -> Iterator[Exported]:
    """A bundle of three logged, timestamped runs (so inclusion proofs have hashes)."""
    work = make_work(tmp_path_factory.mktemp("js-stamped"), tsa_signing(tsa))
    work.ok("collect")
    work.ok("collect", "--source", "policies")  # unchanged evidence: still a new signed run
    work.ok("export", "--out", "bundle")
    exported = Exported(work, work.dir / "bundle")
    assert len(run_ids(exported.bundle)) == 3
    yield exported


def edited(exported: Exported, run_id: str, tmp_path: Path, edit: Any) -> Path:
    """A copy of the run's Sigstore bundle with ``edit`` applied to its JSON."""
    obj = json.loads((exported.bundle / "runs" / f"{run_id}.sigstore.json").read_text())
    edit(obj)
    path = tmp_path / f"{run_id}.sigstore.json"
    path.write_text(json.dumps(obj))
    return path


def test_sigstore_js_accepts_every_run_with_log_and_timestamp(stamped: Exported) -> None:
    root = json.loads((stamped.bundle / "trusted_root.json").read_text())
    assert len(root["tlogs"]) == 1 and len(root["timestampAuthorities"]) == 1
    for run_id in run_ids(stamped.bundle):
        assert stamped.check(run_id) == "OK", run_id
        # and it counts what it was given: two timestamps would be more than the run has
        assert stamped.check(run_id, tsa=2).startswith("FAIL TIMESTAMP_ERROR")


def test_sigstore_js_accepts_runs_without_timestamps_at_threshold_0(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    work.ok("collect")
    work.ok("export", "--out", "bundle")
    exported = Exported(work, work.dir / "bundle")
    for run_id in run_ids(exported.bundle):
        assert exported.check(run_id, tsa=0) == "OK"
        # the log entries carry no inclusion promise, so they are no timestamp either
        assert exported.check(run_id, tsa=1).startswith("FAIL TIMESTAMP_ERROR")


def test_sigstore_js_rejects_a_broken_inclusion_proof(stamped: Exported, tmp_path: Path) -> None:
    run_id = run_ids(stamped.bundle)[0]

    def break_proof(obj: dict[str, Any]) -> None:
        proof = obj["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        assert proof["hashes"], "a proof in a three-entry log has hashes"
        first = bytearray(base64.b64decode(proof["hashes"][0]))
        first[0] ^= 1
        proof["hashes"][0] = base64.b64encode(bytes(first)).decode()

    assert stamped.check(run_id) == "OK"
    verdict = stamped.check(run_id, edited(stamped, run_id, tmp_path, break_proof))
    assert verdict.startswith("FAIL TLOG_INCLUSION_PROOF_ERROR"), verdict


def test_sigstore_js_rejects_a_checkpoint_signed_by_another_key(stamped: Exported, tmp_path: Path) -> None:
    run_id = run_ids(stamped.bundle)[1]
    other = LocalSigner(generate_private_key())

    def resign(obj: dict[str, Any]) -> None:
        proof = obj["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        checkpoint = parse_checkpoint(proof["checkpoint"]["envelope"]).checkpoint
        proof["checkpoint"]["envelope"] = sign_checkpoint(checkpoint, other)  # same origin, size and root

    verdict = stamped.check(run_id, edited(stamped, run_id, tmp_path, resign))
    assert verdict.startswith("FAIL TLOG_INCLUSION_PROOF_ERROR"), verdict


def test_sigstore_js_rejects_a_token_for_another_signature(stamped: Exported, tsa: TsaEndpoint,
                                                           tmp_path: Path) -> None:
    run_id = run_ids(stamped.bundle)[2]
    token = request_timestamp(tsa.url, b"another signature")  # a genuine token of the trusted TSA

    def swap(obj: dict[str, Any]) -> None:
        obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
            {"signedTimestamp": base64.b64encode(token).decode()}]

    verdict = stamped.check(run_id, edited(stamped, run_id, tmp_path, swap))
    assert verdict.startswith("FAIL TIMESTAMP_ERROR"), verdict


def test_sigstore_js_rejects_a_token_from_an_untrusted_tsa(stamped: Exported, other_tsa: TsaEndpoint,
                                                           tmp_path: Path) -> None:
    run_id = run_ids(stamped.bundle)[0]
    signature = (stamped.bundle / "runs" / f"{run_id}.sig").read_bytes()
    token = request_timestamp(other_tsa.url, signature)  # over the right signature, by a TSA not in trusted_root

    def swap(obj: dict[str, Any]) -> None:
        obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
            {"signedTimestamp": base64.b64encode(token).decode()}]

    verdict = stamped.check(run_id, edited(stamped, run_id, tmp_path, swap))
    assert verdict.startswith("FAIL TIMESTAMP_ERROR"), verdict


def test_a_missing_verifier_fails_with_the_setup_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "JS_DIR", tmp_path)
    with pytest.raises(AssertionError, match="node_modules is missing: run `npm ci --prefix tests/sigstore-js`"):
        node()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AssertionError, match="node is not installed: run `npm ci --prefix tests/sigstore-js`"):
        node()


def test_the_auditor_readme_sigstore_js_snippet_works(stamped: Exported, other_tsa: TsaEndpoint,
                                                      tmp_path: Path) -> None:
    import re

    (snippet,) = re.findall(r"```js\n(.*?)```", (stamped.bundle / "README.md").read_text(), re.S)
    script = tmp_path / "sigstore-verify.js"
    script.write_text(snippet)
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}
    key = str(stamped.work.dir / "affidavit.pub.pem")

    def run(bundle_json: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([node(), str(script), str(bundle_json), key], cwd=stamped.bundle, env=env,
                              capture_output=True, text=True, timeout=120)

    for run_id in run_ids(stamped.bundle):
        path = stamped.bundle / "runs" / f"{run_id}.sigstore.json"
        result = run(path)
        assert result.returncode == 0 and result.stdout.strip() == f"OK {path}", result.stdout + result.stderr
    run_id = run_ids(stamped.bundle)[0]
    token = request_timestamp(other_tsa.url, (stamped.bundle / "runs" / f"{run_id}.sig").read_bytes())

    def swap(obj: dict[str, Any]) -> None:
        obj["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
            {"signedTimestamp": base64.b64encode(token).decode()}]

    result = run(edited(stamped, run_id, tmp_path, swap))
    assert result.returncode != 0 and "timestamp could not be verified" in result.stderr
