"""RFC 3161 trusted timestamps over signatures.

A timestamp token proves that a signature existed at a time. Its message imprint
is the SHA-256 of the raw signature bytes (what a Sigstore bundle v0.3 carries,
base64, in ``verificationMaterial.timestampVerificationData.rfc3161Timestamps[]
.signedTimestamp``: the whole DER TimeStampResp).

- :func:`request_timestamp` asks a TSA over HTTP and checks the answer (status,
  nonce, imprint); failures are :class:`TsaUnavailableError` (worth retrying) or
  :class:`TsaResponseError`, both naming the TSA URL.
- :func:`verify_timestamp` verifies a stored token offline against TSA roots the
  auditor trusts; every failure is a :class:`TimestampError` with its reason.
- :func:`timestamp_authority_entry` makes the ``timestampAuthorities[]`` entry
  of a Sigstore ``trusted_root.json``.

Parsing and the CMS signature check use ``rfc3161-client``; the chain, validity
and EKU checks are done here too so that each failure has a precise reason.
Known limit: rfc3161-client refuses tokens whose certificate SET is not DER-sorted
(``openssl ts -reply`` with ``-chain``); TSAs that embed only their own
certificate, as ``certReq`` asks, are fine.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerifierBuilder,
    decode_timestamp_response,
)

from affidavit.errors import FatalError, InputError, RetriableError
from affidavit.signing.predicate import utc_iso

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

QUERY_MEDIA_TYPE = "application/timestamp-query"
REPLY_MEDIA_TYPE = "application/timestamp-reply"
MAX_RESPONSE_BYTES = 256 * 1024  # a token is a few KiB; refuse a TSA (or bundle) sending more
MAX_CHAIN_DEPTH = 8
_HASHES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_GRANTED = (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS)
T = TypeVar("T")


class TimestampError(ValueError):
    """A timestamp token does not prove what it should; the message is the reason."""


class TsaUnavailableError(RetriableError):
    """The TSA could not be reached or failed (connection, timeout, 429, 5xx)."""


class TsaResponseError(FatalError):
    """The TSA answered, but not with a usable timestamp for our request."""


@dataclass(frozen=True)
class TimestampInfo:
    """What a verified token attests."""

    time: datetime  # genTime, UTC
    tsa_subject: str  # RFC 4514 subject of the TSA certificate
    serial: int  # the token's serial number
    chain: tuple[x509.Certificate, ...]  # TSA certificate first, trusted root last

    def to_json(self) -> dict[str, Any]:
        return {"time": utc_iso(self.time), "tsa": self.tsa_subject, "serial": str(self.serial)}


def _guarded(what: str, fn: Callable[[], T]) -> T:
    """Call into the ASN.1 library; anything it throws (a Rust panic included) becomes a TimestampError."""
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit, GeneratorExit, TimestampError):
        raise
    except BaseException as e:  # pyo3 panics derive from BaseException
        raise TimestampError(f"{what}: {e}") from None


# ---------------------------------------------------------------- requesting


def request_timestamp(
    tsa_url: str,
    signature: bytes,
    *,
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> bytes:
    """A DER TimeStampResp from ``tsa_url`` whose imprint is SHA-256(``signature``).

    The request carries a random nonce and certReq=true; the answer must be
    granted, for our imprint and our nonce.
    """
    if not signature:
        raise ValueError("cannot timestamp an empty signature")
    req = (
        TimestampRequestBuilder()
        .data(signature)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    body = _post(tsa_url, req.as_bytes(), timeout, session)
    try:
        resp = _guarded("not a TimeStampResp", lambda: decode_timestamp_response(body))
        _check_status(resp)
        info = _guarded("no TSTInfo", lambda: resp.tst_info)
        if _guarded("bad imprint", lambda: info.message_imprint.message) != hashlib.sha256(signature).digest():
            raise TimestampError("the TSA timestamped other data than the signature we sent")
        if _guarded("bad nonce", lambda: info.nonce) != req.nonce:
            raise TimestampError("the TSA's answer carries another nonce than our request (a replayed answer?)")
    except TimestampError as e:
        raise TsaResponseError(f"timestamp authority {tsa_url}: {e}",
                               hint="check signing.tsa_url points at an RFC 3161 TSA") from None
    logger.debug("timestamp from %s: %d bytes", tsa_url, len(body))
    return body


def _post(url: str, query: bytes, timeout: float, session: requests.Session | None) -> bytes:
    import requests  # here: verifying never needs it

    http = session or requests.Session()
    try:
        with http.post(url, data=query, headers={"Content-Type": QUERY_MEDIA_TYPE, "Accept": REPLY_MEDIA_TYPE},
                       timeout=timeout, stream=True) as r:
            if r.status_code == 429 or r.status_code >= 500:
                raise TsaUnavailableError(f"timestamp authority {url} answered HTTP {r.status_code}",
                                          hint="the TSA is failing or busy; retry later")
            if r.status_code != 200:
                raise TsaResponseError(f"timestamp authority {url} answered HTTP {r.status_code}",
                                       hint="check signing.tsa_url")
            chunks: list[bytes] = []
            size = 0
            for chunk in r.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise TsaResponseError(f"timestamp authority {url} sent more than {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.Timeout:
        raise TsaUnavailableError(f"timestamp authority {url} did not answer within {timeout:g} s",
                                  hint="retry later or raise the timeout") from None
    except requests.ConnectionError as e:
        raise TsaUnavailableError(f"cannot reach timestamp authority {url}: {type(e).__name__}",
                                  hint="check signing.tsa_url and the network") from None
    except requests.RequestException as e:
        raise TsaResponseError(f"timestamp authority {url}: {e}", hint="check signing.tsa_url") from None
    finally:
        if session is None:
            http.close()


def _check_status(resp: TimeStampResponse) -> None:
    status = _guarded("bad status", lambda: resp.status)
    if status not in _GRANTED:
        text = "; ".join(_guarded("bad status text", lambda: list(resp.status_string)))
        try:
            name = PKIStatus(status).name.lower()
        except ValueError:
            name = str(status)
        raise TimestampError(f"the TSA refused the request (status {name}{': ' + text if text else ''})")


# ---------------------------------------------------------------- verifying


def verify_timestamp(
    token_der: bytes,
    signature: bytes,
    roots: Sequence[x509.Certificate],
    *,
    untrusted: Sequence[x509.Certificate] = (),
) -> TimestampInfo:
    """Verify a DER TimeStampResp over ``signature`` against trusted TSA ``roots``.

    ``untrusted`` may supply the TSA certificate and intermediates when the
    token does not embed them; they are only path material, never anchors.
    Raises :class:`TimestampError` with the reason on any failure; a hostile token
    can make it raise nothing else.
    """
    return _guarded("timestamp token is malformed", lambda: _verify(token_der, signature, roots, untrusted))


def _verify(
    token_der: bytes,
    signature: bytes,
    roots: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate],
) -> TimestampInfo:
    if not roots:
        raise TimestampError("no trusted TSA roots to verify the timestamp against")
    if len(token_der) > MAX_RESPONSE_BYTES:
        raise TimestampError(f"timestamp token is larger than {MAX_RESPONSE_BYTES} bytes")
    resp = _guarded("timestamp token is not a DER RFC 3161 TimeStampResp", lambda: decode_timestamp_response(token_der))
    _check_status(resp)
    info = _guarded("timestamp token has no readable TSTInfo", lambda: resp.tst_info)
    algorithm = _guarded("timestamp token has no readable message imprint",
                         lambda: info.message_imprint.hash_algorithm.dotted_string)
    if algorithm not in _HASHES:
        raise TimestampError(f"timestamp token uses unsupported hash algorithm {algorithm}")
    imprint = _guarded("timestamp token has no readable message imprint", lambda: info.message_imprint.message)
    if hashlib.new(_HASHES[algorithm], signature).digest() != imprint:
        raise TimestampError("timestamp token is for a different signature")
    gen_time = _guarded("timestamp token has no readable time", lambda: info.gen_time).astimezone(UTC)

    embedded = _guarded("timestamp token certificates are unreadable", lambda: _embedded_certs(resp))
    leaf = _signer_cert(resp, [*embedded, *untrusted])
    chain = _build_chain(leaf, [*embedded, *untrusted], roots)
    for cert in chain:
        if not cert.not_valid_before_utc <= gen_time <= cert.not_valid_after_utc:
            raise TimestampError(
                f"TSA certificate {_subject(cert)} was not valid at the timestamp's time {utc_iso(gen_time)} "
                f"(valid {utc_iso(cert.not_valid_before_utc)} to {utc_iso(cert.not_valid_after_utc)})")
    check_timestamping_eku(leaf)

    builder = VerifierBuilder().add_root_certificate(chain[-1])
    for cert in chain[1:-1]:
        builder = builder.add_intermediate_certificate(cert)
    if leaf not in embedded:
        builder = builder.tsa_certificate(leaf)
    # the CMS signature over the TSTInfo, checked by OpenSSL inside rfc3161-client (its VerificationError
    # and anything else it raises become a TimestampError)
    _guarded("timestamp token signature does not verify", lambda: builder.build().verify(resp, imprint))
    serial = _guarded("timestamp token has no readable serial", lambda: int(info.serial_number))
    return TimestampInfo(time=gen_time, tsa_subject=leaf.subject.rfc4514_string(), serial=serial, chain=tuple(chain))


def _embedded_certs(resp: TimeStampResponse) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(der) for der in sorted(resp.signed_data.certificates)]


def _subject(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _signer_cert(resp: TimeStampResponse, candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    infos = _guarded("timestamp token signer info is unreadable", lambda: list(resp.signed_data.signer_infos))
    if len(infos) != 1:
        raise TimestampError(f"timestamp token has {len(infos)} signers; expected exactly one")
    issuer = _guarded("timestamp token signer info is unreadable", lambda: infos[0].issuer)
    serial = _guarded("timestamp token signer info is unreadable", lambda: infos[0].serial_number)
    for cert in candidates:
        if cert.issuer == issuer and cert.serial_number == serial:
            return cert
    if not candidates:
        raise TimestampError("timestamp token carries no TSA certificate and none was supplied")
    raise TimestampError(f"timestamp token's signer certificate ({issuer.rfc4514_string()}, serial {serial}) "
                         "is not in the token")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, or a key type that cannot sign certificates
        return False
    return True


def _build_chain(
    leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """leaf ... root, every link checked; the anchor must be one of ``roots``."""
    chain = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        if current in roots:
            return chain
        root = next((r for r in roots if _issued_by(current, r)), None)
        if root is not None:
            chain.append(root)
            return chain
        parent = next((c for c in untrusted if c not in chain and _is_ca(c) and _issued_by(current, c)), None)
        if parent is None:
            break
        chain.append(parent)
        current = parent
    raise TimestampError(f"TSA certificate {_subject(leaf)} not issued by a trusted root")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_timestamping_eku(cert: x509.Certificate) -> None:
    """RFC 3161 §2.3: the TSA certificate has exactly one, critical, EKU: timeStamping."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError(f"TSA certificate {_subject(cert)} has no extended key usage; "
                             "a TSA certificate needs a critical timeStamping EKU") from None
    except ValueError as e:
        raise TimestampError(f"TSA certificate {_subject(cert)} has unreadable extensions: {e}") from None
    if ExtendedKeyUsageOID.TIME_STAMPING not in eku.value:
        raise TimestampError(f"TSA certificate {_subject(cert)} lacks the timeStamping extended key usage")
    if not eku.critical:
        raise TimestampError(f"TSA certificate {_subject(cert)} has a timeStamping EKU that is not critical")


# ---------------------------------------------------------------- trust material


def load_tsa_roots(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM bundle (the auditor's ``--tsa-roots``)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read TSA roots {path}: {e.strerror}") from None
    return load_tsa_roots_pem(data, str(path))


def load_tsa_roots_pem(data: bytes, origin: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InputError(f"{origin} holds no PEM certificate", hint="give the TSA's root CA certificate(s) in PEM")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise InputError(f"{origin} is not a valid PEM certificate bundle: {e}") from None


def tsa_chain_pem(chain: Sequence[x509.Certificate]) -> str:
    """The chain as one PEM text, TSA certificate first (for ``openssl ts -verify -untrusted``)."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain)


def timestamp_authority_entry(chain: Sequence[x509.Certificate], uri: str) -> dict[str, Any]:
    """A Sigstore ``trusted_root.json`` ``timestampAuthorities[]`` entry.

    ``chain`` is TSA certificate first, root last (``TimestampInfo.chain``);
    each link is checked, since a wrong chain makes every verifier fail later.
    """
    if not chain:
        raise ValueError("a timestamp authority needs at least its certificate")
    for cert, issuer in zip(chain, chain[1:]):
        if not _issued_by(cert, issuer):
            raise ValueError(f"{_subject(cert)} is not issued by the next certificate in the chain, {_subject(issuer)}")
    leaf = chain[0]
    subject: dict[str, str] = {}
    for key, oid in (("organization", NameOID.ORGANIZATION_NAME), ("commonName", NameOID.COMMON_NAME)):
        attrs = leaf.subject.get_attributes_for_oid(oid)
        if attrs:
            subject[key] = str(attrs[0].value)
    return {
        "subject": subject,
        "uri": uri,
        "certChain": {"certificates": [
            {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")} for c in chain
        ]},
        "validFor": {"start": utc_iso(leaf.not_valid_before_utc)},
    }
