"""Signing keys: ECDSA P-256 (default) or Ed25519, encrypted PKCS#8 PEM at rest.

The keyid is the lowercase hex SHA-256 of the public key's DER
SubjectPublicKeyInfo: one rule everywhere (signatures, bundle hints, trust files).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from affidavit.errors import InputError, PassphraseError, SigningKeyError

Algorithm = Literal["ecdsa-p256", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class Signer(Protocol):
    """Anything that signs: a local key now, a KMS key later."""

    @property
    def keyid(self) -> str: ...

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


def keyid_of(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def algorithm_of(public_key: PublicKey) -> Algorithm:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise SigningKeyError(f"unsupported key type {type(public_key).__name__}; use ECDSA P-256 or Ed25519")


def public_pem(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class LocalSigner:
    """A private key held in this process."""

    private_key: PrivateKey

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    @property
    def keyid(self) -> str:
        return keyid_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(data)
        # RFC 6979 deterministic nonces: no dependence on the RNG, and the same input signs the same way
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def verify_signature(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is a valid signature of ``data`` by ``public_key``."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_private_key(algorithm: Algorithm = "ecdsa-p256") -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise SigningKeyError(f"unknown key algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def write_private_atomically(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 from its creation; never over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if path exists: never overwrite a key
    except FileExistsError:
        raise SigningKeyError(f"{path} already exists; refusing to overwrite a key") from None
    finally:
        tmp.unlink(missing_ok=True)


def save_private_key(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    if not passphrase:
        raise PassphraseError("an empty passphrase cannot protect a signing key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_private_atomically(path, pem)


def load_private_key(path: Path, passphrase: bytes) -> PrivateKey:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(
            f"signing key {path} does not exist", hint="run `affidavit keys generate` or `affidavit init`"
        ) from None
    except OSError as e:
        raise SigningKeyError(f"cannot read signing key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as e:
        text = str(e).lower()
        if "password" in text or "decrypt" in text or "bad decrypt" in text:
            raise PassphraseError(
                f"wrong passphrase for signing key {path}",
                hint="check AFFIDAVIT_PASSPHRASE or signing.passphrase_file",
            ) from None
        raise SigningKeyError(f"{path} is not an encrypted PKCS#8 PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise SigningKeyError(f"{path}: unsupported key type; use ECDSA P-256 or Ed25519")
    algorithm_of(key.public_key())
    return key


def load_public_key_pem(pem: bytes, origin: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise InputError(f"{origin} is not a PEM public key") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise InputError(f"{origin}: unsupported key type; use ECDSA P-256 or Ed25519")
    try:
        algorithm_of(key)
    except SigningKeyError as e:
        raise InputError(f"{origin}: {e.message}") from None
    return key


def load_public_key_file(path: Path) -> PublicKey:
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read public key {path}: {e.strerror}") from None
    return load_public_key_pem(pem, str(path))


def new_passphrase() -> str:
    return secrets.token_urlsafe(32)


def read_passphrase_file(path: Path) -> bytes:
    """Read a passphrase file, refusing one that others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PassphraseError(f"passphrase file {path} does not exist") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PassphraseError(
            f"passphrase file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o})",
            hint=f"run `chmod 600 {path}`",
        )
    data = path.read_bytes().strip()
    if not data:
        raise PassphraseError(f"passphrase file {path} is empty")
    return data
