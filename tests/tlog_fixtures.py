"""Shared by the transparency-log tests: a store whose runs go through the real pipeline and log.

``LoggedStore`` collects runs with ``agent.pipeline.run_source`` (a tiny
in-test collector yields JSON documents), logs them with a real log key, exports
real bundles with ``agent.export.export_bundle`` and verifies them with
``signing.verify.verify_bundle``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from affidavit.agent.export import ExportSummary, export_bundle
from affidavit.agent.pipeline import RunResult, open_run_log, run_source
from affidavit.collectors.base import CollectContext, Collector, CollectorOptions, Evidence
from affidavit.collectors.redact import Redactor
from affidavit.config.models import SigningConfig, SourceConfig
from affidavit.signing.keys import LocalSigner, generate_private_key, public_pem
from affidavit.signing.tlog_runs import RunLog
from affidavit.signing.verify import VerifyReport, verify_bundle
from affidavit.store.local import LocalStore

AGENT = "affidavit-tests"


class DocsOptions(CollectorOptions):
    pass


class DocsCollector(Collector):
    """Yields the JSON documents it was built with."""

    type_name: ClassVar[str] = "docs"
    options_model: ClassVar[type[CollectorOptions]] = DocsOptions

    def __init__(self, docs: dict[str, Any]) -> None:
        self.docs = docs

    def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
        for name, doc in self.docs.items():
            yield Evidence(name=name, media_type="application/json", data=doc, controls=("common:CC-AI-POLICY",))


@dataclass
class Clock:
    now: datetime = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class LoggedStore:
    root: Path
    store: LocalStore
    signer: LocalSigner
    log_signer: LocalSigner
    clock: Clock = field(default_factory=Clock)
    counter: int = 0

    @property
    def trust(self) -> dict[str, Any]:
        return {self.signer.keyid: self.signer.public_key}

    def open_log(self, **kw: Any) -> RunLog:
        return open_run_log(self.store, SigningConfig(**kw), self.log_signer, agent=AGENT,
                            run_keys={self.signer.keyid: self.signer.public_key}, clock=self.clock)

    def collect(self, n: int = 1, *, log: bool = True) -> list[RunResult]:
        """``n`` runs, each of one new document, under the store lock (logged unless ``log`` is False)."""
        results = []
        with self.store.lock(5):
            tlog = self.open_log() if log else None
            try:
                for _ in range(n):
                    self.counter += 1
                    i = self.counter
                    src = SourceConfig(name=f"src{i}", type="docs")
                    results.append(run_source(src, DocsCollector({f"docs/{i}.json": {"doc": i}}), DocsOptions(),
                                              self.store, self.signer, agent=AGENT, base_dir=self.root,
                                              redactor=Redactor(), clock=self.clock, tlog=tlog))
            finally:
                if tlog is not None:
                    tlog.close()
        assert all(r.status == "signed" for r in results), [r.error for r in results]
        return results

    def checkpoint(self) -> str:
        from affidavit.store.tlog_store import LogStore

        with LogStore.open(self.root / "store") as log:
            assert log.checkpoint is not None
            return log.checkpoint

    def export(self, out: Path, **kw: Any) -> ExportSummary:
        return export_bundle(self.store, self.signer, out, agent=AGENT, now=self.clock(), **kw)

    def verify(self, bundle: Path, **kw: Any) -> VerifyReport:
        kw.setdefault("log_key", self.log_signer.public_key)
        return verify_bundle(bundle, self.trust, **kw)

    def write_keys(self, folder: Path) -> tuple[Path, Path]:
        """(signing public key PEM, log public key PEM) written into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        pub, log_pub = folder / "signer.pub.pem", folder / "log.pub.pem"
        pub.write_bytes(public_pem(self.signer.public_key))
        log_pub.write_bytes(public_pem(self.log_signer.public_key))
        return pub, log_pub


def logged_store(root: Path, signer: LocalSigner | None = None, log_signer: LocalSigner | None = None) -> LoggedStore:
    root.mkdir(parents=True, exist_ok=True)
    store = LocalStore.open(root / "store", create=True)
    return LoggedStore(root, store, signer or LocalSigner(generate_private_key()),
                       log_signer or LocalSigner(generate_private_key()))


def save_signer(path: Path, signer: LocalSigner) -> None:
    """An unencrypted PKCS#8 PEM (test keys only, for a child process)."""
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(signer.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))


def load_signer(path: Path) -> LocalSigner:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return LocalSigner(key)  # type: ignore[arg-type]


def reasons(report: VerifyReport, member: str | None = None) -> list[str]:
    return [f.reason for f in report.failures if member is None or f.member == member]


def resign_bundle(folder: Path, signer: LocalSigner) -> None:
    """Rebuild SHA256SUMS and the bundle statement after an edit, as an exporter holding the bundle key would."""
    import base64
    import hashlib

    from affidavit.signing.bundle import BUNDLE_DSSE, BUNDLE_FILES, json_bytes
    from affidavit.signing.dsse import sign_envelope
    from affidavit.signing.statement import BUNDLE_PREDICATE, make_statement

    for name in BUNDLE_FILES:
        (folder / name).unlink(missing_ok=True)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != "SHA256SUMS")
    digests = [(n, hashlib.sha256((folder / n).read_bytes()).hexdigest()) for n in names]
    (folder / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in digests))
    digests.append(("SHA256SUMS", hashlib.sha256((folder / "SHA256SUMS").read_bytes()).hexdigest()))
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except ValueError:  # a test that broke the manifest on purpose
        manifest = {"created": "2026-11-29T10:00:00Z", "agent": AGENT}
    payload = make_statement(digests, BUNDLE_PREDICATE, {"format_version": 1, "created": manifest["created"],
                                                          "agent": manifest["agent"], "members": len(digests)})
    env = sign_envelope(payload, signer)
    (folder / "bundle.payload.json").write_bytes(payload)
    (folder / "bundle.sig").write_bytes(base64.b64decode(env["signatures"][0]["sig"]))
    (folder / BUNDLE_DSSE).write_bytes(json_bytes(env))
