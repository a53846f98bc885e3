"""A signer backed by AWS KMS: the private key never leaves KMS.

Keys are named ``awskms://<key id | alias/NAME | key or alias ARN>`` (``awskms:///…``,
with an empty endpoint as cosign writes it, is accepted too). Only
``ECC_NIST_P256`` keys signing with ``ECDSA_SHA_256`` are used, so signatures are
the same DER ECDSA P-256 signatures a local key makes and every verifier takes.

Real KMS signs a ``RAW`` message only up to 4,096 bytes; a larger message (a run's
PAE usually is) is signed as ``DIGEST``, its SHA-256, which yields the same
signature. Every signature is verified locally with the key's public key before
it is returned, so a KMS or emulator bug can never put a bad signature in a bundle.

boto3 is imported only when a KMS key is used. botocore errors become
:class:`~affidavit.errors.AuthError` (refused credentials),
:class:`~affidavit.errors.RetriableError` (throttling, timeouts, 5xx) or
:class:`~affidavit.errors.SigningKeyError`, each naming the key.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from affidavit.errors import AffidavitError, AuthError, RetriableError, SigningKeyError
from affidavit.signing.keys import keyid_of, verify_signature

logger = logging.getLogger(__name__)

SCHEME = "awskms://"
RAW_MESSAGE_LIMIT = 4096
KEY_SPEC = "ECC_NIST_P256"
SIGNING_ALGORITHM = "ECDSA_SHA_256"
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(key|alias)/[A-Za-z0-9/_-]+$")
_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]+$")
_KEY_ID = re.compile(r"^[A-Za-z0-9-]+$")
_AUTH_CODES = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidClientTokenId",
               "ExpiredTokenException", "ExpiredToken", "InvalidSignatureException", "SignatureDoesNotMatch",
               "IncompleteSignature", "MissingAuthenticationToken"}
_RETRY_CODES = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException",
                "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailable",
                "ServiceUnavailableException", "InternalFailure", "InternalError"}


@dataclass(frozen=True)
class KmsKeyRef:
    """A parsed ``awskms://`` reference."""

    key_id: str  # as KMS takes it: key id, alias/NAME or ARN
    region: str | None  # the region of an ARN

    @property
    def uri(self) -> str:
        return SCHEME + self.key_id


def is_kms_uri(ref: str) -> bool:
    """True for an ``awskms://`` key reference (anything else is a key file path)."""
    return ref.startswith(SCHEME)


def parse_kms_uri(uri: str) -> KmsKeyRef:
    if not is_kms_uri(uri):
        raise SigningKeyError(f"{uri!r} is not an AWS KMS key reference; use awskms://<key id, alias/NAME or ARN>")
    key = uri[len(SCHEME):]
    if key.startswith("/"):
        key = key[1:]  # awskms:///KEY: cosign's form with an empty endpoint
    arn = _ARN.match(key)
    if arn:
        return KmsKeyRef(key, arn.group(1))
    if _ALIAS.match(key) or _KEY_ID.match(key):
        return KmsKeyRef(key, None)
    if "/" in key and not key.startswith(("alias/", "arn:")):
        raise SigningKeyError(f"{uri!r}: an endpoint inside the key reference is not supported",
                              hint="write awskms://<key id, alias/NAME or ARN> and give the endpoint separately")
    raise SigningKeyError(f"{uri!r} does not name a KMS key; use awskms://<key id>, awskms://alias/NAME "
                          "or awskms://arn:aws:kms:REGION:ACCOUNT:key/ID")


def _botocore_exceptions() -> Any:
    return importlib.import_module("botocore.exceptions")


def translate_error(e: Exception, key: str, action: str) -> AffidavitError:
    """A botocore exception as the Affidavit error a user can act on, naming the key."""
    exc = _botocore_exceptions()
    if isinstance(e, exc.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = str(err.get("Message", "")) or str(e)
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _AUTH_CODES:
            return AuthError(f"AWS refused {action} with KMS key {key}: {code}: {message}",
                             hint="check the AWS credentials and that the key policy allows kms:GetPublicKey and kms:Sign")
        if code in _RETRY_CODES or status == 429 or status >= 500:
            return RetriableError(f"AWS KMS could not {action} with key {key} right now: {code}: {message}",
                                  hint="retry later")
        if code == "NotFoundException":
            return SigningKeyError(f"KMS key {key} does not exist (or is in another account or region): {message}",
                                   hint="check signing.key and the AWS region")
        if code in ("DisabledException", "KMSInvalidStateException"):
            return SigningKeyError(f"KMS key {key} cannot be used: {code}: {message}",
                                   hint="enable the key, or cancel its pending deletion")
        return SigningKeyError(f"AWS KMS could not {action} with key {key}: {code}: {message}")
    if isinstance(e, (exc.NoCredentialsError, exc.PartialCredentialsError, exc.CredentialRetrievalError)):
        return AuthError(f"no usable AWS credentials to {action} with KMS key {key}: {e}",
                         hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use an instance role")
    if isinstance(e, (exc.EndpointConnectionError, exc.ConnectTimeoutError, exc.ReadTimeoutError,
                      exc.ConnectionClosedError)):
        return RetriableError(f"cannot reach AWS KMS to {action} with key {key}: {e}", hint="retry later")
    return SigningKeyError(f"AWS KMS could not {action} with key {key}: {e}")


class KmsSigner:
    """The Signer protocol over one KMS key (see :mod:`affidavit.signing.keys`)."""

    def __init__(self, client: Any, key_id: str, public_key: ec.EllipticCurvePublicKey) -> None:
        self._client = client
        self._key_id = key_id
        self._public_key = public_key
        self._keyid = keyid_of(public_key)

    @classmethod
    def from_client(cls, client: Any, key_id: str) -> KmsSigner:
        """Fetch and check the key's public half; refuse keys that are not P-256 signing keys."""
        exc = _botocore_exceptions()
        try:
            info = client.get_public_key(KeyId=key_id)
        except (exc.BotoCoreError, exc.ClientError) as e:
            raise translate_error(e, key_id, "read the public key") from None
        usage, spec = info.get("KeyUsage"), info.get("KeySpec") or info.get("CustomerMasterKeySpec")
        if usage != "SIGN_VERIFY":
            raise SigningKeyError(f"KMS key {key_id} is not a signing key (key usage {usage or 'unknown'}, "
                                  f"key spec {spec or 'unknown'})",
                                  hint=f"create a {KEY_SPEC} key with KeyUsage SIGN_VERIFY")
        if spec != KEY_SPEC:
            raise SigningKeyError(f"KMS key {key_id} has key spec {spec}; Affidavit signs with {KEY_SPEC} "
                                  f"({SIGNING_ALGORITHM}) keys only", hint=f"create a {KEY_SPEC} key")
        algorithms = info.get("SigningAlgorithms")
        if algorithms is not None and SIGNING_ALGORITHM not in algorithms:
            raise SigningKeyError(f"KMS key {key_id} does not offer {SIGNING_ALGORITHM}")
        try:
            public_key = serialization.load_der_public_key(bytes(info["PublicKey"]))
        except (KeyError, TypeError, ValueError):
            raise SigningKeyError(f"KMS returned no readable public key for key {key_id}") from None
        if not (isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1)):
            raise SigningKeyError(f"KMS key {key_id} says {KEY_SPEC} but its public key is not P-256")
        return cls(client, key_id, public_key)

    @property
    def key_id(self) -> str:
        """The KMS key reference (key id, alias or ARN) as given."""
        return self._key_id

    @property
    def keyid(self) -> str:
        return self._keyid

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        """A DER ECDSA P-256/SHA-256 signature of ``data``, verified locally before it is returned."""
        if len(data) <= RAW_MESSAGE_LIMIT:
            message_type, message = "RAW", data
        else:
            message_type, message = "DIGEST", hashlib.sha256(data).digest()
        exc = _botocore_exceptions()
        logger.debug("KMS sign with %s: %d bytes as %s", self._key_id, len(data), message_type)
        try:
            answer = self._client.sign(KeyId=self._key_id, Message=message, MessageType=message_type,
                                       SigningAlgorithm=SIGNING_ALGORITHM)
        except (exc.BotoCoreError, exc.ClientError) as e:
            raise translate_error(e, self._key_id, "sign") from None
        signature = answer.get("Signature") if isinstance(answer, dict) else None
        if not isinstance(signature, (bytes, bytearray)) or not signature:
            raise SigningKeyError(f"KMS returned no signature for key {self._key_id}")
        signature = bytes(signature)
        if not verify_signature(self._public_key, signature, data):
            raise SigningKeyError(
                f"KMS key {self._key_id} returned a signature ({message_type}, {len(data)} bytes) that does not "
                "verify with its public key; refusing it",
                hint="a KMS emulator may mishandle this message type; real AWS KMS does not")
        return signature


def signer_from_uri(
    uri: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    session: Any = None,
) -> KmsSigner:
    """A :class:`KmsSigner` for ``awskms://…``; ``session`` is a ``boto3.Session`` (default: a new one)."""
    ref = parse_kms_uri(uri)
    if region and ref.region and region != ref.region:
        raise SigningKeyError(f"{uri} is in region {ref.region}, but region {region} was configured",
                              hint="drop the region setting or use a key in that region")
    boto3 = importlib.import_module("boto3")
    config = importlib.import_module("botocore.config").Config(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=15)
    exc = _botocore_exceptions()
    try:
        client = (session or boto3.Session()).client(
            "kms", region_name=ref.region or region, endpoint_url=endpoint_url, config=config)
    except exc.NoRegionError:
        raise SigningKeyError(f"no AWS region for KMS key {ref.key_id}",
                              hint="set AWS_REGION, or name the key by its ARN") from None
    except exc.BotoCoreError as e:
        raise translate_error(e, ref.key_id, "connect") from None
    return KmsSigner.from_client(client, ref.key_id)
