"""The auditor bundle: writing it (three forms, deterministic, atomic) and verifying it offline.

Run attestations are made directly with the signing functions (no store).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from affidavit.errors import InputError, StoreError, UsageError
from affidavit.signing.archive import ReadLimits
from affidavit.signing.bundle import (
    BUNDLE_DSSE,
    BUNDLE_FILES,
    RunAttestation,
    json_bytes,
    write_bundle,
)
from affidavit.signing.dsse import pae, sign_envelope
from affidavit.signing.keys import LocalSigner, PublicKey, generate_private_key, keyid_of
from affidavit.signing.predicate import run_statement
from affidavit.signing.sigstore import make_bundle
from affidavit.signing.statement import BUNDLE_PREDICATE, make_statement
from affidavit.signing.verify import VerifyReport, verify_bundle
from affidavit.store.base import ArtefactRecord, RunRecord

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
AGENT = "agent-test"
SHARED = b'{"policy": "AI use policy v3", "approved": true}'
RUN_A = "20261129T100000Z-model-registry"
RUN_B = "20261129T110000Z-ai-policies"


def make_run(signer: LocalSigner, run_id: str, source: str, items: list[tuple[str, bytes, tuple[str, ...]]],
             blobs: dict[str, bytes], start: datetime = T0) -> RunAttestation:
    arts = []
    for name, content, controls in items:
        digest = hashlib.sha256(content).hexdigest()
        blobs[digest] = content
        arts.append(ArtefactRecord(
            run_id=run_id, digest=digest, name=name, media_type="application/json", size=len(content),
            collector="test", collected_at=start, controls=controls,
            findings=tuple({"control": c, "result": "pass", "reason": "present"} for c in controls), ttl="P7D"))
    record = RunRecord(run_id, source, "files", start, start + timedelta(minutes=1), signer.keyid, "", len(arts),
                       tuple(arts))
    envelope = sign_envelope(run_statement(record, AGENT), signer)
    return RunAttestation(run_id, envelope, make_bundle(envelope, signer.keyid))


@dataclass
class Evidence:
    signer: LocalSigner
    runs: list[RunAttestation]
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def trust(self) -> dict[str, PublicKey]:
        return {self.signer.keyid: self.signer.public_key}

    def open_blob(self, hexd: str) -> BinaryIO:
        return io.BytesIO(self.blobs[hexd])

    def write(self, out: Path | str, **kw: Any) -> Any:
        args: dict[str, Any] = dict(runs=self.runs, open_blob=self.open_blob, signer=self.signer,
                                    public_keys=[self.signer.public_key], agent=AGENT, created=T0,
                                    extra=[("controls/catalog.yaml", b"controls: []\n")])
        args.update(kw)
        return write_bundle(out, **args)


def make_evidence(signer: LocalSigner | None = None) -> Evidence:
    signer = signer or LocalSigner(generate_private_key())
    blobs: dict[str, bytes] = {}
    run_a = make_run(signer, RUN_A, "model-registry", [
        ("mlflow/registered-model/churn/3.json", b'{"model": "churn", "version": 3, "stage": "Production"}',
         ("common:CC-MODEL-APPROVAL",)),
        ("mlflow/registered-model/churn/card.md", b"# Model card\n\nChurn model, v3.\n" * 50,
         ("common:CC-MODEL-CARD",)),
        ("policies/ai-use.json", SHARED, ("common:ai-policy-documented",)),
    ], blobs)
    run_b = make_run(signer, RUN_B, "ai-policies", [
        ("docs/ai-policy/ai-use.json", SHARED, ("common:ai-policy-documented", "iso42001:A.2.2")),
        ("docs/ai-policy/risk.md", b"# Risk assessment\n" + bytes(range(256)) * 40, ()),
    ], blobs, T0 + timedelta(hours=1))
    return Evidence(signer, [run_a, run_b], blobs)


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    return make_evidence()


def failure_members(report: VerifyReport) -> set[str]:
    return {f.member for f in report.failures}


def reasons(report: VerifyReport, member: str) -> list[str]:
    return [f.reason for f in report.failures if f.member == member]


def pack(src: Path, out: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(out, mode) as tf:
        for path in sorted(src.rglob("*")):
            if not path.is_dir():
                tf.add(path, path.relative_to(src).as_posix(), recursive=False)
    return out


def resign(folder: Path, signer: LocalSigner, *, keep_sums: bool = False) -> None:
    """Rebuild SHA256SUMS and the bundle statement after an edit, as a malicious exporter would."""
    for name in BUNDLE_FILES:
        (folder / name).unlink(missing_ok=True)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != "SHA256SUMS")
    digests = [(n, hashlib.sha256((folder / n).read_bytes()).hexdigest()) for n in names]
    if not keep_sums:
        (folder / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in digests))
    digests.append(("SHA256SUMS", hashlib.sha256((folder / "SHA256SUMS").read_bytes()).hexdigest()))
    payload = make_statement(digests, BUNDLE_PREDICATE, {"format_version": 1, "created": "2026-11-29T10:00:00Z",
                                                          "agent": AGENT, "members": len(digests)})
    env = sign_envelope(payload, signer)
    (folder / "bundle.payload.json").write_bytes(payload)
    (folder / "bundle.sig").write_bytes(base64.b64decode(env["signatures"][0]["sig"]))
    (folder / BUNDLE_DSSE).write_bytes(json_bytes(env))


def artefact_path(folder: Path, content: bytes) -> Path:
    return folder / "artefacts" / "sha256" / hashlib.sha256(content).hexdigest()


# -- writing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bundle.tar.gz", "bundle.tgz", "bundle.tar", "bundle-dir"])
def test_each_form_verifies(evidence: Evidence, tmp_path: Path, name: str) -> None:
    written: list[int] = []
    summary = evidence.write(tmp_path / name, progress=written.append)
    assert summary.path == tmp_path / name
    assert summary.runs == 2 and summary.artefacts == 4  # the shared artefact is stored once
    assert sum(written) == summary.artefact_bytes == sum(len(b) for b in evidence.blobs.values())
    read: list[int] = []
    report = verify_bundle(tmp_path / name, evidence.trust, progress=read.append)
    assert report.valid, report.summary_lines()
    assert report.signer_keyids == (evidence.signer.keyid,)
    if summary.kind == "directory":
        total = sum(p.stat().st_size for p in (tmp_path / name).rglob("*") if p.is_file())
    else:
        with tarfile.open(tmp_path / name) as tf:
            total = sum(i.size for i in tf.getmembers())
    assert sum(read) == total > summary.artefact_bytes
    assert [r.run_id for r in report.runs] == [RUN_A, RUN_B] and all(r.verified for r in report.runs)
    assert len(report.artefacts) == 5 and all(a.ok for a in report.artefacts)
    assert report.summary_lines()[0].startswith("VALID")
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind
    if summary.kind != "directory":
        assert summary.sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_members_and_manifest(evidence: Evidence, tmp_path: Path) -> None:
    summary = evidence.write(tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar") as tf:
        infos = tf.getmembers()
        names = [i.name for i in infos]
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        sums = tf.extractfile("SHA256SUMS").read().decode()  # type: ignore[union-attr]
    assert names[:2] == ["manifest.json", "README.md"]
    assert names[-4:] == ["SHA256SUMS", "bundle.payload.json", "bundle.sig", "bundle.dsse.json"]
    assert all(i.isreg() and i.mode == 0o644 and i.uid == 0 and i.mtime == int(T0.timestamp()) for i in infos)
    assert f"runs/{RUN_A}.payload.json" in names and f"runs/{RUN_B}.sig" in names
    assert "controls/catalog.yaml" in names
    assert manifest["format"] == "affidavit-bundle" and manifest["format_version"] == 1
    assert manifest["extra"] == ["controls/catalog.yaml"] and manifest["keys"] == [evidence.signer.keyid]
    shared = next(a for a in manifest["artefacts"] if a["digest"] == "sha256:" + hashlib.sha256(SHARED).hexdigest())
    assert shared["runs"] == [RUN_A, RUN_B] and len(shared["names"]) == 2
    assert shared["controls"] == ["common:ai-policy-documented", "iso42001:A.2.2"]
    assert {r["run_id"]: r["artefacts"] for r in manifest["runs"]} == {RUN_A: 3, RUN_B: 2}
    assert len(sums.splitlines()) == len(names) - 4  # everything but SHA256SUMS and bundle.*
    assert summary.members == len(names)


class DeterministicSigner(LocalSigner):
    def sign(self, data: bytes) -> bytes:
        assert isinstance(self.private_key, ec.EllipticCurvePrivateKey)
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_same_input_gives_identical_archives(tmp_path: Path, algorithm: str) -> None:
    key = generate_private_key(algorithm)  # type: ignore[arg-type]
    ev = make_evidence(LocalSigner(key) if algorithm == "ed25519" else DeterministicSigner(key))
    for suffix in ("tar", "tar.gz"):
        one, two = ev.write(tmp_path / f"one.{suffix}"), ev.write(tmp_path / f"two.{suffix}")
        assert (tmp_path / f"one.{suffix}").read_bytes() == (tmp_path / f"two.{suffix}").read_bytes()
        assert one.sha256 == two.sha256
    reordered = Evidence(ev.signer, list(reversed(ev.runs)), ev.blobs)
    reordered.write(tmp_path / "three.tar")
    assert (tmp_path / "three.tar").read_bytes() == (tmp_path / "one.tar").read_bytes()


def test_corrupt_blob_is_never_exported(evidence: Evidence, tmp_path: Path) -> None:
    target = hashlib.sha256(SHARED).hexdigest()
    for name, corrupt in [("a.tar.gz", SHARED.replace(b"v3", b"v4")), ("b.tar", SHARED + b" "),
                          ("c.tar", SHARED[:-1]), ("d-dir", SHARED.upper())]:
        blobs = dict(evidence.blobs, **{target: corrupt})
        with pytest.raises(StoreError, match=f"sha256:{target} is corrupt"):
            evidence.write(tmp_path / name, open_blob=lambda h: io.BytesIO(blobs[h]))
    assert list(tmp_path.iterdir()) == []


def test_unreadable_blob_is_a_store_error(evidence: Evidence, tmp_path: Path) -> None:
    def missing(hexd: str) -> BinaryIO:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(StoreError, match="cannot be read"):
        evidence.write(tmp_path / "x.tar.gz", open_blob=missing)
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_requests(evidence: Evidence, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="which bundle form"):
        evidence.write(tmp_path / "bundle.zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="not an empty directory"):
        evidence.write(tmp_path / "full")
    with pytest.raises(UsageError, match="nothing to export"):
        evidence.write(tmp_path / "e.tar", runs=[])
    for bad in ["../evil", "/abs", "manifest.json", "runs/x.sig", "a//b", "keys/k.pem", ".hidden"]:
        with pytest.raises(UsageError, match="cannot add bundle member"):
            evidence.write(tmp_path / "e.tar", extra=[(bad, b"x")])
    with pytest.raises(UsageError, match="same run"):
        evidence.write(tmp_path / "e.tar", runs=evidence.runs + evidence.runs[:1])
    (tmp_path / "empty").mkdir()
    evidence.write(tmp_path / "empty")  # an empty directory is fine
    assert verify_bundle(tmp_path / "empty", evidence.trust).valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


def test_writer_refuses_bad_runs(evidence: Evidence, tmp_path: Path) -> None:
    run = evidence.runs[0]
    forged = dict(run.dsse, payload=base64.b64encode(base64.b64decode(run.dsse["payload"]) + b" ").decode())
    cases: list[tuple[RunAttestation, str]] = [
        (RunAttestation(run.run_id, forged, make_bundle(forged, evidence.signer.keyid)), "does not verify"),
        (RunAttestation("../x", run.dsse, run.sigstore), "run id"),
        (RunAttestation("other-run", run.dsse, run.sigstore), "names run"),
        (RunAttestation(run.run_id, run.dsse, evidence.runs[1].sigstore), "does not wrap"),
        (RunAttestation(run.run_id, {"payload": 1}, run.sigstore), "malformed DSSE"),
    ]
    for att, message in cases:
        with pytest.raises(StoreError, match=message):
            evidence.write(tmp_path / "x.tar", runs=[att])
    assert list(tmp_path.iterdir()) == []


# -- verifying ----------------------------------------------------------------------------------

def test_ed25519_bundle_verifies(tmp_path: Path) -> None:
    ev = make_evidence(LocalSigner(generate_private_key("ed25519")))
    ev.write(tmp_path / "b.tar.gz")
    report = verify_bundle(tmp_path / "b.tar.gz", ev.trust)
    assert report.valid, report.summary_lines()
    other = LocalSigner(generate_private_key("ed25519"))
    assert not verify_bundle(tmp_path / "b.tar.gz", {other.keyid: other.public_key}).valid


def test_no_trust_anchor_is_a_usage_error(evidence: Evidence, tmp_path: Path) -> None:
    evidence.write(tmp_path / "b.tar")
    with pytest.raises(UsageError, match="no trust anchor"):
        verify_bundle(tmp_path / "b.tar", {})


def test_unreadable_input_is_an_input_error(tmp_path: Path) -> None:
    key = LocalSigner(generate_private_key())
    trust = {key.keyid: key.public_key}
    with pytest.raises(InputError, match="does not exist"):
        verify_bundle(tmp_path / "nope.tar.gz", trust)
    for name, data in [("text.tar.gz", b"hello, this is not an archive\n" * 40), ("empty.tar", b""),
                       ("gz.tar.gz", __import__("gzip").compress(b"not a tar inside" * 100))]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match="is not a bundle"):
            verify_bundle(tmp_path / name, trust)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="is not a bundle"):
        verify_bundle(tmp_path / "fifo", trust)


def test_truncated_archive_is_invalid_not_a_crash(evidence: Evidence, tmp_path: Path) -> None:
    evidence.write(tmp_path / "b.tar.gz")
    data = (tmp_path / "b.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    report = verify_bundle(tmp_path / "cut.tar.gz", evidence.trust)
    assert not report.valid
    assert any("truncated or corrupt" in f.reason for f in report.failures)
    assert "bundle.dsse.json" in failure_members(report)


Tamper = Callable[[Path, Evidence], str]  # edits an unpacked bundle; returns the member that must be named


def change_artefact_byte(d: Path, ev: Evidence) -> str:
    p = artefact_path(d, SHARED)
    data = bytearray(p.read_bytes())
    data[5] ^= 1
    p.write_bytes(bytes(data))
    return str(p.relative_to(d))


def remove_artefact(d: Path, ev: Evidence) -> str:
    p = artefact_path(d, SHARED)
    p.unlink()
    return str(p.relative_to(d))


def add_artefact(d: Path, ev: Evidence) -> str:
    p = artefact_path(d, b"smuggled")
    p.write_bytes(b"smuggled")
    return str(p.relative_to(d))


def edit_manifest(d: Path, ev: Evidence) -> str:
    m = json.loads((d / "manifest.json").read_text())
    m["runs"][0]["source"] = "someone-else"
    (d / "manifest.json").write_bytes(json_bytes(m))
    return "manifest.json"


def edit_readme(d: Path, ev: Evidence) -> str:
    (d / "README.md").write_text((d / "README.md").read_text().replace("openssl", "true"))
    return "README.md"


def edit_run_statement(d: Path, ev: Evidence) -> str:
    p = d / "runs" / f"{RUN_A}.dsse.json"
    env = json.loads(p.read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["source"]["name"] = "forged"
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    p.write_bytes(json_bytes(env))
    return f"runs/{RUN_A}.dsse.json"


def other_key_signature(d: Path, ev: Evidence) -> str:
    other = LocalSigner(generate_private_key())
    env = json.loads((d / BUNDLE_DSSE).read_text())
    payload = base64.b64decode(env["payload"])
    sig = other.sign(pae(env["payloadType"], payload))
    env["signatures"] = [{"keyid": ev.signer.keyid, "sig": base64.b64encode(sig).decode()}]
    (d / BUNDLE_DSSE).write_bytes(json_bytes(env))
    return BUNDLE_DSSE


TAMPERS: list[Tamper] = [change_artefact_byte, remove_artefact, add_artefact, edit_manifest, edit_readme,
                         edit_run_statement, other_key_signature]


@pytest.mark.parametrize("form", ["directory", "tar.gz"])
@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_tamper_matrix(evidence: Evidence, tmp_path: Path, tamper: Tamper, form: str) -> None:
    folder = tmp_path / "b"
    evidence.write(folder)
    member = tamper(folder, evidence)
    target = folder if form == "directory" else pack(folder, tmp_path / "b.tar.gz")
    report = verify_bundle(target, evidence.trust)
    assert not report.valid
    assert member in failure_members(report), report.summary_lines()
    assert report.summary_lines()[0].startswith("INVALID")
    assert any(line.startswith(f"  {member}: ") for line in report.summary_lines())


def test_tamper_reasons_are_precise(evidence: Evidence, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    evidence.write(folder)
    digest = hashlib.sha256(SHARED).hexdigest()
    changed = change_artefact_byte(folder, evidence)
    first = reasons(verify_bundle(folder, evidence.trust), changed)[0]
    assert first.startswith(f"digest mismatch (the bundle statement says {digest}, file has ")
    report = verify_bundle(folder, evidence.trust)
    assert [a.ok for a in report.artefacts if a.digest.endswith(digest)] == [False, False]
    assert sum(a.ok for a in report.artefacts) == 3  # the other artefacts are still intact
    remove_artefact(folder, evidence)
    assert "missing (subject of the bundle statement)" in reasons(verify_bundle(folder, evidence.trust), changed)
    added = add_artefact(folder, evidence)
    assert "not covered by any signed statement" in reasons(verify_bundle(folder, evidence.trust), added)
    run = edit_run_statement(folder, evidence)
    assert any(r.startswith("signature does not verify with any trusted key (signed by keyid " + evidence.signer.keyid)
               for r in reasons(verify_bundle(folder, evidence.trust), run))


def test_wrong_trusted_key(evidence: Evidence, tmp_path: Path) -> None:
    evidence.write(tmp_path / "b.tar.gz")
    other = LocalSigner(generate_private_key())
    report = verify_bundle(tmp_path / "b.tar.gz", {other.keyid: other.public_key})
    assert not report.valid and report.signer_keyids == ()
    assert {BUNDLE_DSSE, f"runs/{RUN_A}.dsse.json", f"runs/{RUN_B}.dsse.json"} <= failure_members(report)
    assert not any(a.ok for a in report.artefacts) and not any(r.verified for r in report.runs)
    # the bundle's own keys/ copy is never trusted, even under the trusted keyid
    report = verify_bundle(tmp_path / "b.tar.gz", {evidence.signer.keyid: other.public_key})
    assert not report.valid


def test_run_signed_by_another_trusted_key(evidence: Evidence, tmp_path: Path) -> None:
    """A run re-signed by a key the auditor trusts too still verifies; one the auditor does not, fails."""
    other = LocalSigner(generate_private_key())
    run_b = make_run(other, RUN_B, "ai-policies", [("x.json", b"{}", ())], evidence.blobs)
    ev = Evidence(evidence.signer, [evidence.runs[0], run_b], evidence.blobs)
    ev.write(tmp_path / "b.tar", public_keys=[evidence.signer.public_key, other.public_key])
    assert verify_bundle(tmp_path / "b.tar", {**ev.trust, other.keyid: other.public_key}).valid
    report = verify_bundle(tmp_path / "b.tar", ev.trust)
    assert failure_members(report) == {f"runs/{RUN_B}.dsse.json"}
    assert other.keyid in report.failures[0].reason


def hostile_tar(good: Path, out: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(good) as src, tarfile.open(out, "w") as dst:
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        add(dst)
    return out


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
            link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname = kind, len(data), link
        tf.addfile(info, io.BytesIO(data) if data else None)
    return add


@pytest.mark.parametrize(("add", "member", "reason"), [
    (_member("../evil", data=b"x"), "../evil", "path escapes the bundle"),
    (_member("runs/../../evil", data=b"x"), "runs/../../evil", "path escapes the bundle"),
    (_member("/etc/evil", data=b"x"), "/etc/evil", "path is absolute"),
    (_member("evil-link", tarfile.SYMTYPE, link="/etc/passwd"), "evil-link", "symbolic link"),
    (_member("evil-hard", tarfile.LNKTYPE, link="manifest.json"), "evil-hard", "hard link"),
    (_member("evil-dev", tarfile.CHRTYPE), "evil-dev", "device file refused"),
    (_member("evil-blk", tarfile.BLKTYPE), "evil-blk", "device file refused"),
    (_member("evil-fifo", tarfile.FIFOTYPE), "evil-fifo", "FIFO refused"),
    (_member("manifest.json", data=b'{"format": "evil"}'), "manifest.json", "duplicate member"),
    (_member("./README.md", data=b"evil"), "README.md", "duplicate member"),
])
def test_hostile_archive_members(evidence: Evidence, tmp_path: Path, add: Callable[[tarfile.TarFile], None],
                                 member: str, reason: str) -> None:
    evidence.write(tmp_path / "good.tar")
    bad = hostile_tar(tmp_path / "good.tar", tmp_path / "bad.tar", add)
    report = verify_bundle(bad, evidence.trust)
    assert not report.valid
    assert any(f.member == member and reason in f.reason for f in report.failures), report.summary_lines()
    assert not any("{" in f.reason for f in report.failures)  # every message is fully formatted
    assert not (tmp_path.parent / "evil").exists()


def test_dot_slash_prefix_is_accepted(evidence: Evidence, tmp_path: Path) -> None:
    """`tar -czf b.tgz -C dir .` writes ./-prefixed names and a '.' entry: still the same bundle."""
    evidence.write(tmp_path / "b")
    with tarfile.open(tmp_path / "b.tgz", "w:gz") as tf:
        tf.add(tmp_path / "b", ".")
    assert verify_bundle(tmp_path / "b.tgz", evidence.trust).valid


def test_directory_with_links_and_fifos(evidence: Evidence, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    evidence.write(folder)
    (folder / "keys" / "link.pem").symlink_to("/etc/hostname")
    os.mkfifo(folder / "pipe")
    report = verify_bundle(folder, evidence.trust)
    assert any(f.member == "keys/link.pem" and "symbolic link" in f.reason for f in report.failures)
    assert any(f.member == "pipe" and "not a regular file" in f.reason for f in report.failures)


def test_limits(evidence: Evidence, tmp_path: Path) -> None:
    evidence.write(tmp_path / "b.tar.gz")
    report = verify_bundle(tmp_path / "b.tar.gz", evidence.trust, limits=ReadLimits(max_members=5))
    assert any(f.member == "(archive)" and "more than 5 members" in f.reason for f in report.failures)
    report = verify_bundle(tmp_path / "b.tar.gz", evidence.trust, limits=ReadLimits(max_metadata_bytes=100))
    assert "metadata member larger than 100 bytes (limit)" in reasons(report, "manifest.json")
    report = verify_bundle(tmp_path / "b.tar.gz", evidence.trust, limits=ReadLimits(max_total_bytes=1000))
    assert any("expands to more than 1000 bytes" in f.reason for f in report.failures)
    assert not report.valid


def test_resigned_bundle_with_unknown_format_version(evidence: Evidence, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    evidence.write(folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["format_version"] = 2
    (folder / "manifest.json").write_bytes(json_bytes(m))
    resign(folder, evidence.signer)
    report = verify_bundle(folder, evidence.trust)
    assert [(f.member, f.reason) for f in report.failures] == [("manifest.json", "unsupported bundle format version 2")]


def test_resigned_manifest_must_agree_with_runs(evidence: Evidence, tmp_path: Path) -> None:
    """A signer who lies in the manifest is still caught: it must agree with the run statements."""
    folder = tmp_path / "b"
    evidence.write(folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["runs"][0]["started"] = "2020-01-01T00:00:00Z"
    m["artefacts"][0]["controls"].append("soc2:CC6.1")
    m["keys"] = []
    (folder / "manifest.json").write_bytes(json_bytes(m))
    resign(folder, evidence.signer)
    report = verify_bundle(folder, evidence.trust)
    assert failure_members(report) == {"manifest.json"}
    text = " | ".join(reasons(report, "manifest.json"))
    assert f"run {RUN_A}: started is '2020-01-01T00:00:00Z'" in text and "controls" in text and "keys is []" in text


@pytest.mark.parametrize(("member", "content", "reason"), [
    (f"runs/{RUN_A}.dsse.json", b"{not json", "not valid JSON"),
    (f"runs/{RUN_A}.dsse.json", b"[]", "malformed DSSE envelope"),
    (f"runs/{RUN_A}.dsse.json", b'{"payloadType": 1}', "malformed DSSE envelope"),
    (f"runs/{RUN_A}.sigstore.json", b'{"mediaType": "x"}', "not a Sigstore bundle"),
    (f"runs/{RUN_A}.sig", b"\x00" * 70, "differs from the signature"),
    (f"runs/{RUN_A}.payload.json", b"{}", "differs from the payload"),
    ("manifest.json", b'"a string"', "not an Affidavit bundle manifest"),
    ("manifest.json", b'{"format": "affidavit-bundle", "format_version": 1, "runs": 3}', "runs is not a list"),
    ("SHA256SUMS", b"nonsense\n", "line 1 is not"),
    ("keys/" + "0" * 64 + ".pub.pem", b"not a key", "not a PEM public key"),
    ("runs/stray.txt", b"x", "unexpected file in runs/"),
    ("runs/ghost.sig", b"x", "belongs to no run"),
    ("artefacts/md5/abc", b"x", "unexpected file in artefacts/"),
])
def test_malformed_members_are_failures_not_crashes(evidence: Evidence, tmp_path: Path, member: str, content: bytes,
                                                    reason: str) -> None:
    folder = tmp_path / "b"
    evidence.write(folder)
    (folder / member).parent.mkdir(parents=True, exist_ok=True)
    (folder / member).write_bytes(content)
    resign(folder, evidence.signer, keep_sums=member == "SHA256SUMS")  # the only problem: the content itself
    report = verify_bundle(folder, evidence.trust)
    assert not report.valid
    assert any(reason in r for r in reasons(report, member)), report.summary_lines()


def test_bundle_statement_problems(evidence: Evidence, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    evidence.write(folder)
    (folder / "bundle.sig").write_bytes(b"\x00")
    (folder / "bundle.payload.json").unlink()
    report = verify_bundle(folder, evidence.trust)
    assert "differs from the signature inside the envelope" in reasons(report, "bundle.sig")
    assert any(r.startswith("missing") for r in reasons(report, "bundle.payload.json"))
    (folder / BUNDLE_DSSE).unlink()
    report = verify_bundle(folder, evidence.trust)
    assert any(r.startswith("missing") for r in reasons(report, BUNDLE_DSSE))


def test_report_json_and_summary(evidence: Evidence, tmp_path: Path) -> None:
    evidence.write(tmp_path / "b.tar.gz")
    report = verify_bundle(tmp_path / "b.tar.gz", evidence.trust)
    data = json.loads(json.dumps(report.to_json()))
    assert data["valid"] is True and data["failures"] == []
    assert data["created"] == "2026-11-29T10:00:00Z" and data["agent"] == AGENT
    assert data["signer_keyids"] == [keyid_of(evidence.signer.public_key)]
    assert {r["run_id"]: r["artefacts"] for r in data["runs"]} == {RUN_A: 3, RUN_B: 2}
    assert data["runs"][1]["started"] == "2026-11-29T11:00:00Z"
    names = {a["name"] for a in data["artefacts"]}
    assert "docs/ai-policy/ai-use.json" in names and len(data["artefacts"]) == 5
    lines = report.summary_lines()
    assert len(lines) == 1 + 5
    assert any("mlflow/registered-model/churn/3.json" in ln and "common:CC-MODEL-APPROVAL" in ln for ln in lines)
    shutil.copy(tmp_path / "b.tar.gz", tmp_path / "c.tar.gz")
    other = LocalSigner(generate_private_key())
    bad = verify_bundle(tmp_path / "c.tar.gz", {other.keyid: other.public_key})
    lines = bad.summary_lines()
    assert lines[0].startswith("INVALID") and "no trusted key" in lines[0]
    assert lines[6] == f"{len(bad.failures)} problem(s):"
    assert bad.to_json()["failures"][0]["member"] in {BUNDLE_DSSE, f"runs/{RUN_A}.dsse.json"}


def _mutations(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) replacement of a node by a value of another type."""
    wrong = [v for v in (None, 7, "x", [], {}) if type(v) is not type(obj)]
    out: list[tuple[tuple[Any, ...], Any]] = [(path, v) for v in wrong]
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in children:
        out += _mutations(v, (*path, k))
    if isinstance(obj, dict):
        out += [((*path, k), "__drop__") for k in obj]
    return out


def _apply(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj = copy.deepcopy(obj)
    node = obj
    for k in path[:-1]:
        node = node[k]
    if value == "__drop__":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


def _resign_run(folder: Path, run_id: str, payload: bytes, signer: LocalSigner) -> None:
    env = sign_envelope(payload, signer)
    (folder / "runs" / f"{run_id}.dsse.json").write_bytes(json_bytes(env))
    (folder / "runs" / f"{run_id}.sigstore.json").write_bytes(json_bytes(make_bundle(env, signer.keyid)))
    (folder / "runs" / f"{run_id}.payload.json").write_bytes(payload)
    (folder / "runs" / f"{run_id}.sig").write_bytes(base64.b64decode(env["signatures"][0]["sig"]))


def test_wrong_types_anywhere_are_failures_never_exceptions(tmp_path: Path) -> None:
    """Every node of the manifest, a run envelope, its Sigstore bundle and its (re-signed) statement,
    replaced by a value of the wrong type or dropped: always a report, never an exception."""
    evidence = make_evidence(LocalSigner(generate_private_key("ed25519")))  # fast to sign and verify
    base = tmp_path / "base"
    evidence.write(base)
    assert verify_bundle(base, evidence.trust).valid
    run = f"runs/{RUN_A}"
    documents = {name: json.loads((base / name).read_text())
                 for name in ("manifest.json", f"{run}.dsse.json", f"{run}.sigstore.json", f"{run}.payload.json")}
    touched = [*documents, f"{run}.sig", "SHA256SUMS", *BUNDLE_FILES]  # what a case rewrites
    originals = {base / n: (base / n).read_bytes() for n in touched}
    checked = 0
    for name, doc in documents.items():
        for path, value in _mutations(doc):
            mutated = json_bytes(_apply(doc, path, value))
            if name.endswith(".payload.json"):
                _resign_run(base, RUN_A, mutated, evidence.signer)
            else:
                (base / name).write_bytes(mutated)
            resign(base, evidence.signer)
            report = verify_bundle(base, evidence.trust)
            assert isinstance(report.to_json(), dict) and report.summary_lines()
            assert report.valid == (not report.failures)
            for p, data in originals.items():
                p.write_bytes(data)
            checked += 1
    assert checked > 500


@pytest.mark.parametrize("suffix", ["tar", "tar.gz"])
def test_corrupted_archive_bytes_never_crash(evidence: Evidence, tmp_path: Path, suffix: str) -> None:
    good = tmp_path / f"good.{suffix}"
    evidence.write(good)
    data = good.read_bytes()
    outcomes = set()
    for i, pos in enumerate(range(0, len(data), max(1, len(data) // 60))):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        path = tmp_path / f"bad{i}.{suffix}"
        path.write_bytes(bytes(bad))
        try:
            report = verify_bundle(path, evidence.trust)
        except InputError:
            outcomes.add("input-error")
            continue
        outcomes.add("valid" if report.valid else "invalid")
        assert report.valid == (not report.failures)
    assert "invalid" in outcomes
