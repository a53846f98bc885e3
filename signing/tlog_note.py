"""Signed tree heads as C2SP checkpoints (signed notes), and the log's identity.

A checkpoint is the note ``<origin>\\n<size>\\n<base64 root>\\n`` followed by a
blank line and one signature line ``— <origin> <base64(key hint || signature)>\\n``
(c2sp.org/tlog-checkpoint, c2sp.org/signed-note). The key hint is the first 4
bytes of the log id, the SHA-256 of the log key's DER SubjectPublicKeyInfo, and
the signature is ECDSA P-256 / SHA-256 (DER) over the note's bytes: the shape
Sigstore's Rekor writes and sigstore-js verifies (it finds the log by the hint
and checks that the log's ``baseUrl`` matches the signature's name).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from affidavit.signing.keys import PublicKey, Signer, verify_signature
from affidavit.signing.tlog import HASH_SIZE

EM_DASH = "\u2014"
MAX_CHECKPOINT_BYTES = 16 << 10
# An origin is a schema-less URL (c2sp.org/tlog-checkpoint); sigstore-js uses the
# signature's name as a regular expression against the log's baseUrl, so only
# characters that are literal (or '.') in a regex are allowed.
ORIGIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$")
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class CheckpointError(ValueError):
    """A checkpoint is malformed or its signature does not verify; the message says which."""


def log_id_of(public_key: PublicKey) -> bytes:
    """The log id: SHA-256 of the log key's DER SubjectPublicKeyInfo (32 bytes)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def is_log_key(public_key: PublicKey) -> bool:
    """True for an ECDSA P-256 key, the only kind of log key checkpoint verifiers expect."""
    return isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1)


def check_origin(origin: str) -> str:
    if not ORIGIN_RE.match(origin):
        raise CheckpointError(
            f"log origin {origin!r} is not a plain name such as 'affidavit.local/prod' "
            "(letters, digits and . _ / : -, at most 200, starting with a letter or digit)"
        )
    return origin


@dataclass(frozen=True)
class Checkpoint:
    """The signed content of a checkpoint: which log, how many entries, which root."""

    origin: str
    size: int
    root: bytes

    def note(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n".encode("utf-8")


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    text: str  # the whole signed note, exactly as written
    name: str  # the signature line's key name
    key_hint: bytes
    signature: bytes


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed note for ``checkpoint``, signed by the log key."""
    check_origin(checkpoint.origin)
    note = checkpoint.note()
    hint = log_id_of(signer.public_key)[:4]
    sig = base64.b64encode(hint + signer.sign(note)).decode("ascii")
    return f"{note.decode('utf-8')}\n{EM_DASH} {checkpoint.origin} {sig}\n"


def parse_checkpoint(text: str) -> SignedCheckpoint:
    """Parse a signed checkpoint (not yet verified); CheckpointError naming what is wrong."""
    if len(text.encode("utf-8", "replace")) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes")
    note, sep, sigs = text.partition("\n\n")
    if not sep:
        raise CheckpointError("not a signed note: no blank line between the checkpoint and its signature")
    lines = note.split("\n")
    if len(lines) != 3:
        raise CheckpointError(f"the checkpoint body has {len(lines)} lines; expected origin, size and root hash")
    origin, size_text, root_text = lines
    check_origin(origin)
    if not _SIZE_RE.match(size_text):
        raise CheckpointError(f"tree size {size_text!r} is not a decimal number")
    root = _b64(root_text, "root hash")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"the root hash has {len(root)} bytes, not {HASH_SIZE}")
    sig_lines = sigs.split("\n")
    if sig_lines[-1] != "" or len(sig_lines) != 2:
        raise CheckpointError("expected exactly one signature line, ending in a newline")
    parts = sig_lines[0].split(" ")
    if len(parts) != 3 or parts[0] != EM_DASH or not parts[1]:
        raise CheckpointError(f"the signature line is not '{EM_DASH} <name> <base64 signature>'")
    blob = _b64(parts[2], "signature")
    if len(blob) < 5:
        raise CheckpointError("the signature is too short to hold a key hint and a signature")
    cp = Checkpoint(origin, int(size_text), root)
    return SignedCheckpoint(cp, text, parts[1], blob[:4], blob[4:])


def verify_checkpoint(text: str, log_key: PublicKey) -> Checkpoint:
    """Parse and verify a checkpoint against the trusted log key; CheckpointError with the reason otherwise."""
    signed = parse_checkpoint(text)
    if signed.key_hint != log_id_of(log_key)[:4]:
        raise CheckpointError(
            f"signed by another key (key hint {signed.key_hint.hex()}; the trusted log key's is "
            f"{log_id_of(log_key)[:4].hex()})"
        )
    if signed.name != signed.checkpoint.origin:
        raise CheckpointError(f"signed under the name {signed.name!r}, "
                              f"not the log's origin {signed.checkpoint.origin!r}")
    if not verify_signature(log_key, signed.signature, signed.checkpoint.note()):
        raise CheckpointError("its signature does not verify with the trusted log key")
    return signed.checkpoint


def _b64(text: str, what: str) -> bytes:
    if not _B64_RE.match(text) or len(text) % 4:
        raise CheckpointError(f"the {what} is not standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"the {what} is not standard base64") from None
