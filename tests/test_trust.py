"""Trust files and the key lifecycle: every rule of issue 3 and every validation error."""

from __future__ import annotations

import base64
import copy
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import affidavit.signing.trust as trust_mod
from affidavit.errors import InputError, SigningKeyError
from affidavit.signing.keys import PublicKey, generate_private_key, keyid_of, public_pem
from affidavit.signing.trust import KeyHistory, TrustedKey, TrustStore, history_path_for, write_atomically

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROT = datetime(2026, 4, 1, tzinfo=UTC)
REV = datetime(2026, 6, 1, tzinfo=UTC)


def _key(algorithm: str = "ecdsa-p256") -> PublicKey:
    return generate_private_key(algorithm).public_key()  # type: ignore[arg-type]


def _pem(key: Any) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _root_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TSA Root")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(T0).not_valid_after(T0 + timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _entry(key: PublicKey, **over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"keyid": keyid_of(key), "public_key": public_pem(key).decode(), "algorithm": "ecdsa-p256",
                             "not_before": "2026-01-01T00:00:00Z", "not_after": None, "revoked_at": None,
                             "comment": "test key"}
    entry.update(over)
    return entry


KEY_A, KEY_B, LOG_KEY = _key(), _key(), _key()
ROOT_PEM = _root_pem()


def valid_trust_file() -> dict[str, Any]:
    return {"format": 1, "comment": "ACME evidence keys",
            "keys": [_entry(KEY_A, not_after="2026-04-01T00:00:00Z"),
                     _entry(KEY_B, not_before="2026-04-01T00:00:00Z", revoked_at="2026-06-01T00:00:00Z")],
            "log_keys": [_entry(LOG_KEY)],
            "tsa_roots": [ROOT_PEM]}


# ---------------------------------------------------------------- the rule


@pytest.fixture
def store() -> TrustStore:
    return TrustStore.from_json(valid_trust_file(), "trust.json")


def test_loads_a_valid_trust_file(store: TrustStore) -> None:
    assert set(store.keys) == {keyid_of(KEY_A), keyid_of(KEY_B)}
    assert set(store.log_keys) == {keyid_of(LOG_KEY)}
    assert store.public_keys()[keyid_of(KEY_A)] == KEY_A
    assert store.log_public_keys() == {keyid_of(LOG_KEY): LOG_KEY}
    assert len(store.tsa_roots) == 1 and store.tsa_roots[0].subject.rfc4514_string() == "CN=TSA Root"
    a = store.key_for(keyid_of(KEY_A))
    assert a is not None and a.not_before == T0 and a.not_after == ROT and a.revoked_at is None
    assert a.comment == "test key" and a.algorithm == "ecdsa-p256"
    assert store.key_for("0" * 64) is None
    assert store.comment == "ACME evidence keys"


def test_round_trip_through_json(store: TrustStore) -> None:
    again = TrustStore.from_json(json.loads(json.dumps(store.to_json())), "again")
    assert again.to_json() == store.to_json()
    assert again.to_json()["keys"][0]["not_after"] == "2026-04-01T00:00:00Z"


def test_no_timestamp_non_revoked_key_passes(store: TrustStore) -> None:
    assert store.check_signature_time(keyid_of(KEY_A), None) is None  # rotated out, not revoked


def test_no_timestamp_revoked_key_fails(store: TrustStore) -> None:
    reason = store.check_signature_time(keyid_of(KEY_B), None)
    assert reason == (f"key {keyid_of(KEY_B)} was revoked at 2026-06-01T00:00:00Z; "
                      "no trusted timestamp proves the signature predates the revocation")


def test_timestamp_before_revocation_passes(store: TrustStore) -> None:
    assert store.check_signature_time(keyid_of(KEY_B), REV - timedelta(seconds=1)) is None


@pytest.mark.parametrize("after", [timedelta(0), timedelta(days=3)])
def test_timestamp_after_revocation_fails(store: TrustStore, after: timedelta) -> None:
    reason = store.check_signature_time(keyid_of(KEY_B), REV + after)
    assert reason is not None
    assert f"after key {keyid_of(KEY_B)} was revoked at 2026-06-01T00:00:00Z" in reason


def test_timestamp_before_window_fails(store: TrustStore) -> None:
    reason = store.check_signature_time(keyid_of(KEY_B), ROT - timedelta(seconds=1))
    assert reason == (f"signed at 2026-03-31T23:59:59Z, before key {keyid_of(KEY_B)}'s validity window starts "
                      "(2026-04-01T00:00:00Z)")


def test_timestamp_after_window_fails_and_just_inside_passes(store: TrustStore) -> None:
    a = keyid_of(KEY_A)
    assert store.check_signature_time(a, ROT - timedelta(seconds=1)) is None
    assert store.check_signature_time(a, T0) is None
    reason = store.check_signature_time(a, ROT)
    assert reason == f"signed at 2026-04-01T00:00:00Z, after key {a}'s validity window ended (2026-04-01T00:00:00Z)"


def test_timestamp_in_another_zone_is_compared_as_utc(store: TrustStore) -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    # 01:30+02:00 is 23:30 UTC the day before the rotation: inside key A's window
    assert store.check_signature_time(keyid_of(KEY_A), datetime(2026, 4, 1, 1, 30, tzinfo=plus2)) is None


def test_unknown_key_fails(store: TrustStore) -> None:
    assert store.check_signature_time("ab" * 32, None) == f"key {'ab' * 32} is not in the trust file"
    assert store.check_log_key_time("ab" * 32, None) == f"log key {'ab' * 32} is not in the trust file"


def test_log_keys_follow_the_same_rule() -> None:
    doc = valid_trust_file()
    doc["log_keys"][0]["revoked_at"] = "2026-02-01T00:00:00Z"
    store = TrustStore.from_json(doc, "t")
    k = keyid_of(LOG_KEY)
    assert store.check_log_key_time(k, datetime(2026, 1, 15, tzinfo=UTC)) is None
    assert "no trusted timestamp" in (store.check_log_key_time(k, None) or "")
    assert "was revoked at" in (store.check_log_key_time(k, datetime(2026, 2, 2, tzinfo=UTC)) or "")


def test_naive_signing_time_is_a_programming_error(store: TrustStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.check_signature_time(keyid_of(KEY_A), datetime(2026, 2, 1))


def test_bare_public_keys_have_no_window() -> None:
    store = TrustStore.from_public_keys([KEY_A], log_keys=[LOG_KEY])
    assert store.check_signature_time(keyid_of(KEY_A), None) is None
    assert store.check_signature_time(keyid_of(KEY_A), datetime(1999, 1, 1, tzinfo=UTC)) is None
    assert store.check_log_key_time(keyid_of(LOG_KEY), None) is None


def test_sigstore_public_key_shape() -> None:
    key = TrustedKey.of(KEY_A, not_before=T0, not_after=REV, revoked_at=ROT)
    sk = key.sigstore_public_key()
    assert sk["keyDetails"] == "PKIX_ECDSA_P256_SHA_256"
    assert serialization.load_der_public_key(base64.b64decode(sk["rawBytes"])) == KEY_A
    assert sk["validFor"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"}  # the earlier end
    ed = TrustedKey.of(_key("ed25519")).sigstore_public_key()
    assert ed["keyDetails"] == "PKIX_ED25519" and "validFor" not in ed


# ---------------------------------------------------------------- validation errors


def _mutate(path: str, value: Any) -> dict[str, Any]:
    """A valid trust file with one field set (value DELETE removes it)."""
    doc = copy.deepcopy(valid_trust_file())
    target: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


DELETE = object()
RSA_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
P384_PEM = _pem(ec.generate_private_key(ec.SECP384R1()).public_key())

INVALID = [
    ("format", DELETE, "format must be the integer 1"),
    ("format", "1", "format must be the integer 1"),
    ("format", True, "format must be the integer 1"),
    ("format", 2, "unsupported trust file format 2; this Affidavit reads format 1"),
    ("extra", 1, "unknown field 'extra'"),
    ("comment", 5, "comment must be a string"),
    ("keys", DELETE, "keys is missing"),
    ("keys", {}, "keys must be a list"),
    ("keys.0", "abc", "keys\\[0\\] must be an object"),
    ("keys.0.keyid", DELETE, "keys\\[0\\].keyid is missing"),
    ("keys.0.public_key", DELETE, "keys\\[0\\].public_key is missing"),
    ("keys.0.algorithm", DELETE, "keys\\[0\\].algorithm is missing"),
    ("keys.0.not_before", DELETE, "keys\\[0\\].not_before is missing"),
    ("keys.0.not_after", DELETE, "keys\\[0\\].not_after is missing"),
    ("keys.1.revoked_at", DELETE, "keys\\[1\\].revoked_at is missing"),
    ("keys.1.revoked-at", "2026-01-01T00:00:00Z", "keys\\[1\\]: unknown field 'revoked-at'"),
    ("keys.0.keyid", "ABC", "keys\\[0\\].keyid must be 64 lowercase hex characters"),
    ("keys.0.keyid", keyid_of(KEY_A).upper(), "keys\\[0\\].keyid must be 64 lowercase hex"),
    ("keys.0.keyid", keyid_of(KEY_B), f"keys\\[0\\].keyid does not match its public_key \\(the key's id is {keyid_of(KEY_A)}\\)"),
    ("keys.0.algorithm", "rsa", "keys\\[0\\].algorithm must be one of ecdsa-p256, ed25519, not 'rsa'"),
    ("keys.0.algorithm", "ed25519", "keys\\[0\\].algorithm is ed25519 but the public key is ecdsa-p256"),
    ("keys.0.public_key", 42, "keys\\[0\\].public_key must be a PEM public key"),
    ("keys.0.public_key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
     "keys\\[0\\].public_key is not a readable PEM public key"),
    ("keys.0.public_key", RSA_PEM, "keys\\[0\\].public_key: unsupported key type"),
    ("keys.0.public_key", P384_PEM, "keys\\[0\\].public_key: unsupported key type"),
    ("keys.0.not_before", 20260101, "keys\\[0\\].not_before must be an ISO 8601 time string or null"),
    ("keys.0.not_before", "last tuesday", "keys\\[0\\].not_before is not an ISO 8601 time: 'last tuesday'"),
    ("keys.0.not_before", "2026-01-01T00:00:00", "keys\\[0\\].not_before has no time zone"),
    ("keys.0.not_after", "2025-12-31T00:00:00Z", "keys\\[0\\].not_after \\(2025-12-31T00:00:00Z\\) must be later than not_before"),
    ("keys.0.not_after", "2026-01-01T00:00:00Z", "keys\\[0\\].not_after .* must be later than not_before"),
    ("keys.1.revoked_at", "2026-03-01T00:00:00Z", "keys\\[1\\].revoked_at \\(2026-03-01T00:00:00Z\\) is before not_before"),
    ("keys.0.comment", ["x"], "keys\\[0\\].comment must be a string or null"),
    ("keys.1", _entry(KEY_A), f"keys\\[1\\]: keyid {keyid_of(KEY_A)} appears twice"),
    ("log_keys", "nope", "log_keys must be a list"),
    ("log_keys.0.keyid", keyid_of(KEY_A), "log_keys\\[0\\].keyid does not match its public_key"),
    ("tsa_roots", ROOT_PEM, "tsa_roots must be a list of PEM certificates"),
    ("tsa_roots.0", "not a cert", "tsa_roots\\[0\\] must be a PEM certificate"),
    ("tsa_roots.0", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     "tsa_roots\\[0\\] is not a readable PEM certificate"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID, ids=[f"{p}={m[:30]}" for p, _, m in INVALID])
def test_invalid_trust_files_are_refused_naming_the_path(path: str, value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TrustStore.from_json(_mutate(path, value), "trust.json")


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InputError, match="trust.json is not a trust file: expected a JSON object"):
        TrustStore.from_json([1, 2], "trust.json")


def test_every_problem_is_reported_at_once() -> None:
    doc = _mutate("keys.0.algorithm", "rsa")
    doc["keys"][1]["not_before"] = "soon"
    doc["tsa_roots"] = [1]
    with pytest.raises(InputError) as exc:
        TrustStore.from_json(doc, "trust.json")
    text = str(exc.value)
    assert "keys[0].algorithm" in text and "keys[1].not_before" in text and "tsa_roots[0]" in text
    assert text.startswith("trust.json is not a valid trust file: ")


def test_log_keys_and_roots_are_optional() -> None:
    doc = valid_trust_file()
    del doc["log_keys"], doc["tsa_roots"], doc["comment"]
    store = TrustStore.from_json(doc, "t")
    assert store.log_keys == {} and store.tsa_roots == ()


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        TrustStore.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        TrustStore.from_file(bad)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError, match="is not valid JSON"):
        TrustStore.from_file(deep)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": 1, "keys": []}))
    with pytest.raises(InputError, match="names no signing key"):
        TrustStore.from_file(empty)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(InputError, match="cannot read trust file"):
        TrustStore.from_file(folder)
    good = tmp_path / "trust.json"
    good.write_text(json.dumps(valid_trust_file()))
    assert len(TrustStore.from_file(good).keys) == 2


def test_oversized_trust_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(valid_trust_file()))
    monkeypatch.setattr(trust_mod, "MAX_TRUST_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(InputError, match="is larger than"):
        TrustStore.from_file(path)
    monkeypatch.setattr(trust_mod, "MAX_TRUST_FILE_BYTES", path.stat().st_size)
    assert TrustStore.from_file(path).keys


# ---------------------------------------------------------------- key history


def test_history_path_beside_the_key(tmp_path: Path) -> None:
    assert history_path_for(tmp_path / "affidavit.key.pem") == tmp_path / "affidavit.keys.json"
    assert history_path_for(tmp_path / "signing.pem") == tmp_path / "signing.keys.json"
    assert history_path_for(tmp_path / "k.key") == tmp_path / "k.keys.json"
    assert history_path_for(tmp_path / "mykey") == tmp_path / "mykey.keys.json"


def test_history_add_save_load(tmp_path: Path) -> None:
    path = tmp_path / "affidavit.keys.json"
    history = KeyHistory.load(path)
    assert history.current() is None and not path.exists()
    history = history.add(KEY_A, at=T0 + timedelta(microseconds=700_000), comment="first key")
    history = history.add(LOG_KEY, role="log", at=T0)
    history.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["affidavit.keys.json"]  # no temporary file left
    again = KeyHistory.load(path)
    current = again.current()
    assert current is not None and current.keyid == keyid_of(KEY_A)
    assert current.not_before == T0  # whole seconds: a TSA stamp in that second must pass
    assert current.comment == "first key"
    log = again.current("log")
    assert log is not None and log.keyid == keyid_of(LOG_KEY)
    assert TrustStore.from_file(path).keys.keys() == {keyid_of(KEY_A)}  # the history is a valid trust file


def test_rotation_keeps_the_old_key_with_its_window(tmp_path: Path) -> None:
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=T0).rotate(KEY_B, at=ROT, comment="quarterly")
    history.save()
    store = TrustStore.from_json(history.to_trust_file(), "t")
    a, b = keyid_of(KEY_A), keyid_of(KEY_B)
    assert store.keys[a].not_after == ROT and store.keys[b].not_before == ROT
    current = history.current()
    assert current is not None and current.keyid == b
    # evidence signed before the rotation still verifies, with or without a timestamp
    assert store.check_signature_time(a, ROT - timedelta(days=1)) is None
    assert store.check_signature_time(a, None) is None
    # the old key after the rotation, the new key before it: outside their windows
    assert "validity window ended" in (store.check_signature_time(a, ROT + timedelta(days=1)) or "")
    assert "validity window starts" in (store.check_signature_time(b, ROT - timedelta(days=1)) or "")
    assert store.check_signature_time(b, ROT) is None


def test_rotation_at_a_fraction_of_a_second_overlaps_by_under_a_second(tmp_path: Path) -> None:
    at = ROT + timedelta(microseconds=250_000)
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=T0).rotate(KEY_B, at=at)
    store = history.store
    assert store.keys[keyid_of(KEY_A)].not_after == ROT + timedelta(seconds=1)
    assert store.keys[keyid_of(KEY_B)].not_before == ROT
    # a TSA stamp of the rotation's second (truncated) is accepted for both keys
    assert store.check_signature_time(keyid_of(KEY_A), ROT) is None
    assert store.check_signature_time(keyid_of(KEY_B), ROT) is None


def test_rotation_in_the_first_second_keeps_a_valid_window(tmp_path: Path) -> None:
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=T0).rotate(KEY_B, at=T0)
    history.save()
    old = KeyHistory.load(history.path).store.keys[keyid_of(KEY_A)]
    assert old.not_after == T0 + timedelta(seconds=1)


def test_a_key_older_than_the_history_keeps_its_past(tmp_path: Path) -> None:
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, unbounded_start=True).rotate(KEY_B, at=ROT)
    history.save()
    store = TrustStore.from_file(history.path)
    a = store.keys[keyid_of(KEY_A)]
    assert a.not_before is None and a.not_after == ROT
    assert store.check_signature_time(a.keyid, datetime(2020, 1, 1, tzinfo=UTC)) is None
    assert "window ended" in (store.check_signature_time(a.keyid, ROT) or "")


def test_rotation_errors(tmp_path: Path) -> None:
    empty = KeyHistory.load(tmp_path / "h.json")
    with pytest.raises(SigningKeyError, match="has no active signing key to rotate"):
        empty.rotate(KEY_B)
    history = empty.add(KEY_A, at=T0)
    with pytest.raises(SigningKeyError, match="already in the key history"):
        history.rotate(KEY_A, at=ROT)
    with pytest.raises(SigningKeyError, match="already in the key history"):
        history.add(KEY_A, role="log")
    with pytest.raises(SigningKeyError, match="has no active log key"):
        history.rotate(LOG_KEY, role="log")
    with pytest.raises(ValueError, match="naive"):
        history.rotate(KEY_B, at=datetime(2026, 4, 1))


def test_revocation(tmp_path: Path) -> None:
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=T0).rotate(KEY_B, at=ROT)
    history = history.revoke(keyid_of(KEY_A), at=REV, comment="laptop stolen")
    history.save()
    store = TrustStore.from_file(history.path)
    a = store.keys[keyid_of(KEY_A)]
    assert a.revoked_at == REV and a.comment == "laptop stolen"
    assert "no trusted timestamp proves" in (store.check_signature_time(a.keyid, None) or "")
    assert store.check_signature_time(a.keyid, ROT - timedelta(days=1)) is None  # timestamped before: stands
    assert store.check_signature_time(keyid_of(KEY_B), None) is None
    current = history.current()
    assert current is not None and current.keyid == keyid_of(KEY_B)


def test_revoking_the_current_key_leaves_none_current(tmp_path: Path) -> None:
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=T0).revoke(keyid_of(KEY_A), at=ROT)
    assert history.current() is None
    with pytest.raises(SigningKeyError, match="no active signing key"):
        history.rotate(KEY_B)


def test_revocation_errors(tmp_path: Path) -> None:
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=ROT).add(LOG_KEY, role="log", at=ROT)
    with pytest.raises(SigningKeyError, match=f"key {'0' * 64} is not in the key history"):
        history.revoke("0" * 64)
    with pytest.raises(SigningKeyError, match="before it was valid"):
        history.revoke(keyid_of(KEY_A), at=T0)
    revoked = history.revoke(keyid_of(KEY_A), at=REV)
    with pytest.raises(SigningKeyError, match="already revoked at 2026-06-01T00:00:00Z"):
        revoked.revoke(keyid_of(KEY_A))
    log_revoked = history.revoke(keyid_of(LOG_KEY), at=REV)
    assert log_revoked.store.log_keys[keyid_of(LOG_KEY)].revoked_at == REV


def test_to_trust_file_for_the_auditor(tmp_path: Path) -> None:
    root = x509.load_pem_x509_certificate(ROOT_PEM.encode())
    history = KeyHistory.load(tmp_path / "h.json").add(KEY_A, at=T0).add(LOG_KEY, role="log", at=T0)
    doc = history.to_trust_file(tsa_roots=[root], comment="ACME, Q1 2026")
    assert doc["format"] == 1 and doc["comment"] == "ACME, Q1 2026"
    store = TrustStore.from_json(json.loads(json.dumps(doc)), "handed-over.json")
    assert store.tsa_roots == (root,)
    assert set(store.keys) == {keyid_of(KEY_A)} and set(store.log_keys) == {keyid_of(LOG_KEY)}


def test_corrupt_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"format": 7, "keys": []}))
    with pytest.raises(InputError, match="unsupported trust file format 7"):
        KeyHistory.load(path)


def test_atomic_write_failure_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SigningKeyError, match="cannot write"):
        write_atomically(blocker / "h.json", b"{}")
    target = tmp_path / "h.json"
    target.write_text("old")
    write_atomically(target, b"new")
    assert target.read_text() == "new"
