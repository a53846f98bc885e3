"""One run of one source: collect -> redact -> hash and store blobs -> sign one statement -> index.

Blobs are stored as they stream in (content-addressed, idempotent), and the
run becomes visible only once its signed statement is stored and indexed: a
crash before that leaves unreferenced blobs (fsck reports them as harmless)
and no half-signed run. With a transparency log (``tlog``), the run is logged
between signing and storing, and logging is the commit point: see
``affidavit.signing.tlog_runs`` for why a crash anywhere leaves the store and the
log in agreement. With a timestamp authority (``signing.tsa_url``), the run's
signature is timestamped between signing and logging; a TSA that fails fails the
run before anything is logged or stored.
"""

from __future__ import annotations

import base64
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
from typing import TYPE_CHECKING, Any

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
from affidavit.errors import AffidavitError, CollectorError, ConfigError, PassphraseError, SigningKeyError
from affidavit.signing.bundle import add_timestamp
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

if TYPE_CHECKING:
    import requests
    from cryptography import x509

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
    timestamper: Callable[[bytes], bytes] | None = None,
) -> RunResult:
    """Collect, store and sign one source. Never raises for a source failure: returns status "failed".

    With ``tlog`` (opened under the store lock the caller holds), the signed run
    is appended to the transparency log before it is stored, and its Sigstore
    bundle carries the log entry. With ``timestamper`` (signature -> RFC 3161
    token, e.g. a :class:`Timestamper`), the signature is timestamped first; if
    that fails, the run fails with nothing logged or stored.
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
    if timestamper is not None:
        try:
            add_timestamp(bundle, timestamper(base64.b64decode(envelope["signatures"][0]["sig"])))
        except AffidavitError as e:
            result.artefacts = []
            result.error = (f"source {source.name!r}: the run was not stored or logged (its signature could not "
                            f"be timestamped): {e.diagnostics()}")
            return result
    if tlog is not None:
        bundle["verificationMaterial"]["tlogEntries"] = [
            tlog.commit(run_id, envelope, signer.public_key,
                        bundle["verificationMaterial"].get("timestampVerificationData"))]
    store.put_attestation(run_id, envelope, bundle)
    store.index_run(run)
    if tlog is not None:
        tlog.stored(run_id)
    result.status = "signed"
    result.attestation = store.attestation_paths(run_id)[1]
    log.info("source %s: signed %d artefacts as run %s", source.name, len(records), run_id)
    return result


# -- trusted timestamps ----------------------------------------------------------------


class Timestamper:
    """RFC 3161 tokens over signatures from ``signing.tsa_url``, each checked against ``signing.tsa_roots``.

    Call it with a signature's bytes; it returns the DER token, or raises a
    :class:`~affidavit.signing.tsa.TsaUnavailableError` / ``TsaResponseError``
    naming the TSA (a token that does not verify against the roots is refused).
    """

    def __init__(self, url: str, roots: list[x509.Certificate], timeout: float) -> None:
        self.url, self.roots, self.timeout = url, roots, timeout
        self.session: requests.Session | None = None  # opened on first use, reused for every run

    @classmethod
    def from_config(cls, signing: SigningConfig) -> Timestamper | None:
        """None without ``signing.tsa_url``; InputError when the roots file is unusable."""
        if signing.tsa_url is None or signing.tsa_roots is None:
            return None
        from affidavit.signing.tsa import load_tsa_roots

        return cls(signing.tsa_url, load_tsa_roots(signing.tsa_roots), signing.tsa_timeout)

    def __call__(self, signature: bytes) -> bytes:
        from affidavit.signing.tsa import TimestampError, TsaResponseError, request_timestamp, verify_timestamp

        if self.session is None:
            import requests

            self.session = requests.Session()
        token = request_timestamp(self.url, signature, timeout=self.timeout, session=self.session)
        try:
            verify_timestamp(token, signature, self.roots)
        except TimestampError as e:
            raise TsaResponseError(f"timestamp authority {self.url}: its token does not verify against "
                                   f"signing.tsa_roots: {e}",
                                   hint="check signing.tsa_roots holds this TSA's root certificate") from None
        return token

    def authorities(self, tokens: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        """The ``timestampAuthorities`` of trusted_root.json for (token, signature) pairs: one per TSA chain."""
        from affidavit.signing.tsa import TimestampError, timestamp_authority_entry, verify_timestamp

        chains: dict[bytes, tuple[x509.Certificate, ...]] = {}
        seen: set[frozenset[bytes]] = set()  # the certificates tokens carry: one verification per TSA, not per run
        for token, signature in tokens:
            certs = _token_certificates(token)
            if certs is not None and certs in seen:
                continue
            try:
                chain = verify_timestamp(token, signature, self.roots).chain
            except TimestampError as e:
                log.warning("a stored timestamp token does not verify against signing.tsa_roots: %s", e)
                continue
            if certs is not None:
                seen.add(certs)
            chains.setdefault(b"".join(c.fingerprint(_sha256()) for c in chain), chain)
        return [timestamp_authority_entry(chain, self.url) for chain in chains.values()]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _token_certificates(token: bytes) -> frozenset[bytes] | None:
    """The DER certificates a token embeds; None if it cannot be read (verification then says why)."""
    from rfc3161_client import decode_timestamp_response

    try:
        return frozenset(decode_timestamp_response(token).signed_data.certificates)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # the ASN.1 library's panics derive from BaseException
        return None


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


# -- the transparency log's key and handle -------------------------------------------


def default_log_origin(agent: str | None) -> str:
    """``affidavit.local/<agent name or host name>``, reduced to the characters an origin may hold."""
    name = re.sub(r"[^a-z0-9.-]+", "-", (agent or socket.gethostname()).lower()).strip("-.")[:180]
    return f"affidavit.local/{name or 'agent'}"


def log_key_path(signing: SigningConfig, base_dir: Path) -> Path:
    """``signing.log_key``, relative to the config file's directory (ConfigError for a KMS log key)."""
    key = signing.log_key
    if isinstance(key, str):
        raise ConfigError(f"signing.log_key is the AWS KMS key {key}, not a file")
    return key if key.is_absolute() else base_dir / key


def ensure_log_signer(signing: SigningConfig, base_dir: Path, env: Mapping[str, str],
                      prompt: Callable[[str, bool], str] | None = None) -> tuple[Signer, list[str]]:
    """Load the log key (``signing.log_key``), creating it on first use; (signer, notes for the user).

    The log key is ECDSA P-256. A key file shares the signing key's passphrase;
    a new one is only written once that passphrase has opened the signing key.
    With a KMS signing key there is no such passphrase: the log key's comes from
    AFFIDAVIT_PASSPHRASE, ``signing.passphrase_file`` or the passphrase file beside
    the log key, which the first unattended run creates. A KMS log key
    (``awskms://``, always P-256) is used as it is.
    """
    from affidavit.agent.keyring import find_passphrase, kms_signer, passphrase_path, public_key_path
    from affidavit.signing.keys import new_passphrase, write_private_atomically
    from affidavit.signing.tlog_note import is_log_key

    if isinstance(signing.log_key, str):
        return kms_signer(signing.log_key, signing), []
    path = log_key_path(signing, base_dir)
    notes: list[str] = []
    if signing.key_is_kms:
        pw = find_passphrase(path, signing.passphrase_file, env, prompt)
        if pw is None and not path.exists():
            pw = new_passphrase().encode("ascii")
            write_private_atomically(passphrase_path(path), pw + b"\n")
            notes.append(f"wrote a random passphrase for the transparency log key to {passphrase_path(path)} "
                         "(mode 0600); keep it safe")
    else:
        pw = find_passphrase(signing.key_file, signing.passphrase_file, env, prompt)
    if pw is None:
        raise PassphraseError(f"no passphrase for the transparency log key {path}",
                              hint="set AFFIDAVIT_PASSPHRASE or signing.passphrase_file (the signing key's)")
    if path.exists():
        key = load_private_key(path, pw)
        if not is_log_key(key.public_key()):
            raise SigningKeyError(f"{path} is not an ECDSA P-256 key; a transparency log key must be one")
        return LocalSigner(key), notes
    if not signing.key_is_kms:
        load_private_key(signing.key_file, pw)  # the passphrase must be the signing key's before it locks a new key
    key = generate_private_key("ecdsa-p256")
    save_private_key(path, key, pw)
    pub = public_key_path(path)
    pub.write_bytes(public_pem(key.public_key()))
    return LocalSigner(key), notes + [f"generated the transparency log key {path} (public key: {pub}); "
                                      "auditors verify checkpoints with that public key"]


def open_run_log(store: Store, signing: SigningConfig, log_signer: Signer, *, agent: str | None,
                 run_keys: Mapping[str, PublicKey],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> RunLog:
    """Open the store's transparency log for this collection (hold the store lock; close it after)."""
    return RunLog.open(store, log_signer, origin=signing.log_origin, default_origin=default_log_origin(agent),
                       run_keys=run_keys, clock=clock)

