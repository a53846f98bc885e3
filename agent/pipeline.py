"""One run of one source: collect -> redact -> hash and store blobs -> sign one statement -> index.

Blobs are stored as they stream in (content-addressed, idempotent), and the
run becomes visible only once its signed statement is stored and indexed: a
crash before that leaves unreferenced blobs (fsck reports them as harmless)
and no half-signed run.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import secrets
from collections.abc import Callable
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
from affidavit.config.models import SourceConfig
from affidavit.errors import AffidavitError, CollectorError
from affidavit.signing.dsse import sign_envelope
from affidavit.signing.hashing import sha256_bytes
from affidavit.signing.keys import Signer
from affidavit.signing.predicate import iso_duration, run_statement
from affidavit.signing.sigstore import make_bundle
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
) -> RunResult:
    """Collect, store and sign one source. Never raises for a source failure: returns status "failed"."""
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
                controls=_merge(ev.controls, tuple(source.controls)),
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
    store.put_attestation(run_id, envelope, make_bundle(envelope, signer.keyid))
    store.index_run(run)
    result.status = "signed"
    result.attestation = store.attestation_paths(run_id)[1]
    log.info("source %s: signed %d artefacts as run %s", source.name, len(records), run_id)
    return result

