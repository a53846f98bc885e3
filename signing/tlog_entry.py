"""Log entries as Sigstore writes them: Rekor ``dsse`` 0.0.1 bodies, ``tlogEntries`` and ``trusted_root.json``.

The leaf of each run is its *canonicalized body*, the JSON Rekor would log for
the run's DSSE envelope, in RFC 8785 form (sorted keys, no whitespace)::

    {"apiVersion":"0.0.1","kind":"dsse","spec":{
      "envelopeHash":{"algorithm":"sha256","value":<hex SHA-256 of the envelope's RFC 8785 JSON>},
      "payloadHash":{"algorithm":"sha256","value":<hex SHA-256 of the statement bytes>},
      "signatures":[{"signature":<the envelope's base64 sig>,
                     "verifier":<base64 of the signer's public key PEM>}]}}

A Sigstore bundle carries it base64 in ``verificationMaterial.tlogEntries[]``
with ``kindVersion`` dsse/0.0.1, ``logId.keyId`` (base64 of the 32-byte log id),
``integratedTime`` and ``inclusionProof`` {logIndex, rootHash, treeSize, hashes,
checkpoint.envelope}; int64 fields are decimal strings and bytes are base64,
as in the protobuf JSON form verifiers read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from affidavit.errors import InputError
from affidavit.signing.keys import PublicKey, keyid_of, load_public_key_pem, public_pem
from affidavit.signing.predicate import utc_iso
from affidavit.signing.tlog import HASH_SIZE
from affidavit.signing.tlog_note import log_id_of

KIND = "dsse"
API_VERSION = "0.0.1"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
LOG_KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"
MAX_PROOF_HASHES = 64  # a tree of fewer than 2**63 leaves never needs more
_INT64_MAX = (1 << 63) - 1


class TlogEntryError(ValueError):
    """A tlogEntry does not have the shape verifiers expect; the message names the field."""


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 JSON for the ASCII-only documents hashed here (sorted keys, no whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope_hash(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(envelope)).hexdigest()


def _only_signature(envelope: dict[str, Any]) -> str:
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict) \
            or not isinstance(sigs[0].get("sig"), str):
        raise ValueError("a logged envelope holds exactly one signature")
    return str(sigs[0]["sig"])


def dsse_body(envelope: dict[str, Any], signer_key: PublicKey) -> bytes:
    """The canonicalized Rekor dsse 0.0.1 body for a one-signature DSSE envelope."""
    payload = base64.b64decode(envelope["payload"], validate=True)
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": envelope_hash(envelope)},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": _only_signature(envelope),
                            "verifier": base64.b64encode(public_pem(signer_key)).decode("ascii")}],
        },
    }
    return canonical_json(body)


def dsse_body_problem(body: bytes, envelope: dict[str, Any], payload: bytes, signature_b64: str,
                      keyid: str) -> str | None:
    """What in a logged body disagrees with the run's envelope, or None when it is the run's own entry."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return "its logged body is not JSON"
    if not isinstance(obj, dict) or obj.get("kind") != KIND or obj.get("apiVersion") != API_VERSION:
        return f"its logged body is not a Rekor {KIND} {API_VERSION} entry"
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return "its logged body has no spec"
    if _hash_value(spec.get("payloadHash")) != hashlib.sha256(payload).hexdigest():
        return "the logged payloadHash is not the SHA-256 of this run's statement"
    if _hash_value(spec.get("envelopeHash")) != envelope_hash(envelope):
        return "the logged envelopeHash is not the SHA-256 of this run's envelope"
    sigs = spec.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        return "the logged body does not hold exactly one signature"
    if sigs[0].get("signature") != signature_b64:
        return "the logged signature is not this run's signature"
    verifier = sigs[0].get("verifier")
    try:
        pem = base64.b64decode(verifier if isinstance(verifier, str) else "", validate=True)
        logged_keyid = keyid_of(load_public_key_pem(pem, "the logged verifier"))
    except (binascii.Error, ValueError, InputError):
        return "the logged verifier is not a public key PEM"
    if logged_keyid != keyid:
        return f"the logged verifier is key {logged_keyid}, not the run's signer {keyid}"
    if canonical_json(obj) != body:
        return "the logged body is not in canonical (RFC 8785) form"
    return None


def _hash_value(obj: Any) -> str | None:
    if isinstance(obj, dict) and obj.get("algorithm") == "sha256" and isinstance(obj.get("value"), str):
        return str(obj["value"])
    return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tlog_entry(*, index: int, log_id: bytes, integrated_time: int, body: bytes, tree_size: int, root: bytes,
               hashes: Sequence[bytes], checkpoint: str) -> dict[str, Any]:
    """One ``verificationMaterial.tlogEntries[]`` item, with its inclusion proof and checkpoint."""
    return {
        "logIndex": str(index),
        "logId": {"keyId": b64(log_id)},
        "kindVersion": {"kind": KIND, "version": API_VERSION},
        "integratedTime": str(integrated_time),
        "inclusionProof": {
            "logIndex": str(index),
            "rootHash": b64(root),
            "treeSize": str(tree_size),
            "hashes": [b64(h) for h in hashes],
            "checkpoint": {"envelope": checkpoint},
        },
        "canonicalizedBody": b64(body),
    }


@dataclass(frozen=True)
class TlogEntry:
    """A parsed tlogEntry (shape checked, nothing verified)."""

    index: int
    log_id: bytes
    kind: str
    version: str
    integrated_time: int
    body: bytes
    proof_index: int
    root: bytes
    tree_size: int
    hashes: tuple[bytes, ...]
    checkpoint: str


def _field(obj: Any, name: str, where: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise TlogEntryError(f"{where}{name} is missing")
    return obj[name]


def _int64(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TlogEntryError(f"{what} is not an integer")
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _INT64_MAX:
        raise TlogEntryError(f"{what} is not a non-negative int64")
    return int(text)


def _bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise TlogEntryError(f"{what} is not a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TlogEntryError(f"{what} is not valid base64") from None
    if size is not None and len(data) != size:
        raise TlogEntryError(f"{what} has {len(data)} bytes, not {size}")
    return data


def parse_tlog_entry(obj: Any, *, max_hashes: int = MAX_PROOF_HASHES) -> TlogEntry:
    """Check a tlogEntry's shape; TlogEntryError naming the first bad field."""
    kv = _field(obj, "kindVersion", "")
    proof = _field(obj, "inclusionProof", "")
    hashes = _field(proof, "hashes", "inclusionProof.")
    if not isinstance(hashes, list):
        raise TlogEntryError("inclusionProof.hashes is not a list")
    if len(hashes) > max_hashes:
        raise TlogEntryError(f"inclusionProof.hashes holds {len(hashes)} hashes, more than {max_hashes} (limit)")
    checkpoint = _field(_field(proof, "checkpoint", "inclusionProof."), "envelope", "inclusionProof.checkpoint.")
    if not isinstance(checkpoint, str):
        raise TlogEntryError("inclusionProof.checkpoint.envelope is not a string")
    kind, version = _field(kv, "kind", "kindVersion."), _field(kv, "version", "kindVersion.")
    if not isinstance(kind, str) or not isinstance(version, str):
        raise TlogEntryError("kindVersion.kind / version are not strings")
    return TlogEntry(
        index=_int64(_field(obj, "logIndex", ""), "logIndex"),
        log_id=_bytes(_field(_field(obj, "logId", ""), "keyId", "logId."), "logId.keyId", HASH_SIZE),
        kind=kind,
        version=version,
        integrated_time=_int64(_field(obj, "integratedTime", ""), "integratedTime"),
        body=_bytes(_field(obj, "canonicalizedBody", ""), "canonicalizedBody"),
        proof_index=_int64(_field(proof, "logIndex", "inclusionProof."), "inclusionProof.logIndex"),
        root=_bytes(_field(proof, "rootHash", "inclusionProof."), "inclusionProof.rootHash", HASH_SIZE),
        tree_size=_int64(_field(proof, "treeSize", "inclusionProof."), "inclusionProof.treeSize"),
        hashes=tuple(_bytes(h, f"inclusionProof.hashes[{i}]", HASH_SIZE) for i, h in enumerate(hashes)),
        checkpoint=checkpoint,
    )


def log_base_url(origin: str) -> str:
    """The ``baseUrl`` of the log in trusted_root.json (sigstore-js matches the checkpoint's name in it)."""
    return f"https://{origin}"


def trusted_root(log_key: PublicKey | None, *, origin: str | None = None, log_start: datetime | None = None,
                 tsa_authorities: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The ``trusted_root.json`` document naming the log key (if any) and the timestamp authorities.

    ``tsa_authorities`` are ``timestampAuthorities[]`` entries as
    ``affidavit.signing.tsa.timestamp_authority_entry`` makes them.
    """
    tlogs: list[dict[str, Any]] = []
    if log_key is not None:
        if origin is None:
            raise ValueError("a log in trusted_root.json needs its origin")
        der = log_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        start = log_start or datetime(1970, 1, 1, tzinfo=UTC)
        tlogs.append({
            "baseUrl": log_base_url(origin),
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(der), "keyDetails": LOG_KEY_DETAILS, "validFor": {"start": utc_iso(start)}},
            "logId": {"keyId": b64(log_id_of(log_key))},
        })
    return {
        "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
        "tlogs": tlogs,
        "certificateAuthorities": [],
        "ctlogs": [],
        "timestampAuthorities": [dict(t) for t in tsa_authorities],
    }
