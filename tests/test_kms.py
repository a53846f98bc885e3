"""AWS KMS signing.

RAW messages (≤ 4,096 bytes) are tested against a real moto server with a hook that
enforces the RAW limit as real KMS does; DIGEST against botocore's Stubber answering
from a local P-256 key, because the emulator signs the digest as if it were the
message (signing.md). Signatures are checked with the openssl command line.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from affidavit.errors import AuthError, RetriableError, SigningKeyError
from affidavit.signing.dsse import parse_envelope, sign_envelope, verified_keyids
from affidavit.signing.keys import Signer, keyid_of, public_pem
from affidavit.signing.kms import (
    RAW_MESSAGE_LIMIT,
    KmsSigner,
    is_kms_uri,
    parse_kms_uri,
    signer_from_uri,
    translate_error,
)
from conftest import require_tool

from moto_server import free_port, moto_url  # noqa: F401  (moto_url: the shared server fixture)

REGION = "us-east-1"
STATEMENT = b'{"_type": "https://in-toto.io/Statement/v1", "subject": []}'




def _session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def enforce_raw_limit(session_or_client: Any, seen: list[tuple[str, int]]) -> None:
    """What real KMS does and moto does not: refuse a RAW message over 4,096 bytes. Records each call."""

    def check(params: dict[str, Any], **_: Any) -> None:
        kind, message = params.get("MessageType", "RAW"), params["Message"]
        seen.append((kind, len(message)))
        if kind == "RAW" and len(message) > RAW_MESSAGE_LIMIT:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": (
                "1 validation error detected: Value at 'message' failed to satisfy constraint: "
                "Member must have length less than or equal to 4096")}}, "Sign")

    events = session_or_client.events if isinstance(session_or_client, boto3.Session) else session_or_client.meta.events
    events.register("before-parameter-build.kms.Sign", check)


@pytest.fixture
def kms(moto_url: str) -> Any:
    return _session().client("kms", endpoint_url=moto_url)


def _create(kms: Any, spec: str = "ECC_NIST_P256", usage: str = "SIGN_VERIFY") -> dict[str, Any]:
    meta: dict[str, Any] = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    return meta


def openssl_verifies(folder: Path, signer: Signer, signature: bytes, message: bytes) -> bool:
    exe = require_tool("openssl")
    pub, sig, msg = folder / "pub.pem", folder / "sig.der", folder / "pae.bin"
    pub.write_bytes(public_pem(signer.public_key))
    sig.write_bytes(signature)
    msg.write_bytes(message)
    proc = subprocess.run([exe, "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(msg)],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and "Verified OK" in proc.stdout


def _envelope_pae(envelope: dict[str, Any]) -> tuple[bytes, bytes]:
    env = parse_envelope(envelope)
    return env.pae, env.signatures[0][1]


# ---------------------------------------------------------------- RAW against the moto server


def test_raw_signing_against_moto_verifies_with_openssl(kms: Any, moto_url: str, tmp_path: Path) -> None:
    key = _create(kms)
    session = _session()
    seen: list[tuple[str, int]] = []
    enforce_raw_limit(session, seen)
    signer = signer_from_uri(f"awskms://{key['KeyId']}", endpoint_url=moto_url, session=session)

    der = kms.get_public_key(KeyId=key["KeyId"])["PublicKey"]
    assert signer.keyid == hashlib.sha256(der).hexdigest() == keyid_of(signer.public_key)
    assert signer.key_id == key["KeyId"]

    envelope = sign_envelope(STATEMENT, signer)
    assert envelope["signatures"][0]["keyid"] == signer.keyid
    message, signature = _envelope_pae(envelope)
    assert seen == [("RAW", len(message))]
    assert openssl_verifies(tmp_path, signer, signature, message)
    assert not openssl_verifies(tmp_path, signer, signature, message + b" ")
    assert verified_keyids(parse_envelope(envelope), {signer.keyid: signer.public_key}) == [signer.keyid]


def test_raw_up_to_the_limit_and_digest_above_it(kms: Any, moto_url: str, tmp_path: Path) -> None:
    key = _create(kms)
    client = _session().client("kms", endpoint_url=moto_url)
    seen: list[tuple[str, int]] = []
    enforce_raw_limit(client, seen)
    signer = KmsSigner.from_client(client, key["KeyId"])

    at_limit = b"a" * RAW_MESSAGE_LIMIT
    sig = signer.sign(at_limit)
    assert seen == [("RAW", RAW_MESSAGE_LIMIT)]
    assert openssl_verifies(tmp_path, signer, sig, at_limit)

    # one byte more goes as DIGEST; moto signs the digest as if it were the message, so the local
    # verification refuses its signature instead of letting a bad one into a bundle
    with pytest.raises(SigningKeyError, match="returned a signature \\(DIGEST, 4097 bytes\\) that does not verify"):
        signer.sign(at_limit + b"a")
    assert seen[-1] == ("DIGEST", 32)


def test_the_hook_enforces_the_raw_limit(kms: Any) -> None:
    """The hook is live: a RAW message over 4 KB fails as on real KMS (so the tests above prove something)."""
    key = _create(kms)
    seen: list[tuple[str, int]] = []
    enforce_raw_limit(kms, seen)
    with pytest.raises(ClientError, match="less than or equal to 4096"):
        kms.sign(KeyId=key["KeyId"], Message=b"a" * 4097, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")


def test_alias_and_arn_references_name_the_same_key(kms: Any, moto_url: str) -> None:
    key = _create(kms)
    kms.create_alias(AliasName="alias/affidavit-evidence", TargetKeyId=key["KeyId"])
    by_id = signer_from_uri(f"awskms://{key['KeyId']}", endpoint_url=moto_url, session=_session())
    by_alias = signer_from_uri("awskms://alias/affidavit-evidence", endpoint_url=moto_url, session=_session())
    by_arn = signer_from_uri(f"awskms://{key['Arn']}", endpoint_url=moto_url, session=_session())
    cosign_form = signer_from_uri(f"awskms:///{key['KeyId']}", endpoint_url=moto_url, session=_session())
    assert by_id.keyid == by_alias.keyid == by_arn.keyid == cosign_form.keyid
    assert by_arn.key_id == key["Arn"]


def test_unknown_key_is_a_signing_key_error(moto_url: str) -> None:
    missing = "1234abcd-12ab-34cd-56ef-1234567890ab"
    with pytest.raises(SigningKeyError, match=f"KMS key {missing} does not exist"):
        signer_from_uri(f"awskms://{missing}", endpoint_url=moto_url, session=_session())


@pytest.mark.parametrize("spec", ["ECC_NIST_P384", "ECC_SECG_P256K1", "RSA_2048"])
def test_wrong_key_spec_is_refused(kms: Any, moto_url: str, spec: str) -> None:
    key = _create(kms, spec)
    with pytest.raises(SigningKeyError, match=f"has key spec {spec}; Affidavit signs with ECC_NIST_P256"):
        signer_from_uri(f"awskms://{key['KeyId']}", endpoint_url=moto_url, session=_session())


def test_encryption_key_is_refused(kms: Any, moto_url: str) -> None:
    key = kms.create_key()["KeyMetadata"]  # SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT
    with pytest.raises(SigningKeyError, match=f"KMS key {key['KeyId']} is not a signing key"):
        signer_from_uri(f"awskms://{key['KeyId']}", endpoint_url=moto_url, session=_session())


def test_region_from_the_arn_and_conflicts(kms: Any, moto_url: str) -> None:
    key = _create(kms)
    # no region anywhere but in the ARN: the ARN's region is used
    signer = signer_from_uri(f"awskms://{key['Arn']}", endpoint_url=moto_url,
                             session=boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing"))
    assert signer.keyid
    with pytest.raises(SigningKeyError, match="is in region us-east-1, but region eu-west-1 was configured"):
        signer_from_uri(f"awskms://{key['Arn']}", region="eu-west-1", endpoint_url=moto_url, session=_session())


# ---------------------------------------------------------------- environment problems


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_no_credentials_is_an_auth_error(moto_url: str, no_aws_env: None) -> None:
    with pytest.raises(AuthError, match="no usable AWS credentials to read the public key with KMS key alias/x"):
        signer_from_uri("awskms://alias/x", region=REGION, endpoint_url=moto_url)


def test_no_region_is_a_signing_key_error(no_aws_env: None) -> None:
    with pytest.raises(SigningKeyError, match="no AWS region for KMS key alias/x") as exc:
        signer_from_uri("awskms://alias/x", session=boto3.Session(aws_access_key_id="a", aws_secret_access_key="b"))
    assert exc.value.hint and "AWS_REGION" in exc.value.hint


def test_kms_unreachable_is_retriable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RetriableError, match="cannot reach AWS KMS to read the public key with key alias/x"):
        signer_from_uri("awskms://alias/x", endpoint_url=url, session=_session())


def test_boto3_is_imported_only_when_a_kms_key_is_used() -> None:
    code = ("import sys, affidavit.signing.kms as k; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules;"
            "k.parse_kms_uri('awskms://alias/x'); assert 'boto3' not in sys.modules; print('lazy')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "lazy", out.stderr


# ---------------------------------------------------------------- DIGEST and errors with botocore's Stubber


class LocalKms:
    """A botocore Stubber answering KMS calls from a local P-256 key (moto mishandles DIGEST)."""

    def __init__(self, key_id: str = "alias/evidence") -> None:
        self.key_id = key_id
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.client = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b").client("kms", region_name=REGION)
        self.stub = Stubber(self.client)
        self.arn = f"arn:aws:kms:{REGION}:123456789012:key/8d3b1b2c-0000-4000-8000-000000000001"

    def public_key_response(self, **over: Any) -> None:
        der = self.private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        response = {"KeyId": self.arn, "PublicKey": der, "KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY",
                    "SigningAlgorithms": ["ECDSA_SHA_256"]}
        response.update(over)
        self.stub.add_response("get_public_key", response, {"KeyId": self.key_id})

    def sign_response(self, data: bytes, message_type: str, signature: bytes | None = None) -> None:
        message = data if message_type == "RAW" else hashlib.sha256(data).digest()
        if signature is None:  # what real KMS does: ECDSA over SHA-256(data) either way
            signature = self.private_key.sign(hashlib.sha256(data).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        self.stub.add_response(
            "sign", {"KeyId": self.arn, "Signature": signature, "SigningAlgorithm": "ECDSA_SHA_256"},
            {"KeyId": self.key_id, "Message": message, "MessageType": message_type, "SigningAlgorithm": "ECDSA_SHA_256"})

    def signer(self) -> KmsSigner:
        self.stub.activate()
        return KmsSigner.from_client(self.client, self.key_id)


def test_stubber_digest_signing_of_a_large_pae_verifies_with_openssl(tmp_path: Path) -> None:
    kms = LocalKms()
    payload = b'{"_type": "https://in-toto.io/Statement/v1", "subject": [' + b'{"name": "x"},' * 600 + b"]}"
    from affidavit.signing.dsse import PAYLOAD_TYPE, pae

    message = pae(PAYLOAD_TYPE, payload)
    assert len(message) > RAW_MESSAGE_LIMIT
    kms.public_key_response()
    kms.sign_response(message, "DIGEST")
    signer = kms.signer()
    envelope = sign_envelope(payload, signer)
    kms.stub.assert_no_pending_responses()  # the DIGEST call was made with SHA-256(PAE), exactly
    signed, signature = _envelope_pae(envelope)
    assert signed == message
    assert openssl_verifies(tmp_path, signer, signature, message)
    assert signer.keyid == keyid_of(kms.private_key.public_key())
    assert base64.b64decode(envelope["signatures"][0]["sig"]) == signature


def test_stubber_raw_exactly_at_the_limit() -> None:
    kms = LocalKms()
    data = b"z" * RAW_MESSAGE_LIMIT
    kms.public_key_response()
    kms.sign_response(data, "RAW")
    signature = kms.signer().sign(data)
    kms.stub.assert_no_pending_responses()
    kms.private_key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA256()))


def test_stubber_bad_signature_from_kms_is_refused() -> None:
    kms = LocalKms()
    kms.public_key_response()
    other = kms.private_key.sign(b"other data", ec.ECDSA(hashes.SHA256()))
    kms.sign_response(b"data", "RAW", signature=other)
    with pytest.raises(SigningKeyError, match="alias/evidence returned a signature \\(RAW, 4 bytes\\) that does not verify"):
        kms.signer().sign(b"data")


def test_stubber_empty_signature_is_refused() -> None:
    kms = LocalKms()
    kms.public_key_response()
    kms.stub.add_response("sign", {"KeyId": kms.arn, "Signature": b"", "SigningAlgorithm": "ECDSA_SHA_256"})
    with pytest.raises(SigningKeyError, match="KMS returned no signature for key alias/evidence"):
        kms.signer().sign(b"data")


def test_stubber_public_key_not_p256_is_refused() -> None:
    kms = LocalKms()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kms.public_key_response(PublicKey=p384)
    with pytest.raises(SigningKeyError, match="says ECC_NIST_P256 but its public key is not P-256"):
        kms.signer()


def test_stubber_unreadable_public_key_is_refused() -> None:
    kms = LocalKms()
    kms.public_key_response(PublicKey=b"not DER")
    with pytest.raises(SigningKeyError, match="no readable public key"):
        kms.signer()


def test_stubber_key_without_ecdsa_sha256_is_refused() -> None:
    kms = LocalKms()
    kms.public_key_response(SigningAlgorithms=["ECDSA_SHA_384"])
    with pytest.raises(SigningKeyError, match="does not offer ECDSA_SHA_256"):
        kms.signer()


@pytest.mark.parametrize(("when", "code", "status", "error", "message"), [
    ("get_public_key", "AccessDeniedException", 400, AuthError,
     "AWS refused read the public key with KMS key alias/evidence: AccessDeniedException"),
    ("sign", "AccessDeniedException", 400, AuthError, "AWS refused sign with KMS key alias/evidence"),
    ("get_public_key", "UnrecognizedClientException", 400, AuthError, "AWS refused"),
    ("sign", "ThrottlingException", 400, RetriableError,
     "AWS KMS could not sign with key alias/evidence right now: ThrottlingException"),
    ("sign", "KMSInternalException", 500, RetriableError, "right now: KMSInternalException"),
    ("sign", "SomethingNew", 503, RetriableError, "right now: SomethingNew"),
    ("sign", "DisabledException", 400, SigningKeyError, "alias/evidence cannot be used: DisabledException"),
    ("get_public_key", "UnsupportedOperationException", 400, SigningKeyError,
     "AWS KMS could not read the public key with key alias/evidence: UnsupportedOperationException"),
    ("sign", "KMSInvalidStateException", 400, SigningKeyError, "alias/evidence cannot be used: KMSInvalidStateException"),
    ("sign", "InvalidKeyUsageException", 400, SigningKeyError,
     "AWS KMS could not sign with key alias/evidence: InvalidKeyUsageException"),
    ("get_public_key", "NotFoundException", 400, SigningKeyError, "KMS key alias/evidence does not exist"),
])
def test_stubber_errors_are_translated_naming_the_key(
    when: str, code: str, status: int, error: type[Exception], message: str
) -> None:
    kms = LocalKms()
    if when == "sign":
        kms.public_key_response()
    kms.stub.add_client_error(when, service_error_code=code, service_message="the service said no",
                              http_status_code=status)
    with pytest.raises(error, match=message) as exc:
        kms.signer().sign(b"data")
    if error is not RetriableError:
        assert not isinstance(exc.value, RetriableError)


def test_translate_error_for_transport_problems() -> None:
    err = translate_error(NoCredentialsError(), "alias/k", "sign")
    assert isinstance(err, AuthError) and "no usable AWS credentials to sign with KMS key alias/k" in err.message
    err = translate_error(EndpointConnectionError(endpoint_url="https://kms"), "alias/k", "sign")
    assert isinstance(err, RetriableError) and "cannot reach AWS KMS" in err.message
    err = translate_error(ValueError("odd"), "alias/k", "sign")
    assert type(err) is SigningKeyError and "alias/k" in err.message


# ---------------------------------------------------------------- key references


@pytest.mark.parametrize(("uri", "key_id", "region"), [
    ("awskms://1234abcd-12ab-34cd-56ef-1234567890ab", "1234abcd-12ab-34cd-56ef-1234567890ab", None),
    ("awskms://mrk-1234abcd12ab34cd56ef1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab", None),
    ("awskms://alias/affidavit/evidence_key-1", "alias/affidavit/evidence_key-1", None),
    ("awskms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
     "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "eu-west-1"),
    ("awskms://arn:aws:kms:eu-west-1:111122223333:alias/evidence", "arn:aws:kms:eu-west-1:111122223333:alias/evidence",
     "eu-west-1"),
    ("awskms://arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/abc", "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/abc",
     "us-gov-west-1"),
    ("awskms:///alias/evidence", "alias/evidence", None),
])
def test_parse_kms_uri(uri: str, key_id: str, region: str | None) -> None:
    assert is_kms_uri(uri)
    ref = parse_kms_uri(uri)
    assert (ref.key_id, ref.region) == (key_id, region)
    assert parse_kms_uri(ref.uri) == ref


@pytest.mark.parametrize(("uri", "message"), [
    ("./affidavit.key.pem", "is not an AWS KMS key reference"),
    ("gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "is not an AWS KMS key reference"),
    ("awskms://", "does not name a KMS key"),
    ("awskms://localhost:4566/alias/evidence", "an endpoint inside the key reference is not supported"),
    ("awskms://key with spaces", "does not name a KMS key"),
    ("awskms://arn:aws:kms:eu-west-1:1111:key/abc", "does not name a KMS key"),
])
def test_bad_kms_uris(uri: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message):
        parse_kms_uri(uri)
