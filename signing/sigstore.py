"""Sigstore bundle v0.3 wrapping one DSSE envelope, with a public-key hint (no certificate)."""

from __future__ import annotations

from typing import Any

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


class SigstoreFormatError(ValueError):
    """Not a Sigstore bundle v0.3 of the shape Affidavit writes."""


def make_bundle(envelope: dict[str, Any], keyid: str) -> dict[str, Any]:
    if len(envelope.get("signatures", [])) != 1:
        raise ValueError("a Sigstore bundle holds exactly one signature")
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": keyid}, "tlogEntries": []},
        "dsseEnvelope": envelope,
    }


def envelope_of(bundle: Any) -> tuple[dict[str, Any], str]:
    """The DSSE envelope and key hint of a bundle."""
    if not isinstance(bundle, dict) or bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SigstoreFormatError(f"not a Sigstore bundle (mediaType must be {BUNDLE_MEDIA_TYPE})")
    vm = bundle.get("verificationMaterial")
    hint = vm.get("publicKey", {}).get("hint") if isinstance(vm, dict) and isinstance(vm.get("publicKey"), dict) else None
    if not isinstance(hint, str):
        raise SigstoreFormatError("bundle has no verificationMaterial.publicKey.hint")
    env = bundle.get("dsseEnvelope")
    if not isinstance(env, dict):
        raise SigstoreFormatError("bundle has no dsseEnvelope")
    return env, hint
