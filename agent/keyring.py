"""Find the signing key's passphrase and load (or create) the signer; the key's lifecycle.

Order: ``AFFIDAVIT_PASSPHRASE``, then ``signing.passphrase_file``, then the
passphrase file beside the key (``affidavit.passphrase`` for
``affidavit.key.pem``), then a prompt on a terminal. A first unattended run
with none of them writes a random passphrase into that file (mode 0600).
An ``awskms://`` key needs no passphrase: it signs in AWS KMS.

The key history (``affidavit.keys.json`` beside the key, see
:class:`~affidavit.signing.trust.KeyHistory`) records every signing key with its
validity window; :func:`rotate_key`, :func:`revoke_key` and :func:`export_trust`
update it under a file lock (``<history>.lock``), and :func:`check_in_force`
refuses to sign with a key the history has rotated out or revoked.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affidavit.config.models import SigningConfig
from affidavit.errors import PassphraseError, SigningKeyError
from affidavit.signing.keys import (
    Algorithm,
    LocalSigner,
    PublicKey,
    Signer,
    generate_private_key,
    keyid_of,
    load_private_key,
    new_passphrase,
    public_pem,
    read_passphrase_file,
    save_private_key,
    write_private_atomically,
)
from affidavit.signing.predicate import utc_iso
from affidavit.signing.trust import KeyHistory, history_path_for, write_atomically

if TYPE_CHECKING:
    from affidavit.signing.kms import KmsSigner

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


def load_signer(key: Path | str, passphrase_file: Path | None, env: Mapping[str, str],
                prompt: Prompt | None = None) -> LocalSigner:
    """The signer of a key file (a KMS key needs :func:`configured_signer`, which knows its region)."""
    if isinstance(key, str):
        raise SigningKeyError(f"signing.key is the AWS KMS key {key}; this command cannot sign with a KMS key yet",
                              hint="use a key file for this command")
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


# -- KMS and the configured key -------------------------------------------------------


def kms_signer(uri: str, signing: SigningConfig) -> KmsSigner:
    """An ``awskms://`` signer with ``signing.kms_region`` and ``signing.kms_endpoint``."""
    from affidavit.signing.kms import signer_from_uri

    return signer_from_uri(uri, region=signing.kms_region, endpoint_url=signing.kms_endpoint)


def configured_signer(signing: SigningConfig, env: Mapping[str, str], prompt: Prompt | None = None) -> Signer:
    """The signer ``signing.key`` names: a KMS key, or a key file opened with its passphrase."""
    if isinstance(signing.key, str):
        return kms_signer(signing.key, signing)
    return load_signer(signing.key, signing.passphrase_file, env, prompt)


# -- the key history ------------------------------------------------------------------

KMS_HISTORY = "affidavit.keys.json"  # beside the config file when the signing key lives in KMS
LOCK_TIMEOUT = 30.0


def history_path(signing: SigningConfig, base_dir: Path) -> Path:
    """``affidavit.keys.json`` beside the key file (or the config file, for a KMS key)."""
    return base_dir / KMS_HISTORY if isinstance(signing.key, str) else history_path_for(signing.key)


@contextmanager
def history_lock(history: Path, timeout: float | None = None) -> Iterator[None]:
    """An exclusive flock on ``<history>.lock`` for the block: one key-lifecycle change at a time."""
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    lock = history.with_name(history.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SigningKeyError(f"cannot open the key history lock {lock}: {e.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SigningKeyError(f"another `affidavit keys` command is changing {history}",
                                          hint="wait for it to finish and try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the flock


def record_current(history: KeyHistory, public_key: PublicKey) -> KeyHistory:
    """The history with the key in use recorded (a first key, from before the history, without a start)."""
    keyid = keyid_of(public_key)
    if keyid in history.store.keys:
        return history
    if history.store.keys:
        raise SigningKeyError(f"the signing key {keyid} is not in the key history {history.path}: it was replaced "
                              "without `affidavit keys rotate`", hint="restore the previous key file, then rotate")
    return history.add(public_key, unbounded_start=True, comment="in use before the key history started")


def check_in_force(signing: SigningConfig, base_dir: Path, keyid: str, now: datetime | None = None) -> None:
    """Refuse to sign with a key the key history has rotated out or revoked."""
    path = history_path(signing, base_dir)
    if not path.exists():
        return
    key = KeyHistory.load(path).store.keys.get(keyid)
    now = now or datetime.now(UTC)
    if key is None:
        return
    if key.revoked_at is not None and now >= key.revoked_at:
        raise SigningKeyError(f"refusing to sign: signing key {keyid} was revoked at {utc_iso(key.revoked_at)} "
                              f"(key history {path})", hint="run `affidavit keys rotate` to make a new key")
    if key.not_after is not None and now >= key.not_after:
        raise SigningKeyError(f"refusing to sign: signing key {keyid} was rotated out at {utc_iso(key.not_after)} "
                              f"(key history {path})",
                              hint="the key file still holds the old key; if `affidavit keys rotate` was "
                                   "interrupted, run it again to finish")


# -- rotation, revocation, the auditor's trust file ------------------------------------


@dataclass(frozen=True)
class Rotation:
    new_keyid: str
    old_keyid: str | None  # None when this call only finished an interrupted rotation
    retired: Path | None  # where the old private key was kept
    history: Path


def retired_path(key: Path, keyid: str) -> Path:
    """``affidavit.key.pem`` -> ``affidavit.key.<first 8 of keyid>.pem``: where a rotated-out key is kept."""
    base = key.name.removesuffix(".pem")
    return key.with_name(f"{base}.{keyid[:8]}.pem")


def _staged(key: Path, keyid: str) -> Path:
    return key.with_name(f".{key.name}.{keyid}.rotating")


def _finish_interrupted(key: Path, history: KeyHistory) -> str | None:
    """Put in place a new key a crashed rotation staged after recording it; drop one it had not recorded."""
    current = history.current()
    finished = None
    for staged in sorted(key.parent.glob(f".{key.name}.*.rotating")):
        keyid = staged.name[len(key.name) + 2:-len(".rotating")]
        if current is not None and current.keyid == keyid:
            try:
                os.replace(staged, key)
            except OSError as e:
                raise SigningKeyError(f"cannot put the new key in place of {key}: {e.strerror}") from None
            write_atomically(public_key_path(key), public_pem(current.public_key))
            finished = keyid
        else:
            staged.unlink(missing_ok=True)
    return finished


def rotate_key(signing: SigningConfig, base_dir: Path, env: Mapping[str, str], prompt: Prompt | None = None,
               *, now: datetime | None = None) -> Rotation:
    """Make a new signing key; the old one is kept aside and closed in the key history from ``now``.

    Order, so that a crash at any point leaves a usable state: the new key is
    written under a staging name; the old key is hard-linked aside; the history
    records the rotation; the new key is renamed over ``signing.key``. A rotation
    interrupted after the history was written is finished by the next call.
    """
    key = signing.key_file
    hist = history_path(signing, base_dir)
    with history_lock(hist):
        history = KeyHistory.load(hist)
        finished = _finish_interrupted(key, history)
        if finished is not None:
            return Rotation(finished, None, None, hist)
        pw = find_passphrase(key, signing.passphrase_file, env, prompt)
        if pw is None:
            raise PassphraseError(f"no passphrase for signing key {key}",
                                  hint=f"set {PASSPHRASE_ENV} or signing.passphrase_file")
        old = LocalSigner(load_private_key(key, pw))
        history = record_current(history, old.public_key)
        new = LocalSigner(generate_private_key(signing.algorithm))
        staged = _staged(key, new.keyid)
        save_private_key(staged, new.private_key, pw)
        retired = retired_path(key, old.keyid)
        try:
            os.link(key, retired)
        except FileExistsError:
            if retired.read_bytes() != key.read_bytes():
                staged.unlink(missing_ok=True)
                raise SigningKeyError(f"{retired} exists and holds another key; refusing to overwrite it") from None
        except OSError as e:
            staged.unlink(missing_ok=True)
            raise SigningKeyError(f"cannot keep the old key as {retired}: {e.strerror}") from None
        write_atomically(public_key_path(retired), public_pem(old.public_key))
        at = now or datetime.now(UTC)
        history = history.rotate(new.public_key, at=at) if history.current() else history.add(new.public_key, at=at)
        history.save()
        try:
            os.replace(staged, key)
        except OSError as e:
            raise SigningKeyError(f"cannot put the new key in place of {key}: {e.strerror}",
                                  hint="fix the cause, then run `affidavit keys rotate` again to finish") from None
        write_atomically(public_key_path(key), public_pem(new.public_key))
    return Rotation(new.keyid, old.keyid, retired, hist)


def _matching(history: KeyHistory, prefix: str) -> list[str]:
    return [k for k in (*history.store.keys, *history.store.log_keys) if k.startswith(prefix)]


def revoke_key(signing: SigningConfig, base_dir: Path, keyid: str, env: Mapping[str, str],
               prompt: Prompt | None = None, *, at: datetime | None = None) -> tuple[str, datetime]:
    """Record in the key history that key ``keyid`` (or a unique prefix, 8+ hex digits) is withdrawn from ``at``."""
    if len(keyid) < 8 or any(c not in "0123456789abcdef" for c in keyid):
        raise SigningKeyError(f"{keyid!r} is not a keyid: give at least its first 8 lowercase hex digits")
    hist = history_path(signing, base_dir)
    with history_lock(hist):
        history = KeyHistory.load(hist)
        if not _matching(history, keyid) and not history.store.keys:
            history = record_current(history, configured_signer(signing, env, prompt).public_key)
        found = _matching(history, keyid)
        if len(found) != 1:
            raise SigningKeyError(f"{'no key' if not found else f'{len(found)} keys'} in the key history {hist} "
                                  f"match{'es' if not found else ''} {keyid}",
                                  hint="`affidavit keys trust-export --out -` lists the keys")
        history = history.revoke(found[0], at=at)
        history.save()
        entry = history.store.keys.get(found[0]) or history.store.log_keys[found[0]]
    assert entry.revoked_at is not None
    return found[0], entry.revoked_at


def _log_public_key(signing: SigningConfig, base_dir: Path, store_root: Path | None) -> PublicKey | None:
    """The transparency log's key: the store's log's own record, else the configured log key's public half."""
    from affidavit.signing.keys import load_public_key_file
    from affidavit.store.tlog_store import LogStore

    if store_root is not None and LogStore.exists(store_root):
        with LogStore.open(store_root) as log:
            return log.meta.public_key
    if isinstance(signing.log_key, str):
        return kms_signer(signing.log_key, signing).public_key
    path = signing.log_key if signing.log_key.is_absolute() else base_dir / signing.log_key
    pub = public_key_path(path)
    return load_public_key_file(pub) if pub.exists() else None


def export_trust(signing: SigningConfig, base_dir: Path, store_root: Path | None, env: Mapping[str, str],
                 prompt: Prompt | None = None, *, comment: str | None = None) -> dict[str, Any]:
    """The trust file for the organisation's auditor: every signing key with its window, the log key, TSA roots."""
    from affidavit.signing.tsa import load_tsa_roots

    hist = history_path(signing, base_dir)
    roots = load_tsa_roots(signing.tsa_roots) if signing.tsa_roots is not None else []
    with history_lock(hist):
        history = record_current(KeyHistory.load(hist), configured_signer(signing, env, prompt).public_key)
        log_key = _log_public_key(signing, base_dir, store_root)
        if log_key is not None and keyid_of(log_key) not in history.store.log_keys:
            history = history.add(log_key, role="log", unbounded_start=True, comment="transparency log key")
        history.save()
    return history.to_trust_file(roots, comment=comment)
