"""Trust files and the key lifecycle: which keys an auditor trusts, and when.

A **trust file** (``verify --trust FILE``) is JSON::

    {"format": 1,
     "comment": "optional, free text",
     "keys": [                      # evidence signing keys
       {"keyid": "<lowercase hex SHA-256 of the DER SubjectPublicKeyInfo>",
        "public_key": "-----BEGIN PUBLIC KEY-----\\n...",   # PEM
        "algorithm": "ecdsa-p256" | "ed25519",
        "not_before": "2026-01-01T00:00:00Z" | null,       # null: no lower bound
        "not_after": "2026-07-01T00:00:00Z" | null,        # set when the key is rotated out
        "revoked_at": "2026-03-01T12:00:00Z" | null,       # set when the key is withdrawn
        "comment": "free text" | null}],
     "log_keys": [ ...same shape: transparency-log checkpoint keys... ],   # optional
     "tsa_roots": ["-----BEGIN CERTIFICATE-----\\n...", ...]}             # optional, PEM

Every field of a key entry is required except ``comment``; unknown fields are
errors (a misspelt ``revoked-at`` must not silently trust a revoked key). Times
are ISO 8601 with a zone. The keyid must match the public key, and the algorithm
its type. All problems are reported at once, each naming its path
(``keys[1].not_after``).

The rule (issue 3): a key's window is ``[not_before, not_after)``.

- With a **trusted timestamp** ``t``: the signature fails if ``t >= revoked_at``
  or ``t`` falls outside the window.
- **Without** one: a revoked key's signatures fail, since nothing proves they
  predate the revocation; any other key's pass (evidence signed before a
  rotation still verifies).

A **key history** (:class:`KeyHistory`, kept beside the signing key as e.g.
``affidavit.keys.json``) is the agent's own record of every key it has used,
in the same format; ``to_trust_file()`` is what an organisation hands to its
auditor. Its times are whole seconds: TSA times are, and a key made at
10:00:00.7 must accept a token stamped 10:00:00.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from affidavit.signing import atomic
from affidavit.errors import InputError, SigningKeyError
from affidavit.signing.keys import ALGORITHMS, Algorithm, PublicKey, algorithm_of, keyid_of, public_pem
from affidavit.signing.predicate import utc_iso

if TYPE_CHECKING:
    from cryptography import x509

TRUST_FORMAT = 1
MAX_TRUST_FILE_BYTES = 16 * 1024 * 1024
Role = Literal["signing", "log"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_FIELDS = {"keyid", "public_key", "algorithm", "not_before", "not_after", "revoked_at"}
_OPTIONAL_KEY_FIELDS = {"comment"}
_TOP_FIELDS = {"format", "keys", "log_keys", "tsa_roots", "comment"}
_SIGSTORE_KEY_DETAILS = {"ecdsa-p256": "PKIX_ECDSA_P256_SHA_256", "ed25519": "PKIX_ED25519"}


@dataclass(frozen=True)
class TrustedKey:
    keyid: str
    public_key: PublicKey
    algorithm: Algorithm
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    comment: str | None = None

    @classmethod
    def of(cls, public_key: PublicKey, **kwargs: Any) -> TrustedKey:
        return cls(keyid_of(public_key), public_key, algorithm_of(public_key), **kwargs)

    @property
    def active(self) -> bool:
        """Neither rotated out nor revoked."""
        return self.not_after is None and self.revoked_at is None

    def problem_at(self, signed_at: datetime | None) -> str | None:
        """Why a signature by this key, trusted-timestamped at ``signed_at`` (None: no timestamp), fails."""
        who = f"key {self.keyid}"
        if signed_at is None:
            if self.revoked_at is not None:
                return (f"{who} was revoked at {utc_iso(self.revoked_at)}; "
                        "no trusted timestamp proves the signature predates the revocation")
            return None
        if signed_at.tzinfo is None:
            raise ValueError("naive datetime: signing times must be timezone-aware UTC")
        t = utc_iso(signed_at)
        if self.revoked_at is not None and signed_at >= self.revoked_at:
            return f"signed at {t}, after {who} was revoked at {utc_iso(self.revoked_at)}"
        if self.not_before is not None and signed_at < self.not_before:
            return f"signed at {t}, before {who}'s validity window starts ({utc_iso(self.not_before)})"
        if self.not_after is not None and signed_at >= self.not_after:
            return f"signed at {t}, after {who}'s validity window ended ({utc_iso(self.not_after)})"
        return None

    def to_json(self) -> dict[str, Any]:
        def when(t: datetime | None) -> str | None:
            return None if t is None else utc_iso(t)

        return {"keyid": self.keyid, "public_key": public_pem(self.public_key).decode("ascii"),
                "algorithm": self.algorithm, "not_before": when(self.not_before), "not_after": when(self.not_after),
                "revoked_at": when(self.revoked_at), "comment": self.comment}

    def sigstore_public_key(self) -> dict[str, Any]:
        """The key as a Sigstore ``PublicKey`` message (``trusted_root.json`` tlogs, @sigstore/verify keys)."""
        der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out: dict[str, Any] = {"rawBytes": base64.b64encode(der).decode("ascii"),
                               "keyDetails": _SIGSTORE_KEY_DETAILS[self.algorithm]}
        ends = [t for t in (self.not_after, self.revoked_at) if t is not None]
        valid: dict[str, str] = {}
        if self.not_before is not None:
            valid["start"] = utc_iso(self.not_before)
        if ends:
            valid["end"] = utc_iso(min(ends))
        if valid:
            out["validFor"] = valid
        return out


@dataclass(frozen=True)
class TrustStore:
    """What an auditor trusts: signing keys, log keys and TSA roots, each key with its window."""

    keys: Mapping[str, TrustedKey]
    log_keys: Mapping[str, TrustedKey]
    tsa_roots: tuple[x509.Certificate, ...] = ()
    comment: str | None = None

    @classmethod
    def from_public_keys(cls, keys: Iterable[PublicKey], log_keys: Iterable[PublicKey] = (),
                         tsa_roots: Sequence[x509.Certificate] = ()) -> TrustStore:
        """Keys given bare (``verify --key PEM``): no window, never revoked."""
        signing = {k.keyid: k for k in map(TrustedKey.of, keys)}
        log = {k.keyid: k for k in map(TrustedKey.of, log_keys)}
        return cls(signing, log, tuple(tsa_roots))

    @classmethod
    def from_json(cls, obj: Any, origin: str) -> TrustStore:
        """Validate a parsed trust file; every problem at once in one :class:`InputError`."""
        problems: list[str] = []
        if not isinstance(obj, dict):
            raise InputError(f"{origin} is not a trust file: expected a JSON object")
        fmt = obj.get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise InputError(f"{origin}: format must be the integer {TRUST_FORMAT}")
        if fmt != TRUST_FORMAT:
            raise InputError(f"{origin}: unsupported trust file format {fmt}; this Affidavit reads format {TRUST_FORMAT}",
                             hint="upgrade Affidavit, or ask for a format 1 trust file")
        problems += [f"unknown field {k!r}" for k in sorted(set(obj) - _TOP_FIELDS)]
        if "keys" not in obj:
            problems.append("keys is missing")
        comment = obj.get("comment")
        if comment is not None and not isinstance(comment, str):
            problems.append("comment must be a string")
        keys = _parse_keys(obj.get("keys", []), "keys", problems)
        log_keys = _parse_keys(obj.get("log_keys", []), "log_keys", problems)
        roots = _parse_roots(obj.get("tsa_roots", []), problems)
        if problems:
            raise InputError(f"{origin} is not a valid trust file: " + "; ".join(problems))
        return cls(keys, log_keys, roots, comment)

    @classmethod
    def from_file(cls, path: Path) -> TrustStore:
        """Read an auditor's trust file; it must name at least one signing key."""
        store = cls.from_json(_read_json(path, "trust file"), str(path))
        if not store.keys:
            raise InputError(f"{path} names no signing key", hint="add the organisation's public keys under \"keys\"")
        return store

    def key_for(self, keyid: str) -> TrustedKey | None:
        return self.keys.get(keyid)

    def public_keys(self) -> dict[str, PublicKey]:
        """keyid -> public key, for :func:`affidavit.signing.dsse.verified_keyids`."""
        return {k: v.public_key for k, v in self.keys.items()}

    def log_public_keys(self) -> dict[str, PublicKey]:
        return {k: v.public_key for k, v in self.log_keys.items()}

    def check_signature_time(self, keyid: str, signed_at: datetime | None) -> str | None:
        """None if a signature by ``keyid`` at trusted time ``signed_at`` (None: untimestamped) stands; else why not."""
        key = self.keys.get(keyid)
        if key is None:
            return f"key {keyid} is not in the trust file"
        return key.problem_at(signed_at)

    def check_log_key_time(self, keyid: str, signed_at: datetime | None) -> str | None:
        """The same rule for a transparency-log (checkpoint) key."""
        key = self.log_keys.get(keyid)
        if key is None:
            return f"log key {keyid} is not in the trust file"
        return key.problem_at(signed_at)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": TRUST_FORMAT}
        if self.comment:
            out["comment"] = self.comment
        out["keys"] = [k.to_json() for k in self.keys.values()]
        out["log_keys"] = [k.to_json() for k in self.log_keys.values()]
        out["tsa_roots"] = [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.tsa_roots]
        return out


def _read_json(path: Path, what: str) -> Any:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TRUST_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise InputError(f"{what} {path} is larger than {MAX_TRUST_FILE_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{what} {path} is not valid JSON: {e}") from None


def _time(entry: Mapping[str, Any], field: str, path: str, problems: list[str]) -> datetime | None:
    value = entry.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{path}.{field} must be an ISO 8601 time string or null")
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        problems.append(f"{path}.{field} is not an ISO 8601 time: {value!r}")
        return None
    if t.tzinfo is None:
        problems.append(f"{path}.{field} has no time zone: {value!r} (use e.g. 2026-01-01T00:00:00Z)")
        return None
    return t.astimezone(UTC)


def _parse_key(entry: Any, path: str, problems: list[str]) -> TrustedKey | None:
    if not isinstance(entry, dict):
        problems.append(f"{path} must be an object")
        return None
    before = len(problems)
    problems += [f"{path}.{f} is missing" for f in sorted(_KEY_FIELDS - set(entry))]
    problems += [f"{path}: unknown field {f!r}" for f in sorted(set(entry) - _KEY_FIELDS - _OPTIONAL_KEY_FIELDS)]
    keyid, pem, algorithm, comment = (entry.get(f) for f in ("keyid", "public_key", "algorithm", "comment"))
    if "keyid" in entry and not (isinstance(keyid, str) and _HEX64.match(keyid)):
        problems.append(f"{path}.keyid must be 64 lowercase hex characters")
    if "algorithm" in entry and algorithm not in ALGORITHMS:
        problems.append(f"{path}.algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    if comment is not None and not isinstance(comment, str):
        problems.append(f"{path}.comment must be a string or null")
    public_key: PublicKey | None = None
    if "public_key" in entry:
        public_key = _public_key(pem, f"{path}.public_key", problems)
    nb, na, rv = (_time(entry, f, path, problems) for f in ("not_before", "not_after", "revoked_at"))
    if nb is not None and na is not None and na <= nb:
        problems.append(f"{path}.not_after ({utc_iso(na)}) must be later than not_before ({utc_iso(nb)})")
    if nb is not None and rv is not None and rv < nb:
        problems.append(f"{path}.revoked_at ({utc_iso(rv)}) is before not_before ({utc_iso(nb)})")
    if public_key is not None and isinstance(keyid, str) and _HEX64.match(keyid):
        actual = keyid_of(public_key)
        if keyid != actual:
            problems.append(f"{path}.keyid does not match its public_key (the key's id is {actual})")
        if algorithm in ALGORITHMS and algorithm != algorithm_of(public_key):
            problems.append(f"{path}.algorithm is {algorithm} but the public key is {algorithm_of(public_key)}")
    if len(problems) > before or public_key is None or not isinstance(keyid, str):
        return None
    return TrustedKey(keyid, public_key, algorithm_of(public_key), nb, na, rv, comment)


def _public_key(pem: Any, path: str, problems: list[str]) -> PublicKey | None:
    if not isinstance(pem, str) or "-----BEGIN PUBLIC KEY-----" not in pem:
        problems.append(f"{path} must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
        return None
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        problems.append(f"{path} is not a readable PEM public key")
        return None
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        problems.append(f"{path}: unsupported key type {type(key).__name__}; use ECDSA P-256 or Ed25519")
        return None
    try:
        algorithm_of(key)
    except SigningKeyError as e:
        problems.append(f"{path}: {e.message}")
        return None
    return key


def _parse_keys(items: Any, path: str, problems: list[str]) -> dict[str, TrustedKey]:
    if not isinstance(items, list):
        problems.append(f"{path} must be a list")
        return {}
    out: dict[str, TrustedKey] = {}
    for i, entry in enumerate(items):
        key = _parse_key(entry, f"{path}[{i}]", problems)
        if key is None:
            continue
        if key.keyid in out:
            problems.append(f"{path}[{i}]: keyid {key.keyid} appears twice")
            continue
        out[key.keyid] = key
    return out


def _parse_roots(items: Any, problems: list[str]) -> tuple[x509.Certificate, ...]:
    if not isinstance(items, list):
        problems.append("tsa_roots must be a list of PEM certificates")
        return ()
    from cryptography import x509

    roots: list[x509.Certificate] = []
    for i, pem in enumerate(items):
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
            problems.append(f"tsa_roots[{i}] must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
            continue
        try:
            roots.append(x509.load_pem_x509_certificate(pem.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            problems.append(f"tsa_roots[{i}] is not a readable PEM certificate")
    return tuple(roots)


# ---------------------------------------------------------------- the agent's key history


def history_path_for(key_path: Path) -> Path:
    """``affidavit.key.pem`` -> ``affidavit.keys.json`` beside it."""
    name = key_path.name
    for suffix in (".key.pem", ".pem", ".key"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return key_path.with_name(f"{name}.keys.json")


def _whole_second(t: datetime | None, *, up: bool = False) -> datetime:
    t = datetime.now(UTC) if t is None else t
    if t.tzinfo is None:
        raise ValueError("naive datetime: key lifecycle times must be timezone-aware UTC")
    t = t.astimezone(UTC)
    floor = t.replace(microsecond=0)
    return floor + timedelta(seconds=1) if up and floor != t else floor


def _end_after(end: datetime, not_before: datetime | None) -> datetime:
    """A window closes at least a second after it opened (a rotation in a key's first second)."""
    if not_before is not None and end <= not_before:
        return not_before + timedelta(seconds=1)
    return end


@dataclass(frozen=True)
class KeyHistory:
    """Every key this agent has used, with its window; saved atomically as a trust file without TSA roots."""

    path: Path
    store: TrustStore

    @classmethod
    def load(cls, path: Path) -> KeyHistory:
        """The history at ``path``; an absent file is an empty history."""
        if not path.exists():
            return cls(path, TrustStore({}, {}))
        store = TrustStore.from_json(_read_json(path, "key history"), str(path))
        return cls(path, replace(store, tsa_roots=()))

    def _keys(self, role: Role) -> Mapping[str, TrustedKey]:
        return self.store.keys if role == "signing" else self.store.log_keys

    def _with(self, role: Role, keys: Mapping[str, TrustedKey]) -> KeyHistory:
        store = replace(self.store, keys=keys) if role == "signing" else replace(self.store, log_keys=keys)
        return replace(self, store=store)

    def current(self, role: Role = "signing") -> TrustedKey | None:
        """The key in use: the newest one neither rotated out nor revoked."""
        active = [k for k in self._keys(role).values() if k.active]
        return active[-1] if active else None

    def add(self, public_key: PublicKey, *, role: Role = "signing", at: datetime | None = None,
            comment: str | None = None, unbounded_start: bool = False) -> KeyHistory:
        """Record a new key valid from ``at`` (default now, whole seconds).

        ``unbounded_start`` records a key that signed before the history existed (no
        ``not_before``), so its earlier, timestamped signatures stay valid.
        """
        keys = dict(self._keys(role))
        start = None if unbounded_start else _whole_second(at)
        key = TrustedKey.of(public_key, not_before=start, comment=comment)
        if key.keyid in keys or key.keyid in self._keys("log" if role == "signing" else "signing"):
            raise SigningKeyError(f"key {key.keyid} is already in the key history {self.path}",
                                  hint="a rotation needs a new key")
        keys[key.keyid] = key
        return self._with(role, keys)

    def rotate(self, new_public_key: PublicKey, *, role: Role = "signing", at: datetime | None = None,
               comment: str | None = None) -> KeyHistory:
        """Close the window of every active key of ``role`` at ``at`` and add the new key from then."""
        if not any(v.active for v in self._keys(role).values()):
            raise SigningKeyError(f"the key history {self.path} has no active {role} key to rotate",
                                  hint="generate a key first (`affidavit keys generate`)")
        start, end = _whole_second(at), _whole_second(at, up=True)
        closed = {k: (replace(v, not_after=_end_after(end, v.not_before)) if v.active else v)
                  for k, v in self._keys(role).items()}
        return self._with(role, closed).add(new_public_key, role=role, at=start, comment=comment)

    def revoke(self, keyid: str, *, at: datetime | None = None, comment: str | None = None) -> KeyHistory:
        """Withdraw a key from ``at`` (default now; earlier if it was compromised earlier)."""
        roles: tuple[Role, ...] = ("signing", "log")
        for role in roles:
            keys = dict(self._keys(role))
            key = keys.get(keyid)
            if key is None:
                continue
            if key.revoked_at is not None:
                raise SigningKeyError(f"key {keyid} was already revoked at {utc_iso(key.revoked_at)}")
            when = _whole_second(at)
            if key.not_before is not None and when < key.not_before:
                raise SigningKeyError(f"cannot revoke key {keyid} at {utc_iso(when)}, before it was valid "
                                      f"({utc_iso(key.not_before)})")
            note = comment if comment is not None else key.comment
            keys[keyid] = replace(key, revoked_at=when, comment=note)
            return self._with(role, keys)
        raise SigningKeyError(f"key {keyid} is not in the key history {self.path}")

    def save(self) -> None:
        """Write the history atomically (a reader sees the old file or the new one, never half)."""
        data = (json.dumps(self.store.to_json(), indent=2) + "\n").encode("utf-8")
        write_atomically(self.path, data)

    def to_trust_file(self, tsa_roots: Sequence[x509.Certificate] = (), comment: str | None = None) -> dict[str, Any]:
        """The trust file an organisation hands to its auditor."""
        store = replace(self.store, tsa_roots=tuple(tsa_roots), comment=comment or self.store.comment)
        return store.to_json()


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    try:
        atomic.write_atomically(path, data, mode)
    except OSError as e:
        raise SigningKeyError(f"cannot write {path}: {e.strerror}") from None
