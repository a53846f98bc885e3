"""One run of one source: collect -> redact -> hash and store blobs -> sign one statement -> index.

Blobs are stored as they stream in (content-addressed, idempotent), and the
run becomes visible only once its signed statement is stored and indexed: a
crash before that leaves unreferenced blobs (fsck reports them as harmless)
and no half-signed run. With a transparency log (``tlog``), the run is logged
between signing and storing, and logging is the commit point: see
``affidavit.signing.tlog_runs`` for why a crash anywhere leaves the store and the
log in agreement.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from affidavit.collectors.base import (
    CollectContext,
    Collector,
    CollectorOptions,
    Evidence,
    Redaction,
    Seen,
    canonical_json,
)
from affidavit.config.durations import parse_duration
from affidavit.collectors.redact import Redactor
from affidavit.config.models import SigningConfig, SourceConfig
from affidavit.errors import AffidavitError, CollectorError, PassphraseError, SigningKeyError
from affidavit.signing.dsse import sign_envelope
from affidavit.signing.hashing import sha256_bytes
from affidavit.signing.keys import (
    LocalSigner,
    PublicKey,
    Signer,
    generate_private_key,
    load_private_key,
    public_pem,
    save_private_key,
)
from affidavit.signing.predicate import iso_duration, run_statement
from affidavit.signing.sigstore import make_bundle
from affidavit.signing.tlog_runs import RunLog
from affidavit.store.base import ArtefactRecord, RunRecord, Store

log = logging.getLogger("affidavit.agent.pipeline")


@dataclass
class RunResult:
    source: str
    source_type: str
    status: str  # "signed", "empty" (nothing to sign) or "failed"
    run_id: str | None = None
    artefacts: list[ArtefactRecord] = field(default_factory=list)
    error: str | None = None
    attestation: Path | None = None

    @property
    def controls(self) -> list[str]:
        seen: dict[str, None] = {}
        for a in self.artefacts:
            for c in a.controls:
                seen.setdefault(c, None)
        return list(seen)

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "type": self.source_type,
            "status": self.status,
            "run_id": self.run_id,
            "artefacts": [{"name": a.name, "digest": f"sha256:{a.digest}", "size": a.size,
                           "controls": list(a.controls), "findings": [dict(f) for f in a.findings],
                           "redactions": [dict(r) for r in a.redactions]} for a in self.artefacts],
            "controls": self.controls,
            "attestation": str(self.attestation) if self.attestation else None,
            "error": self.error,
        }


def _expiry(a: ArtefactRecord) -> datetime | None:
    return a.collected_at + parse_duration(a.ttl) if a.ttl else None


def new_run_id(source: str, now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{source}-{secrets.token_hex(4)}"


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for g in groups:
        for c in g:
            out.setdefault(c, None)
    return tuple(out)


def _store_evidence(ev: Evidence, store: Store, redactor: Redactor) -> tuple[str, int, list[Redaction]]:
    if ev.data is not None:
        doc, redactions = redactor.redact_document(ev.data)
        info = store.put_stream(io.BytesIO(canonical_json(doc)))
        return info.digest, info.size, list(redactions)
    with ev.open() as raw:
        reader = redactor.redact_stream(raw)
        info = store.put_stream(reader)
        return info.digest, info.size, list(reader.redactions)


def run_source(
    source: SourceConfig,
    collector: Collector,
    options: CollectorOptions,
    store: Store,
    signer: Signer,
    *,
    agent: str,
    base_dir: Path,
    redactor: Redactor,
    on_artefact: Callable[[str], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    tlog: RunLog | None = None,
) -> RunResult:
    """Collect, store and sign one source. Never raises for a source failure: returns status "failed".

    With ``tlog`` (opened under the store lock the caller holds), the signed run
    is appended to the transparency log before it is stored, and its Sigstore
    bundle carries the log entry.
    """
    started = clock()
    run_id = new_run_id(source.name, started)
    ttl: timedelta = source.ttl or collector.default_ttl
    previous = {name: Seen(a.digest, a.collected_at, _expiry(a)) for name, a in store.latest(source.name).items()}
    ctx = CollectContext(
        source_name=source.name, options=options, controls=tuple(source.controls), now=started,
        base_dir=base_dir, previous=previous, logger=logging.getLogger(f"affidavit.collectors.{source.type}"),
    )
    result = RunResult(source.name, source.type, "failed", run_id)
    records: list[ArtefactRecord] = []
    names: set[str] = set()
    try:
        for ev in collector.collect(ctx):
            if ev.name in names:
                raise CollectorError(f"source {source.name!r}: collector yielded {ev.name!r} twice")
            names.add(ev.name)
            digest, size, redactions = _store_evidence(ev, store, redactor)
            for r in redactions:
                log.warning("redacted a secret in %s at %s (rule %s)", ev.name, r.path, r.rule)
            records.append(ArtefactRecord(
                run_id=run_id, digest=digest, name=ev.name, media_type=ev.media_type, size=size,
                collector=collector.type_name, collected_at=clock(),
                controls=_merge(ev.controls, tuple(f.control for f in ev.findings), tuple(source.controls)),
                findings=tuple(f.to_json() for f in ev.findings),
                effective_from=ev.effective_from, effective_to=ev.effective_to,
                ttl=iso_duration(ev.ttl or ttl), redactions=tuple(r.to_json() for r in redactions),
            ))
            if on_artefact is not None:
                on_artefact(ev.name)
    except AffidavitError as e:
        result.error = e.diagnostics()
        return result
    except Exception as e:  # a collector bug must not take the other sources down
        log.debug("collector %s crashed", source.type, exc_info=True)
        result.error = f"source {source.name!r}: collector {source.type} failed: {type(e).__name__}: {e}"
        return result
    result.artefacts = records
    if not records:
        result.status = "empty"
        result.run_id = None
        return result
    run = RunRecord(
        run_id=run_id, source=source.name, source_type=source.type, started=started, finished=clock(),
        keyid=signer.keyid, statement_sha256="", artefact_count=len(records), artefacts=tuple(records),
    )
    payload = run_statement(run, agent)
    run = dataclasses.replace(run, statement_sha256=sha256_bytes(payload))
    envelope = sign_envelope(payload, signer)
    bundle = make_bundle(envelope, signer.keyid)
    if tlog is not None:
        bundle["verificationMaterial"]["tlogEntries"] = [tlog.commit(run_id, envelope, signer.public_key)]
    store.put_attestation(run_id, envelope, bundle)
    store.index_run(run)
    if tlog is not None:
        tlog.stored(run_id)
    result.status = "signed"
    result.attestation = store.attestation_paths(run_id)[1]
    log.info("source %s: signed %d artefacts as run %s", source.name, len(records), run_id)
    return result


# -- the transparency log's key and handle -------------------------------------------


def default_log_origin(agent: str | None) -> str:
    """``affidavit.local/<agent name or host name>``, reduced to the characters an origin may hold."""
    name = re.sub(r"[^a-z0-9.-]+", "-", (agent or socket.gethostname()).lower()).strip("-.")[:180]
    return f"affidavit.local/{name or 'agent'}"


def log_key_path(signing: SigningConfig, base_dir: Path) -> Path:
    """``signing.log_key``, relative to the config file's directory."""
    return signing.log_key if signing.log_key.is_absolute() else base_dir / signing.log_key


def ensure_log_signer(signing: SigningConfig, base_dir: Path, env: Mapping[str, str],
                      prompt: Callable[[str, bool], str] | None = None) -> tuple[LocalSigner, list[str]]:
    """Load the log key (``signing.log_key``), creating it on first use; (signer, notes for the user).

    The log key is ECDSA P-256 and shares the signing key's passphrase; a new
    one is only written once that passphrase has opened the signing key.
    """
    from affidavit.agent.keyring import find_passphrase, public_key_path
    from affidavit.signing.tlog_note import is_log_key

    path = log_key_path(signing, base_dir)
    pw = find_passphrase(signing.key, signing.passphrase_file, env, prompt)
    if pw is None:
        raise PassphraseError(f"no passphrase for the transparency log key {path}",
                              hint="set AFFIDAVIT_PASSPHRASE or signing.passphrase_file (the signing key's)")
    if path.exists():
        key = load_private_key(path, pw)
        if not is_log_key(key.public_key()):
            raise SigningKeyError(f"{path} is not an ECDSA P-256 key; a transparency log key must be one")
        return LocalSigner(key), []
    load_private_key(signing.key, pw)  # the passphrase must be the signing key's before it locks a new key
    key = generate_private_key("ecdsa-p256")
    save_private_key(path, key, pw)
    pub = public_key_path(path)
    pub.write_bytes(public_pem(key.public_key()))
    return LocalSigner(key), [f"generated the transparency log key {path} (public key: {pub}); "
                              "auditors verify checkpoints with that public key"]


def open_run_log(store: Store, signing: SigningConfig, log_signer: Signer, *, agent: str | None,
                 run_keys: Mapping[str, PublicKey],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> RunLog:
    """Open the store's transparency log for this collection (hold the store lock; close it after)."""
    return RunLog.open(store, log_signer, origin=signing.log_origin, default_origin=default_log_origin(agent),
                       run_keys=run_keys, clock=clock)

