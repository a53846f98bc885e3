"""DSSE envelopes: signatures over the pre-authentication encoding (PAE), not over JSON.

PAE = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from affidavit.signing.keys import PublicKey, Signer, verify_signature

PAYLOAD_TYPE = "application/vnd.in-toto+json"


class EnvelopeFormatError(ValueError):
    """The envelope JSON does not have the DSSE shape."""


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_envelope(payload: bytes, signer: Signer, payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": signer.keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature bytes)

    @property
    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def signature(self, keyid: str | None) -> bytes:
        """The signature by ``keyid`` (a Sigstore bundle's key hint), else the first."""
        return next((sig for k, sig in self.signatures if k == keyid), self.signatures[0][1])


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeFormatError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeFormatError(f"{what} is not valid base64") from None


def parse_envelope(obj: Any) -> Envelope:
    if not isinstance(obj, dict):
        raise EnvelopeFormatError("envelope is not a JSON object")
    ptype = obj.get("payloadType")
    if not isinstance(ptype, str):
        raise EnvelopeFormatError("envelope has no payloadType string")
    payload = _b64(obj.get("payload"), "payload")
    sigs = obj.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise EnvelopeFormatError("envelope has no signatures")
    parsed: list[tuple[str, bytes]] = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict):
            raise EnvelopeFormatError(f"signatures[{i}] is not an object")
        keyid = s.get("keyid", "")
        if not isinstance(keyid, str):
            raise EnvelopeFormatError(f"signatures[{i}].keyid is not a string")
        parsed.append((keyid, _b64(s.get("sig"), f"signatures[{i}].sig")))
    return Envelope(ptype, payload, tuple(parsed))


def verified_keyids(envelope: Envelope, keys: Mapping[str, PublicKey]) -> list[str]:
    """The keyids of trusted keys whose signature on the envelope is valid.

    A signature whose keyid names no trusted key is tried against every trusted
    key (the keyid is only a hint), so a missing hint does not hide a good one.
    """
    good: list[str] = []
    message = envelope.pae
    for keyid, sig in envelope.signatures:
        candidates = [keyid] if keyid in keys else list(keys)
        for k in candidates:
            if k not in good and verify_signature(keys[k], sig, message):
                good.append(k)
                break
    return good
