"""The auditor bundle, format_version 1: member names, the manifest and the writer.

Members sit at the archive's top level, in this order: ``manifest.json``,
``README.md``, ``keys/<keyid>.pub.pem``, ``runs/<run_id>.{dsse.json,sigstore.json,
payload.json,sig}``, the transparency log's material (``log/checkpoint``, the latest
signed checkpoint; ``log/leaves.bin``, the leaf hashes up to it; ``trusted_root.json``
naming the log key), extra members (control catalogs), ``artefacts/sha256/<hex>``,
``SHA256SUMS``, then the bundle statement (``bundle.payload.json``, ``bundle.sig``,
``bundle.dsse.json``) whose subjects are every other member, so nothing is unsigned,
and, when a timestamp authority is configured, ``bundle.tsr``: the RFC 3161 token
over ``bundle.sig``. The token cannot be covered by the statement whose signature it
timestamps; it authenticates itself (its imprint is the SHA-256 of ``bundle.sig``, and
the TSA signs it), and removing it only removes the proof of when the bundle was signed.
A run's tokens travel in its Sigstore bundle (``timestampVerificationData``).
The same input gives byte-identical output (given a deterministic signature scheme).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Literal

from affidavit.errors import SigningKeyError, StoreError, UsageError
from affidavit.signing.archive import BundleKind
from affidavit.signing.archive_write import BundleSink, open_sink
from affidavit.signing.dsse import PAYLOAD_TYPE, EnvelopeFormatError, pae, parse_envelope, sign_envelope
from affidavit.signing.keys import PublicKey, Signer, algorithm_of, keyid_of, public_pem, verify_signature
from affidavit.signing.predicate import HEX64_RE, predicate_problem, run_from_statement, utc_iso
from affidavit.signing.sigstore import SigstoreFormatError, envelope_of
from affidavit.signing.statement import BUNDLE_PREDICATE, make_statement, parse_statement, subject_digests
from affidavit.store.base import RunRecord

logger = logging.getLogger(__name__)

FORMAT = "affidavit-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
README = "README.md"
SUMS = "SHA256SUMS"
BUNDLE_PAYLOAD = "bundle.payload.json"
BUNDLE_SIG = "bundle.sig"
BUNDLE_DSSE = "bundle.dsse.json"
BUNDLE_FILES = (BUNDLE_PAYLOAD, BUNDLE_SIG, BUNDLE_DSSE)
BUNDLE_TSR = "bundle.tsr"  # optional: the RFC 3161 token over bundle.sig (outside the statement it timestamps)
UNSIGNED_FILES = (*BUNDLE_FILES, BUNDLE_TSR)  # the members no statement covers
MAX_TIMESTAMPS = 8  # tokens per signature a verifier reads (a hostile bundle could carry thousands)
ARTEFACT_PREFIX = "artefacts/sha256/"
KEYS_PREFIX = "keys/"
RUNS_PREFIX = "runs/"
LOG_PREFIX = "log/"
LOG_CHECKPOINT = "log/checkpoint"
LOG_LEAVES = "log/leaves.bin"
TRUSTED_ROOT = "trusted_root.json"
LOG_FILES = (LOG_CHECKPOINT, LOG_LEAVES, TRUSTED_ROOT)
RUN_SUFFIXES: dict[str, str] = {
    "dsse": ".dsse.json", "sigstore": ".sigstore.json", "payload": ".payload.json", "sig": ".sig"}
RunPart = Literal["dsse", "sigstore", "payload", "sig"]
RESERVED_PREFIXES = (ARTEFACT_PREFIX.split("/")[0] + "/", KEYS_PREFIX, RUNS_PREFIX, LOG_PREFIX)
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@-]{0,199}$")
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*$")


def artefact_member(hexd: str) -> str:
    return f"{ARTEFACT_PREFIX}{hexd}"


def key_member(keyid: str) -> str:
    return f"{KEYS_PREFIX}{keyid}.pub.pem"


def run_member(run_id: str, part: RunPart) -> str:
    return f"{RUNS_PREFIX}{run_id}{RUN_SUFFIXES[part]}"


def json_bytes(obj: Any) -> bytes:
    """The bundle's JSON form: sorted keys, one-space indent (greppable by an auditor)."""
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def is_extra_name(name: str) -> bool:
    """A name an extra member may have: relative, plain components, not a reserved name or folder."""
    parts = name.split("/")
    if not all(_SAFE_COMPONENT.match(p) for p in parts):
        return False
    if name in (MANIFEST, README, SUMS, TRUSTED_ROOT, *UNSIGNED_FILES):
        return False
    return not any(name.startswith(p) for p in RESERVED_PREFIXES)


@dataclass(frozen=True)
class RunAttestation:
    """One run as the store keeps it: its DSSE envelope and its Sigstore bundle."""

    run_id: str
    dsse: dict[str, Any]
    sigstore: dict[str, Any]


def add_timestamp(sigstore: dict[str, Any], token: bytes) -> None:
    """Store an RFC 3161 token (DER TimeStampResp) in a Sigstore bundle, where verifiers look for it."""
    data = sigstore["verificationMaterial"].setdefault("timestampVerificationData", {})
    data.setdefault("rfc3161Timestamps", []).append({"signedTimestamp": base64.b64encode(token).decode("ascii")})


def timestamp_tokens(sigstore: Any) -> list[bytes]:
    """The RFC 3161 tokens of a Sigstore bundle (none: []); ValueError naming what is malformed."""
    vm = sigstore.get("verificationMaterial") if isinstance(sigstore, dict) else None
    data = vm.get("timestampVerificationData") if isinstance(vm, dict) else None
    if data is None:
        return []
    items = data.get("rfc3161Timestamps", []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("timestampVerificationData.rfc3161Timestamps is not a list")
    if len(items) > MAX_TIMESTAMPS:
        raise ValueError(f"holds {len(items)} timestamps, more than {MAX_TIMESTAMPS} (limit)")
    tokens = []
    for i, item in enumerate(items):
        value = item.get("signedTimestamp") if isinstance(item, dict) else None
        try:
            tokens.append(base64.b64decode(value if isinstance(value, str) else "\0", validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"rfc3161Timestamps[{i}].signedTimestamp is not base64") from None
    return tokens


@dataclass(frozen=True)
class LogMaterial:
    """The transparency log as a bundle carries it (every run's tlogEntries prove against ``checkpoint``)."""

    checkpoint: str  # the signed note
    leaves: bytes  # the leaf hashes up to the checkpoint, 32 bytes each
    trusted_root: dict[str, Any]  # trusted_root.json
    manifest: dict[str, Any]  # the manifest's "log" section: origin, log_id, tree_size, root_hash


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    kind: BundleKind
    runs: int
    artefacts: int
    members: int
    artefact_bytes: int
    keyid: str  # the key that signed the bundle statement
    sha256: str | None  # of the archive file (None for a directory bundle)


def manifest_runs(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The manifest's ``runs`` list (sorted by run id)."""
    return [
        {
            "run_id": r.run_id,
            "source": r.source,
            "source_type": r.source_type,
            "started": utc_iso(r.started),
            "finished": utc_iso(r.finished),
            "keyid": r.keyid,
            "artefacts": len(r.artefacts),
        }
        for r in sorted(runs, key=lambda r: r.run_id)
    ]


def manifest_artefacts(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The manifest's ``artefacts`` list: one entry per digest, sorted by digest."""
    names: dict[str, set[str]] = {}
    run_ids: dict[str, list[str]] = {}
    controls: dict[str, set[str]] = {}
    for r in sorted(runs, key=lambda r: r.run_id):
        for a in r.artefacts:
            names.setdefault(a.digest, set()).add(a.name)
            ids = run_ids.setdefault(a.digest, [])
            if r.run_id not in ids:
                ids.append(r.run_id)
            controls.setdefault(a.digest, set()).update(a.controls)
    return [
        {"digest": f"sha256:{d}", "names": sorted(names[d]), "runs": run_ids[d], "controls": sorted(controls[d])}
        for d in sorted(names)
    ]


_VERIFY_P256 = 'openssl dgst -sha256 -verify "$KEY" -signature {sig} "$WORK/{pae}"'
_VERIFY_ED25519 = 'openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in "$WORK/{pae}" -sigfile {sig}'
_OK_TEXT = {"ecdsa-p256": "Verified OK", "ed25519": "Signature Verified Successfully"}


def _verify_command(key: PublicKey, sig: str, pae: str) -> str:
    template = _VERIFY_ED25519 if algorithm_of(key) == "ed25519" else _VERIFY_P256
    return template.format(sig=sig, pae=pae)


def render_readme(
    *, created: datetime, agent: str, signer_key: PublicKey, run_keys: dict[str, PublicKey], runs: int, artefacts: int
) -> bytes:
    """The auditor README from the template, with this bundle's keyids and the right OpenSSL commands."""
    text = resources.files("affidavit.signing").joinpath("templates/AUDITOR-README.md").read_text("utf-8")
    blocks = []
    for keyid in sorted(run_keys):
        blocks.append(
            "\n".join(
                [
                    f"KEY=keys/{keyid}.pub.pem",
                    f"for RUN in $(grep -l '\"keyid\": \"{keyid}\"' runs/*.dsse.json); do",
                    '  RUN="${RUN%.dsse.json}"',
                    "  { printf 'DSSEv1 28 application/vnd.in-toto+json %d ' \"$(wc -c < \"$RUN.payload.json\")\"; "
                    'cat "$RUN.payload.json"; } > "$WORK/run.pae"',
                    '  echo "$RUN:"',
                    "  " + _verify_command(run_keys[keyid], '"$RUN.sig"', "run.pae"),
                    "done",
                ]
            )
        )
    signer_id = keyid_of(signer_key)
    values = {
        "CREATED": utc_iso(created),
        "AGENT": agent,
        "RUN_COUNT": str(runs),
        "ARTEFACT_COUNT": str(artefacts),
        "BUNDLE_KEYID": signer_id,
        "BUNDLE_OK": _OK_TEXT[algorithm_of(signer_key)],
        "VERIFY_BUNDLE": _verify_command(signer_key, "bundle.sig", "bundle.pae"),
        "VERIFY_RUNS": "\n\n".join(blocks),
        "RUN_OK": " or ".join(sorted({f'"{_OK_TEXT[algorithm_of(k)]}"' for k in run_keys.values()})),
    }
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    return text.encode("utf-8")


@dataclass(frozen=True)
class _Run:
    run_id: str
    dsse: dict[str, Any]
    sigstore: dict[str, Any]
    payload: bytes
    sig: bytes
    record: RunRecord


def _prepare_run(att: RunAttestation, known: dict[str, PublicKey]) -> _Run:
    """Parse one run attestation and check it is exportable (raises StoreError)."""
    where = f"run {att.run_id!r}"
    if not RUN_ID_RE.match(att.run_id):
        raise StoreError(f"{where}: a run id may hold only letters, digits and . _ : + @ - (at most 200)")
    try:
        env = parse_envelope(att.dsse)
    except EnvelopeFormatError as e:
        raise StoreError(f"{where}: malformed DSSE envelope ({e})", hint="run `affidavit store fsck`") from None
    if env.payload_type != PAYLOAD_TYPE:
        raise StoreError(f"{where}: payloadType is {env.payload_type!r}, not {PAYLOAD_TYPE}")
    try:
        wrapped, hint = envelope_of(att.sigstore)
    except SigstoreFormatError as e:
        raise StoreError(f"{where}: malformed Sigstore bundle ({e})", hint="run `affidavit store fsck`") from None
    if wrapped != att.dsse:
        raise StoreError(f"{where}: its Sigstore bundle does not wrap its DSSE envelope",
                         hint="run `affidavit store fsck`")
    sigs = [s for k, s in env.signatures if k == hint]
    if not sigs:
        raise StoreError(f"{where}: no signature in its envelope has the Sigstore key hint {hint}")
    if hint in known and not verify_signature(known[hint], sigs[0], env.pae):
        raise StoreError(f"{where}: its signature does not verify with key {hint}; "
                         "refusing to export corrupted evidence", hint="run `affidavit store fsck`")
    if hint not in known:
        logger.warning("run %s is signed by key %s whose public key is not exported", att.run_id, hint)
    try:
        stmt = parse_statement(env.payload)
        if problem := predicate_problem(stmt):
            raise ValueError(problem)
        record = run_from_statement(env.payload, hint, hashlib.sha256(env.payload).hexdigest())
        subjects = {d for _, d in subject_digests(stmt)}
    except ValueError as e:
        raise StoreError(f"{where}: its statement is not an evidence statement ({e})") from None
    if record.run_id != att.run_id:
        raise StoreError(f"{where}: its statement names run {record.run_id!r}")
    if subjects != {a.digest for a in record.artefacts} or not all(HEX64_RE.match(d) for d in subjects):
        raise StoreError(f"{where}: its subjects and predicate artefacts disagree")
    return _Run(att.run_id, att.dsse, att.sigstore, env.payload, sigs[0], record)


def _copy_blob(
    sink: BundleSink, hexd: str, size: int, open_blob: Callable[[str], BinaryIO], progress: Callable[[int], None] | None
) -> None:
    name = artefact_member(hexd)
    try:
        with open_blob(hexd) as stream:
            got, n = sink.add_stream(name, size, stream, progress)
    except OSError as e:
        raise StoreError(f"artefact sha256:{hexd} cannot be read: {e}", hint="run `affidavit store fsck`") from None
    if got != hexd or n != size:
        raise StoreError(
            f"artefact sha256:{hexd} is corrupt in the store (it hashes to {got}, {n} bytes; the run statement says "
            f"{size} bytes); refusing to export corrupted evidence",
            hint="run `affidavit store fsck`",
        )


def write_bundle(
    out: Path | str,
    *,
    runs: Sequence[RunAttestation],
    open_blob: Callable[[str], BinaryIO],
    signer: Signer,
    public_keys: Sequence[PublicKey],
    agent: str,
    created: datetime,
    extra: Sequence[tuple[str, bytes]] = (),
    progress: Callable[[int], None] | None = None,
    log: LogMaterial | None = None,
    timestamp: Callable[[bytes], bytes] | None = None,
) -> BundleSummary:
    """Write an auditor bundle to ``out`` (.tar.gz/.tgz, .tar, or a directory).

    With ``log``, the bundle carries the transparency log's checkpoint, leaf
    hashes and trusted root; the runs' Sigstore bundles carry their entries.
    With ``timestamp`` (signature bytes -> DER RFC 3161 token), the bundle
    statement's signature is timestamped into ``bundle.tsr``.

    ``open_blob(hex)`` opens one artefact by its SHA-256; each blob is streamed
    and re-hashed, and a mismatch with its run statement raises StoreError with
    nothing left behind. ``progress`` receives the artefact bytes written (increments).
    """
    if not runs:
        raise UsageError("nothing to export: no signed runs match", hint="widen --since/--framework/--control")
    keys: dict[str, PublicKey] = {keyid_of(k): k for k in (*public_keys, signer.public_key)}
    prepared = sorted((_prepare_run(a, keys) for a in runs), key=lambda r: r.run_id)
    if len({r.run_id for r in prepared}) != len(prepared):
        raise UsageError("the same run was given twice to the bundle writer")
    extras = sorted(extra)
    for name, _ in extras:
        if not is_extra_name(name):
            raise UsageError(f"cannot add bundle member {name!r}: not a plain relative path, or a reserved name")
    if len({n for n, _ in extras}) != len(extras):
        raise UsageError("two extra bundle members have the same name")
    records = [r.record for r in prepared]
    sizes: dict[str, int] = {}
    for rec in records:
        for a in rec.artefacts:
            if sizes.setdefault(a.digest, a.size) != a.size:
                raise StoreError(f"run statements disagree on the size of artefact sha256:{a.digest}",
                                 hint="run `affidavit store fsck`")
    run_keys = {r.record.keyid: keys[r.record.keyid] for r in prepared if r.record.keyid in keys}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": utc_iso(created),
        "agent": agent,
        "runs": manifest_runs(records),
        "artefacts": manifest_artefacts(records),
        "keys": sorted(keys),
        "extra": [n for n, _ in extras],
        "log": log.manifest if log is not None else None,
    }
    small: list[tuple[str, bytes]] = [
        (MANIFEST, json_bytes(manifest)),
        (README, render_readme(created=created, agent=agent, signer_key=signer.public_key, run_keys=run_keys,
                               runs=len(records), artefacts=len(sizes))),
    ]
    small += [(key_member(k), public_pem(keys[k])) for k in sorted(keys)]
    for r in prepared:
        small += [
            (run_member(r.run_id, "dsse"), json_bytes(r.dsse)),
            (run_member(r.run_id, "sigstore"), json_bytes(r.sigstore)),
            (run_member(r.run_id, "payload"), r.payload),
            (run_member(r.run_id, "sig"), r.sig),
        ]
    if log is not None:
        small += [(LOG_CHECKPOINT, log.checkpoint.encode("utf-8")), (LOG_LEAVES, log.leaves),
                  (TRUSTED_ROOT, json_bytes(log.trusted_root))]
    small += extras
    sink = open_sink(out, created)
    try:
        for name, data in small:
            sink.add_bytes(name, data)
        for hexd in sorted(sizes):
            _copy_blob(sink, hexd, sizes[hexd], open_blob, progress)
        sums = "".join(f"{d}  {n}\n" for n, d in sink.digests).encode("utf-8")
        sink.add_bytes(SUMS, sums)
        predicate = {"format_version": FORMAT_VERSION, "created": utc_iso(created), "agent": agent,
                     "members": len(sink.digests)}
        payload = make_statement(list(sink.digests), BUNDLE_PREDICATE, predicate)
        envelope = sign_envelope(payload, signer)
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
        if not verify_signature(signer.public_key, signature, pae(PAYLOAD_TYPE, payload)):
            raise SigningKeyError(f"signing key {signer.keyid} made a signature its own public key does not verify",
                                  hint="check the key (for a KMS key: its signing algorithm and message type)")
        sink.add_bytes(BUNDLE_PAYLOAD, payload)
        sink.add_bytes(BUNDLE_SIG, signature)
        sink.add_bytes(BUNDLE_DSSE, json_bytes(envelope))
        if timestamp is not None:
            sink.add_bytes(BUNDLE_TSR, timestamp(signature))
        path, archive_sha256 = sink.commit()
    except BaseException:
        sink.abort()
        raise
    logger.info("wrote bundle %s: %d runs, %d artefacts", path, len(records), len(sizes))
    return BundleSummary(path, sink.kind, len(records), len(sizes), len(sink.digests),
                         sum(sizes.values()), signer.keyid, archive_sha256)
