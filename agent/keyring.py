"""Find the signing key's passphrase and load (or create) the signer.

Order: ``AFFIDAVIT_PASSPHRASE``, then ``signing.passphrase_file``, then the
passphrase file beside the key (``affidavit.passphrase`` for
``affidavit.key.pem``), then a prompt on a terminal. A first unattended run
with none of them writes a random passphrase into that file (mode 0600).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from affidavit.errors import PassphraseError
from affidavit.signing.keys import (
    Algorithm,
    LocalSigner,
    generate_private_key,
    load_private_key,
    new_passphrase,
    public_pem,
    read_passphrase_file,
    save_private_key,
    write_private_atomically,
)

PASSPHRASE_ENV = "AFFIDAVIT_PASSPHRASE"
Prompt = Callable[[str, bool], str]  # (text, confirm) -> passphrase


def sibling(key: Path, suffix: str) -> Path:
    """``affidavit.key.pem`` -> ``affidavit<suffix>`` beside it."""
    stem = key.name.removesuffix(".pem").removesuffix(".key")
    return key.with_name(stem + suffix)


def passphrase_path(key: Path) -> Path:
    return sibling(key, ".passphrase")


def public_key_path(key: Path) -> Path:
    return sibling(key, ".pub.pem")


def find_passphrase(key: Path, passphrase_file: Path | None, env: Mapping[str, str],
                    prompt: Prompt | None) -> bytes | None:
    if env.get(PASSPHRASE_ENV):
        return env[PASSPHRASE_ENV].encode("utf-8")
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    beside = passphrase_path(key)
    if beside.exists():
        return read_passphrase_file(beside)
    if prompt is not None:
        return prompt(f"Passphrase for {key}", False).encode("utf-8")
    return None


def load_signer(key: Path, passphrase_file: Path | None, env: Mapping[str, str],
                prompt: Prompt | None = None) -> LocalSigner:
    pw = find_passphrase(key, passphrase_file, env, prompt)
    if pw is None:
        raise PassphraseError(
            f"no passphrase for signing key {key}",
            hint=f"set {PASSPHRASE_ENV} or signing.passphrase_file",
        )
    return LocalSigner(load_private_key(key, pw))


@dataclass(frozen=True)
class NewKey:
    signer: LocalSigner
    key_path: Path
    public_path: Path
    passphrase_file: Path | None  # set when a random passphrase was written


def create_key(key: Path, algorithm: Algorithm, passphrase_file: Path | None, env: Mapping[str, str],
               prompt: Prompt | None = None) -> NewKey:
    """Generate a key at ``key``; its passphrase from env / file / prompt, else a new random passphrase file."""
    written: Path | None = None
    if env.get(PASSPHRASE_ENV):
        pw = env[PASSPHRASE_ENV].encode("utf-8")
    elif passphrase_file is not None and passphrase_file.exists():
        pw = read_passphrase_file(passphrase_file)
    elif prompt is not None:
        pw = prompt(f"New passphrase for {key}", True).encode("utf-8")
    else:
        written = passphrase_file or passphrase_path(key)
        if written.exists():
            pw = read_passphrase_file(written)
            written = None
        else:
            pw = new_passphrase().encode("ascii")
            write_private_atomically(written, pw + b"\n")
    private = generate_private_key(algorithm)
    save_private_key(key, private, pw)
    signer = LocalSigner(private)
    pub = public_key_path(key)
    pub.write_bytes(public_pem(signer.public_key))
    return NewKey(signer, key, pub, written)
