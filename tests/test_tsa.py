"""RFC 3161 timestamps against a real local TSA (`openssl ts -reply` behind HTTP).

Tokens must verify with our code AND with `openssl ts -verify`; every failure a
user or a hostile bundle can cause must be a clean error with its reason.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.errors import InputError
from affidavit.signing.dsse import pae
from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.signing.tsa import (
    TimestampError,
    TsaResponseError,
    TsaUnavailableError,
    check_timestamping_eku,
    load_tsa_roots,
    request_timestamp,
    timestamp_authority_entry,
    tsa_chain_pem,
    verify_timestamp,
)
from conftest import require_tool
from tsa_server import TsaEndpoint, make_tsa_pki, openssl, pki_of, query_for_digest, reply, running_tsa
from tsa_server import other_tsa, tsa  # noqa: F401  (pytest fixtures)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _signature(text: bytes = b'{"_type": "https://in-toto.io/Statement/v1"}') -> bytes:
    signer = LocalSigner(generate_private_key("ecdsa-p256"))
    return signer.sign(pae("application/vnd.in-toto+json", text))


def openssl_ts_verify(folder: Path, token: bytes, data: bytes, root: Path,
                      untrusted: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`openssl ts -verify` over the stored token and the data (the signature bytes)."""
    exe = require_tool("openssl")
    tsr, data_file = folder / "token.tsr", folder / "signature.bin"
    tsr.write_bytes(token)
    data_file.write_bytes(data)
    cmd = [exe, "ts", "-verify", "-in", str(tsr), "-data", str(data_file), "-CAfile", str(root)]
    if untrusted is not None:
        cmd += ["-untrusted", str(untrusted)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------- good tokens


def test_token_verifies_with_our_code_and_with_openssl(tsa: TsaEndpoint, tmp_path: Path) -> None:
    sig = _signature()
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    token = request_timestamp(tsa.url, sig, timeout=10)
    after = datetime.now(UTC) + timedelta(seconds=2)

    info = verify_timestamp(token, sig, [_cert(tsa.root_cert_path)])
    assert before <= info.time <= after
    assert info.time.tzinfo is not None and info.time.utcoffset() == timedelta(0)
    assert info.tsa_subject == "CN=Affidavit Test TSA,O=Affidavit Test"
    assert info.chain == (_cert(tsa.tsa_cert_path), _cert(tsa.root_cert_path))
    assert info.serial > 0
    assert info.to_json()["time"].endswith("Z")

    ok = openssl_ts_verify(tmp_path, token, sig, tsa.root_cert_path)
    assert ok.returncode == 0 and "Verification: OK" in ok.stdout, ok.stderr
    wrong = openssl_ts_verify(tmp_path, token, _signature(), tsa.root_cert_path)
    assert wrong.returncode != 0, "openssl accepted a token for another signature"


def test_each_token_has_its_own_serial(tsa: TsaEndpoint) -> None:
    roots = [_cert(tsa.root_cert_path)]
    a, b = _signature(), _signature()
    first = verify_timestamp(request_timestamp(tsa.url, a), a, roots)
    second = verify_timestamp(request_timestamp(tsa.url, b), b, roots)
    assert first.serial != second.serial


def test_token_from_either_of_several_trusted_roots(tsa: TsaEndpoint, other_tsa: TsaEndpoint) -> None:
    sig = _signature()
    token = request_timestamp(other_tsa.url, sig)
    info = verify_timestamp(token, sig, [_cert(tsa.root_cert_path), _cert(other_tsa.root_cert_path)])
    assert info.chain[-1] == _cert(other_tsa.root_cert_path)
    assert "Untrusted TSA" in info.tsa_subject


def test_token_without_embedded_certificate_needs_it_supplied(tsa: TsaEndpoint, tmp_path: Path) -> None:
    sig = _signature()
    query = openssl("ts", "-query", "-digest", hashlib.sha256(sig).hexdigest(), "-sha256")  # no -cert
    token = reply(pki_of(tsa), query)
    roots = [_cert(tsa.root_cert_path)]
    with pytest.raises(TimestampError, match="carries no TSA certificate"):
        verify_timestamp(token, sig, roots)
    info = verify_timestamp(token, sig, roots, untrusted=[_cert(tsa.tsa_cert_path)])
    assert info.chain[0] == _cert(tsa.tsa_cert_path)

    chain_file = tmp_path / "chain.pem"
    chain_file.write_text(tsa_chain_pem(info.chain[:1]))
    ok = openssl_ts_verify(tmp_path, token, sig, tsa.root_cert_path, untrusted=chain_file)
    assert ok.returncode == 0 and "Verification: OK" in ok.stdout, ok.stderr


# ---------------------------------------------------------------- tokens that must fail


def test_token_for_a_different_signature_fails(tsa: TsaEndpoint) -> None:
    sig = _signature()
    token = request_timestamp(tsa.url, sig)
    with pytest.raises(TimestampError, match="^timestamp token is for a different signature$"):
        verify_timestamp(token, _signature(), [_cert(tsa.root_cert_path)])


def test_token_from_an_untrusted_tsa_fails(tsa: TsaEndpoint, other_tsa: TsaEndpoint, tmp_path: Path) -> None:
    sig = _signature()
    token = request_timestamp(other_tsa.url, sig)
    with pytest.raises(TimestampError, match="TSA certificate 'CN=Untrusted TSA,O=Untrusted' not issued by a trusted root"):
        verify_timestamp(token, sig, [_cert(tsa.root_cert_path)])
    # the TSA's own certificate given as "untrusted" material does not make it trusted
    with pytest.raises(TimestampError, match="not issued by a trusted root"):
        verify_timestamp(token, sig, [_cert(tsa.root_cert_path)], untrusted=[_cert(other_tsa.tsa_cert_path)])
    bad = openssl_ts_verify(tmp_path, token, sig, tsa.root_cert_path)
    assert bad.returncode != 0, "openssl accepted a token from an untrusted TSA"


def test_tampered_token_signature_fails(tsa: TsaEndpoint) -> None:
    sig = _signature()
    token = bytearray(request_timestamp(tsa.url, sig))
    verify_timestamp(bytes(token), sig, [_cert(tsa.root_cert_path)])
    # the TSTInfo's policy OID 1.3.6.1.4.1.57264.99.1 (tsa_server's default_policy) -> ...99.2
    policy = bytes.fromhex("2b0601040183bf306301")
    at = bytes(token).find(policy)
    assert at > 0, "policy OID not found in the token"
    token[at + len(policy) - 1] = 0x02
    with pytest.raises(TimestampError, match="signature does not verify"):
        verify_timestamp(bytes(token), sig, [_cert(tsa.root_cert_path)])


def test_tsa_certificate_expired_at_the_timestamp_time(tmp_path: Path) -> None:
    pki = make_tsa_pki(tmp_path / "pki", "Expired")
    root_key = serialization.load_pem_private_key((pki.folder / "root.key").read_bytes(), password=None)
    tsa_key = serialization.load_pem_private_key((pki.folder / "tsa.key").read_bytes(), password=None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey) and isinstance(tsa_key, ec.EllipticCurvePrivateKey)
    root = _cert(pki.root_cert)
    now = datetime.now(UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Expired TSA")]))
        .issuer_name(root.subject)
        .public_key(tsa_key.public_key())
        .serial_number(77)
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    pki.tsa_cert.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    sig = _signature()
    token = reply(pki, query_for_digest(hashlib.sha256(sig).digest()))
    with pytest.raises(TimestampError, match="'CN=Expired TSA' was not valid at the timestamp's time"):
        verify_timestamp(token, sig, [root])


def _cert_with(eku: x509.ExtendedKeyUsage | None, critical: bool) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some TSA")])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    if eku is not None:
        b = b.add_extension(eku, critical=critical)
    return b.sign(key, hashes.SHA256())


def test_timestamping_eku_rules() -> None:
    check_timestamping_eku(_cert_with(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True))
    with pytest.raises(TimestampError, match="has no extended key usage"):
        check_timestamping_eku(_cert_with(None, True))
    with pytest.raises(TimestampError, match="lacks the timeStamping extended key usage"):
        check_timestamping_eku(_cert_with(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), True))
    with pytest.raises(TimestampError, match="not critical"):
        check_timestamping_eku(_cert_with(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), False))


@pytest.mark.parametrize(("token", "reason"), [
    (b"", "not a DER RFC 3161 TimeStampResp"),
    (b"<html>hello</html>", "not a DER RFC 3161 TimeStampResp"),
    (bytes.fromhex("30053003020102"), "refused the request \\(status rejection\\)"),
    (bytes.fromhex("300530030201ff"), "not a DER RFC 3161 TimeStampResp|refused"),
    (b"\x30" * (300 * 1024), "larger than"),
])
def test_unreadable_tokens_fail_cleanly(tsa: TsaEndpoint, token: bytes, reason: str) -> None:
    with pytest.raises(TimestampError, match=reason):
        verify_timestamp(token, b"sig", [_cert(tsa.root_cert_path)])


def test_truncated_token_fails_cleanly(tsa: TsaEndpoint) -> None:
    sig = _signature()
    token = request_timestamp(tsa.url, sig)
    for cut in (5, len(token) // 2, len(token) - 1):
        with pytest.raises(TimestampError):
            verify_timestamp(token[:cut], sig, [_cert(tsa.root_cert_path)])


def test_no_roots_is_an_error(tsa: TsaEndpoint) -> None:
    sig = _signature()
    with pytest.raises(TimestampError, match="no trusted TSA roots"):
        verify_timestamp(request_timestamp(tsa.url, sig), sig, [])


FUZZ_SIG = b"fuzzed signature bytes"


@pytest.fixture(scope="session")
def fuzz_token(tsa: TsaEndpoint) -> bytes:
    return request_timestamp(tsa.url, FUZZ_SIG)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_tokens_never_crash(tsa: TsaEndpoint, fuzz_token: bytes, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(fuzz_token) - 1))
    new = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(fuzz_token)))
    mutated = (fuzz_token[:pos] + bytes([new]) + fuzz_token[pos + 1:])[:cut]
    roots = [_cert(tsa.root_cert_path)]
    try:
        info = verify_timestamp(mutated, FUZZ_SIG, roots)
    except TimestampError:
        return
    # a mutation may only pass where it leaves the signed TSTInfo alone: the attested time cannot move
    assert info.time == verify_timestamp(fuzz_token, FUZZ_SIG, roots).time


# ---------------------------------------------------------------- the TSA misbehaving


def test_tsa_down_names_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/tsa"
    with pytest.raises(TsaUnavailableError, match=f"cannot reach timestamp authority {url}"):
        request_timestamp(url, b"sig", timeout=2)


@pytest.mark.parametrize(("fault", "error", "reason"), [
    ("500", TsaUnavailableError, "answered HTTP 500"),
    ("404", TsaResponseError, "answered HTTP 404"),
    ("garbage", TsaResponseError, "not a TimeStampResp"),
    ("huge", TsaResponseError, "sent more than"),
    ("rejection", TsaResponseError, "refused the request \\(status rejection\\)"),
    ("wrong-nonce", TsaResponseError, "another nonce than our request"),
    ("wrong-imprint", TsaResponseError, "timestamped other data than the signature"),
])
def test_tsa_faults_are_clean_errors_naming_the_url(
    tsa: TsaEndpoint, fault: str, error: type[Exception], reason: str
) -> None:
    url = f"{tsa.url}fault/{fault}"
    with pytest.raises(error, match=reason) as exc:
        request_timestamp(url, b"sig", timeout=10)
    assert url in str(exc.value)


def test_tsa_timeout(tsa: TsaEndpoint) -> None:
    url = f"{tsa.url}fault/slow"
    with pytest.raises(TsaUnavailableError, match=f"{url} did not answer within 0.3 s"):
        request_timestamp(url, b"sig", timeout=0.3)


def test_empty_signature_is_refused(tsa: TsaEndpoint) -> None:
    with pytest.raises(ValueError, match="empty signature"):
        request_timestamp(tsa.url, b"")


def test_a_second_tsa_runs_side_by_side(tmp_path: Path) -> None:
    with running_tsa(tmp_path / "x", "Side") as ep:
        sig = _signature()
        info = verify_timestamp(request_timestamp(ep.url, sig), sig, [_cert(ep.root_cert_path)])
        assert info.tsa_subject == "CN=Side TSA,O=Side"


# ---------------------------------------------------------------- trust material


def test_timestamp_authority_entry_for_trusted_root(tsa: TsaEndpoint) -> None:
    chain = [_cert(tsa.tsa_cert_path), _cert(tsa.root_cert_path)]
    entry = timestamp_authority_entry(chain, tsa.url)
    assert entry["subject"] == {"organization": "Affidavit Test", "commonName": "Affidavit Test TSA"}
    assert entry["uri"] == tsa.url
    raw = [base64.b64decode(c["rawBytes"]) for c in entry["certChain"]["certificates"]]
    assert [x509.load_der_x509_certificate(d) for d in raw] == chain
    assert entry["validFor"]["start"] == chain[0].not_valid_before_utc.isoformat().replace("+00:00", "Z")
    with pytest.raises(ValueError, match="not issued by the next certificate"):
        timestamp_authority_entry(list(reversed(chain)), tsa.url)
    with pytest.raises(ValueError, match="at least its certificate"):
        timestamp_authority_entry([], tsa.url)


def test_load_tsa_roots(tsa: TsaEndpoint, other_tsa: TsaEndpoint, tmp_path: Path) -> None:
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(tsa.root_cert_path.read_bytes() + other_tsa.root_cert_path.read_bytes())
    assert load_tsa_roots(bundle) == [_cert(tsa.root_cert_path), _cert(other_tsa.root_cert_path)]
    assert tsa_chain_pem(load_tsa_roots(bundle)).encode() == bundle.read_bytes()

    with pytest.raises(InputError, match="cannot read TSA roots"):
        load_tsa_roots(tmp_path / "missing.pem")
    not_pem = tmp_path / "key.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(InputError, match="holds no PEM certificate"):
        load_tsa_roots(not_pem)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(InputError, match="not a valid PEM certificate bundle"):
        load_tsa_roots(broken)
