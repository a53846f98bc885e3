"""Redaction: every default rule, streaming across chunk boundaries, documents, and no leaks."""

from __future__ import annotations

import copy
import gc
import io
import logging
import re
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.collectors.base import Redaction
from affidavit.collectors.redact import SECRET_FIELD_VALUE, Redactor, is_secret_key
from affidavit.collectors.redact_rules import DEFAULT_RULES, Rule, rule_prefilter, rule_width

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GH_PAT = "github_pat_11ABCDEFG0123456789abc_" + "x" * 59
GLPAT = "glpat-Zx9yW8vU7tS6rQ5pO4nM"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"[:35]
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# Building a Redactor compiles its Hyperscan databases (tens of ms): share these.
REDACTOR = Redactor()
FULL_SCAN = Redactor(prefilter=False)

# (text with the secret, the secret, expected output, rule)
CASES: list[tuple[str, str, str, str]] = [
    (f"key id {AWS_ID} here", AWS_ID, "key id [REDACTED:aws-access-key-id] here", "aws-access-key-id"),
    ("ASIAY34FZKBOKMUTVV7A,", "ASIAY34FZKBOKMUTVV7A", "[REDACTED:aws-access-key-id],", "aws-access-key-id"),
    (
        f"aws_secret_access_key = {AWS_SECRET}\n",
        AWS_SECRET,
        "aws_secret_access_key = [REDACTED:aws-secret-access-key]\n",
        "aws-secret-access-key",
    ),
    (
        f'{{"SecretAccessKey": "{AWS_SECRET}"}}',
        AWS_SECRET,
        '{"SecretAccessKey": "[REDACTED:aws-secret-access-key]"}',
        "aws-secret-access-key",
    ),
    (f"token {GHP}.", GHP, "token [REDACTED:github-token].", "github-token"),
    *[
        (f"t={p}_{'z' * 36} ", f"{p}_{'z' * 36}", "t=[REDACTED:github-token] ", "github-token")
        for p in ("gho", "ghu", "ghs", "ghr")
    ],
    (f"GH={GH_PAT}\n", GH_PAT, "GH=[REDACTED:github-token]\n", "github-token"),
    (f"gitlab {GLPAT}", GLPAT, "gitlab [REDACTED:gitlab-token]", "gitlab-token"),
    (f"slack: {SLACK} ok", SLACK, "slack: [REDACTED:slack-token] ok", "slack-token"),
    (f"maps key={GOOGLE}&x=1", GOOGLE, "maps key=[REDACTED:google-api-key]&x=1", "google-api-key"),
    (f"stripe {STRIPE}", STRIPE, "stripe [REDACTED:stripe-key]", "stripe-key"),
    ("rk_live_" + "a" * 24, "rk_live_" + "a" * 24, "[REDACTED:stripe-key]", "stripe-key"),
    (f"Authorization: Bearer {JWT}\n", JWT, "Authorization: Bearer [REDACTED:jwt]\n", "jwt"),
    (
        "db: postgres://admin:s3cr3t-pw@db.example:5432/app",
        "s3cr3t-pw",
        "db: postgres://admin:[REDACTED:url-password]@db.example:5432/app",
        "url-password",
    ),
    (
        "https://oauth2:tok3n@gitlab.example/x.git",
        "tok3n",
        "https://oauth2:[REDACTED:url-password]@gitlab.example/x.git",
        "url-password",
    ),
    ("password=hunter2hunter2", "hunter2hunter2", "password=[REDACTED:secret-assignment]", "secret-assignment"),
    ("DB_PASSWD: 'Tr0ub4dor&3'", "Tr0ub4dor&3", "DB_PASSWD: '[REDACTED:secret-assignment]'", "secret-assignment"),
    (
        'password: "correct horse battery staple"',
        "correct horse battery staple",
        'password: "[REDACTED:secret-assignment]"',
        "secret-assignment",
    ),
    ('{"client_secret":"abcd1234efgh"}', "abcd1234efgh", '{"client_secret":"[REDACTED:secret-assignment]"}', "secret-assignment"),
    ("API-KEY = zzzzzzzzzz", "zzzzzzzzzz", "API-KEY = [REDACTED:secret-assignment]", "secret-assignment"),
    ("apikey:12345678", "12345678", "apikey:[REDACTED:secret-assignment]", "secret-assignment"),
    ("ACCESS_TOKEN=aaaabbbbcccc", "aaaabbbbcccc", "ACCESS_TOKEN=[REDACTED:secret-assignment]", "secret-assignment"),
    ("auth-token: q1w2e3r4t5", "q1w2e3r4t5", "auth-token: [REDACTED:secret-assignment]", "secret-assignment"),
    ("my_secret=topsecretvalue", "topsecretvalue", "my_secret=[REDACTED:secret-assignment]", "secret-assignment"),
]


@pytest.mark.parametrize(("text", "secret", "expected", "rule"), CASES)
def test_each_rule_replaces_exactly_the_secret(text: str, secret: str, expected: str, rule: str) -> None:
    out, found = REDACTOR.redact_bytes(text.encode())
    assert out.decode() == expected
    assert secret.encode() not in out
    assert found == [Redaction(path="line 1", rule=rule)]


@pytest.mark.parametrize(
    "text",
    [
        "password: short",  # under 8 characters
        "password: ${DB_PASSWORD}",  # a reference, not a secret
        "the password is stored in the vault",
        "max_tokens: 123456789",
        "AKIA1234",  # too short
        "AKIAIOSFODNN7EXAMPLEX",  # too long: not a key id
        "https://user@example.org/repo.git",
        "http://example.org:8080/path@thing",
        "ghp_tooshort",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
        "eyJhbGciOiJIUzI1NiJ9 is only a header",
        "secretary = JaneSmithJones",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    out, found = REDACTOR.redact_bytes(text.encode())
    assert out == text.encode()
    assert found == []


def _private_keys() -> list[tuple[str, bytes]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    enc = serialization.BestAvailableEncryption(b"passphrase")
    none = serialization.NoEncryption()
    fmt = serialization.PrivateFormat
    pem = serialization.Encoding.PEM
    return [
        ("RSA", rsa_key.private_bytes(pem, fmt.TraditionalOpenSSL, none)),
        ("EC", ec_key.private_bytes(pem, fmt.TraditionalOpenSSL, none)),
        ("PKCS8", ec_key.private_bytes(pem, fmt.PKCS8, none)),
        ("ENCRYPTED", ec_key.private_bytes(pem, fmt.PKCS8, enc)),
        ("RSA-ENCRYPTED-LEGACY", rsa_key.private_bytes(pem, fmt.TraditionalOpenSSL, enc)),
        ("OPENSSH", ed_key.private_bytes(pem, fmt.OpenSSH, none)),
        ("OPENSSH-RSA", rsa_key.private_bytes(pem, fmt.OpenSSH, none)),
    ]


def test_private_key_blocks_are_replaced_whole() -> None:
    for label, key in _private_keys():
        text = b"config:\n  key: |\n" + key + b"after the key\n"
        out, found = REDACTOR.redact_bytes(text)
        assert out == b"config:\n  key: |\n[REDACTED:private-key]\nafter the key\n", label
        assert found == [Redaction(path="line 3", rule="private-key")], label
        for body_line in key.splitlines()[1:-1]:
            if len(body_line) > 8:
                assert body_line not in out, label


def test_a_truncated_private_key_still_loses_its_body() -> None:
    key = _private_keys()[0][1]
    truncated = key[: len(key) // 2]
    out, found = REDACTOR.redact_bytes(b"leaked:\n" + truncated)
    assert [r.rule for r in found] == ["private-key"]
    for body_line in truncated.splitlines()[1:]:
        assert body_line not in out


def test_line_numbers_count_from_one_where_each_match_starts() -> None:
    text = f"a\nb {AWS_ID}\n\n\nx password={'p' * 12}\n{GHP} {GLPAT}\n".encode()
    _, found = REDACTOR.redact_bytes(text)
    assert found == [
        Redaction("line 2", "aws-access-key-id"),
        Redaction("line 5", "secret-assignment"),
        Redaction("line 6", "github-token"),
        Redaction("line 6", "gitlab-token"),
    ]


# -- streams ----------------------------------------------------------------------


def _read_all(reader: io.BufferedReader, size: int) -> bytes:
    out = bytearray()
    while chunk := reader.read(size):
        out += chunk
    return bytes(out)


SECRETS = [AWS_ID, GHP, GLPAT, SLACK, GOOGLE, STRIPE, JWT, GH_PAT]


def _dense_text(n: int) -> tuple[bytes, list[str]]:
    """About n bytes of text with a secret every few hundred bytes at shifting offsets."""
    parts: list[str] = []
    planted: list[str] = []
    size = 0
    i = 0
    while size < n:
        filler = "lorem ipsum dolor sit amet\n"[: (i * 7) % 27] + ("x" * ((i * 13) % 301))
        secret = SECRETS[i % len(SECRETS)]
        piece = f"{filler} {secret} password={'q' * (8 + i % 5)}{i}\n"
        planted.append(secret)
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts).encode(), planted


@pytest.mark.parametrize("chunk_size", [1000, 4096, 65536, 1 << 20])
def test_stream_equals_whole_buffer_redaction_at_any_chunk_size(chunk_size: int) -> None:
    data, _ = _dense_text(300_000)
    expected, expected_found = REDACTOR.redact_bytes(data)
    assert len(expected_found) > 1000
    with Redactor(chunk_size=chunk_size).redact_stream(io.BytesIO(data)) as reader:
        out = _read_all(reader, 777)
        assert out == expected
        assert reader.redactions == expected_found
    for secret in SECRETS:
        assert secret.encode() not in out


def test_a_secret_split_across_the_chunk_boundary_is_caught() -> None:
    chunk = 1 << 16
    redactor = Redactor(chunk_size=chunk)
    for split in range(1, len(GHP)):
        data = b"y" * (chunk - split) + b" " + GHP.encode() + b"\nnext"
        reader = redactor.redact_stream(io.BytesIO(data))
        out = reader.read()
        assert out == b"y" * (chunk - split) + b" [REDACTED:github-token]\nnext"
        assert reader.redactions == [Redaction("line 1", "github-token")]


class _Trickle(io.RawIOBase):
    """A source that answers reads with a few bytes at a time, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_short_reads_from_the_source_give_the_same_result() -> None:
    data, _ = _dense_text(60_000)
    expected, expected_found = REDACTOR.redact_bytes(data)
    reader = Redactor(chunk_size=8192).redact_stream(_Trickle(data, 997))  # type: ignore[arg-type]
    assert reader.read() == expected
    assert reader.redactions == expected_found


_SMALL_RULES = (
    Rule("tok", re.compile(rb"(?<![A-Z])TOK[0-9]{4,8}")),
    Rule("kv", re.compile(rb"(?i:key)=([a-z]{3,6})"), 1),
    Rule("digits", re.compile(rb"[0-9]{3}-[0-9]{4}")),  # no literal start, but a selective prefilter
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(["TOK1234", "TOK12345678", "XTOK99999", "key=abc", "KEY=abcdefgh", "555-1234", "\n", " "]),
            st.text(alphabet="XTOKkey=abc0123456789-\n ", max_size=12),
        ),
        max_size=60,
    ),
    chunk_size=st.integers(min_value=1, max_value=64),
    step=st.integers(min_value=1, max_value=50),
    prefilter=st.booleans(),
)
def test_streaming_matches_whole_buffer_for_random_input(
    pieces: list[str], chunk_size: int, step: int, prefilter: bool
) -> None:
    data = "".join(pieces).encode()
    redactor = Redactor(_SMALL_RULES, chunk_size=chunk_size, prefilter=prefilter)
    assert redactor.prefiltered is prefilter
    # the oracle: one full scan of the whole buffer
    expected, expected_found = Redactor(_SMALL_RULES, prefilter=False).redact_bytes(data)
    reader = redactor.redact_stream(_Trickle(data, step))  # type: ignore[arg-type]
    assert reader.read() == expected
    assert reader.redactions == expected_found


def test_look_behind_context_survives_every_chunk_boundary() -> None:
    data = b"aXTOK1234 TOK5678\nXTOK9999 key=abc XTOK1111TOK2222"
    expected, expected_found = Redactor(_SMALL_RULES).redact_bytes(data)
    assert expected == b"aXTOK1234 [REDACTED:tok]\nXTOK9999 key=[REDACTED:kv] XTOK1111[REDACTED:tok]"
    for chunk_size in range(1, len(data) + 1):
        redactor = Redactor(_SMALL_RULES, chunk_size=chunk_size)
        for step in (1, 2, 3, 7):
            reader = redactor.redact_stream(_Trickle(data, step))  # type: ignore[arg-type]
            assert reader.read() == expected, (chunk_size, step)
            assert reader.redactions == expected_found


_FRAGMENTS = [
    AWS_ID, GHP, GLPAT, SLACK, GOOGLE, STRIPE, JWT, "password=", "secret: ", "://u:", "pw@", "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----", "AKIA", "ghp_", "eyJ", "xox", "api_key", "\n", " ", "'", '"', "AWS_SECRET_ACCESS_KEY=",
    AWS_SECRET, "sk_live_", "glpat-", "://", ":", "@", "-----BEGIN ", " PRIVATE KEY-----", " BLOCK", "client-Secret",
    "\t", "=", "${X}", "x" * 40, "aws_secret_key:\t'", "https://user:pa@ss@host", "ghs_", "github_pat_", "AIza", "a.b.",
]


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=10)), max_size=40))
def test_fast_candidate_search_agrees_with_a_full_scan(pieces: list[str]) -> None:
    data = "".join(pieces).encode("utf-8", "surrogatepass")
    assert REDACTOR.prefiltered
    assert not FULL_SCAN.prefiltered
    assert REDACTOR.redact_bytes(data) == FULL_SCAN.redact_bytes(data)


@pytest.mark.parametrize(
    "middle",
    [rb"\s", rb"\S", rb"\d", rb"\D", rb"\w", rb"\W", rb".", rb"(?s:.)", rb"[^a-c\d_]", rb"(?i:[a-cX])", rb"(?i:[^k])",
     rb"(?i:q)", rb"[^q]", rb"[\x00-\x1f\x7f-\xff]", rb"(?:a|\n|\xe9)", rb"\x00?"],
)
def test_prefilter_byte_classes_match_what_python_matches(middle: bytes) -> None:
    # a selective rule (literal ends) around the class under test
    rule = Rule("cls", re.compile(rb"ZQ" + middle + rb"QZ"))
    fast, slow = Redactor([rule]), Redactor([rule], prefilter=False)
    assert fast.prefiltered
    for b in range(256):
        data = b"..ZQ" + bytes([b]) + b"QZ.."
        assert fast.redact_bytes(data) == slow.redact_bytes(data), (middle, b)


def test_a_match_on_the_last_byte_of_the_input_is_found() -> None:
    # The Vectorscan build in the hyperscan wheel misses this match (it ends on the
    # last byte of the scanned buffer) unless the scanner pads what it scans.
    rules = (Rule("z", re.compile(rb"zzzz[0-9]{0,20}q")), Rule("b", re.compile(rb"[^0-9]{1,2}b:")))
    fast, full = Redactor(rules), Redactor(rules, prefilter=False)
    assert fast.prefiltered
    for n in range(1, 40):
        data = b"x" * n + b"Bb:"
        expected = (b"x" * (n - 1) + b"[REDACTED:b]", [Redaction("line 1", "b")])
        assert full.redact_bytes(data) == expected
        assert fast.redact_bytes(data) == expected, n


def test_a_rule_without_a_selective_prefilter_falls_back_to_the_full_scan(caplog: pytest.LogCaptureFixture) -> None:
    # [a-z]{3} matches nearly everywhere in text; the look-behind makes the rule never match
    never = Rule("never", re.compile(rb"[a-z]{3}(?<=[0-9]{3})"))
    assert rule_prefilter(never) is None
    log = logging.getLogger("affidavit.collectors.redact_scan")
    log.addHandler(caplog.handler)  # even when the CLI's logging setup stopped propagation
    try:
        slow = Redactor((*DEFAULT_RULES, never))
    finally:
        log.removeHandler(caplog.handler)
    assert not slow.prefiltered
    assert "redaction rules without a fast prefilter (never)" in caplog.text
    data, _ = _dense_text(20_000)
    assert slow.redact_bytes(data) == REDACTOR.redact_bytes(data)
    reader = Redactor((*DEFAULT_RULES, never), chunk_size=4096).redact_stream(io.BytesIO(data))
    assert (reader.read(), reader.redactions) == REDACTOR.redact_bytes(data)


def test_a_prefilter_hyperscan_refuses_means_the_full_scan(caplog: pytest.LogCaptureFixture) -> None:
    # a class that matches no byte: Python accepts it, Hyperscan refuses "can never match"
    impossible = Rule("impossible", re.compile(rb"abc[^\x00-\xff]"))
    assert rule_prefilter(impossible) is not None
    log = logging.getLogger("affidavit.collectors.redact_scan")
    log.addHandler(caplog.handler)
    try:
        redactor = Redactor((*DEFAULT_RULES, impossible))
    finally:
        log.removeHandler(caplog.handler)
    assert not redactor.prefiltered
    assert "can never match" in caplog.text
    data, _ = _dense_text(5_000)
    assert redactor.redact_bytes(data + b"abcd") == REDACTOR.redact_bytes(data + b"abcd")


def test_locale_patterns_get_no_prefilter() -> None:
    assert rule_prefilter(Rule("loc", re.compile(rb"(?L)secret[0-9]{4}"))) is None
    assert rule_prefilter(Rule("ok", re.compile(rb"secret[0-9]{4}"))) is not None


_LINE = b"some log line " + b"with plain words " * 240 + b"and a token " + GHP.encode() + b"\n"


class _Endless(io.RawIOBase):
    """``lines`` lines of generated text, each with one secret, produced on demand."""

    def __init__(self, lines: int) -> None:
        self._left = lines * len(_LINE)
        self._block = _LINE * 64
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._left, len(self._block) - self._pos)
        buffer[:n] = self._block[self._pos : self._pos + n]
        self._pos = (self._pos + n) % len(self._block)
        self._left -= n
        return n


def test_streaming_memory_stays_bounded() -> None:
    lines = (24 << 20) // len(_LINE)
    chunk = 256 << 10
    tracemalloc.start()
    try:
        reader = Redactor(chunk_size=chunk).redact_stream(io.BufferedReader(_Endless(lines), 1 << 16))
        n = 0
        buf = bytearray(1 << 16)
        while got := reader.readinto(buf):
            n += got
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == lines * (len(_LINE) - len(GHP) + len("[REDACTED:github-token]"))
    assert reader.redactions[-1] == Redaction(f"line {lines}", "github-token")
    assert len(reader.redactions) == lines
    # a few chunks' worth (plus the list of redactions), nowhere near the 24 MiB streamed
    assert peak < 8 * chunk + (2 << 20), peak


def test_reader_file_protocol() -> None:
    source = io.BytesIO(f"a\n{GHP}\n".encode())
    with REDACTOR.redact_stream(source) as reader:
        assert reader.readable()
        assert reader.read(2) == b"a\n"
        buf = bytearray(100)
        n = reader.readinto(buf)
        assert bytes(buf[:n]) == b"[REDACTED:github-token]\n"
        assert reader.read() == b""
        assert reader.redactions == [Redaction("line 2", "github-token")]
    assert source.closed
    with pytest.raises(ValueError):
        reader.read()


def _redacting_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "affidavit-redact"]


class _Chunks(io.RawIOBase):
    """``count`` reads of ``size`` bytes each, then an OSError if ``fail``, else EOF."""

    def __init__(self, count: int, size: int, fail: bool) -> None:
        self.left = count
        self.size = size
        self.fail = fail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left == 0:
            if self.fail:
                raise OSError("disk error")
            return 0
        self.left -= 1
        n = min(len(buffer), self.size)
        buffer[:n] = (b"line with " + GHP.encode() + b"\n" + b"z" * self.size)[:n]
        return n


def test_small_artefacts_are_redacted_without_a_thread() -> None:
    before = _redacting_threads()
    reader = REDACTOR.redact_stream(io.BytesIO(f"a {GHP}\n".encode() * 100))
    assert reader.read().count(b"[REDACTED:github-token]") == 100
    assert _redacting_threads() == before


def test_a_source_error_after_some_chunks_reaches_the_reader() -> None:
    reader = Redactor(chunk_size=4096).redact_stream(_Chunks(count=10, size=4096, fail=True))  # type: ignore[arg-type]
    got = reader.read(4096)  # the first chunks are fine
    assert b"[REDACTED:github-token]" in got and GHP.encode() not in got
    with pytest.raises(OSError, match="disk error"):
        reader.read()
    with pytest.raises(OSError, match="disk error"):  # and it stays failed
        reader.read()
    reader.close()
    assert _redacting_threads() == []


def test_closing_or_dropping_a_reader_mid_stream_stops_its_thread() -> None:
    source = _Chunks(count=1000, size=4096, fail=False)
    reader = Redactor(chunk_size=4096).redact_stream(source)  # type: ignore[arg-type]
    reader.read(10_000)
    assert len(_redacting_threads()) == 1
    reader.close()
    assert _redacting_threads() == []
    assert source.closed
    dropped = Redactor(chunk_size=4096).redact_stream(_Chunks(count=1000, size=4096, fail=False))  # type: ignore[arg-type]
    dropped.read(10_000)
    assert len(_redacting_threads()) == 1
    del dropped
    gc.collect()
    assert _redacting_threads() == []


def test_empty_stream() -> None:
    reader = REDACTOR.redact_stream(io.BytesIO(b""))
    assert reader.read() == b""
    assert reader.redactions == []


# -- documents ----------------------------------------------------------------


def test_redact_document_walks_and_does_not_mutate() -> None:
    doc: dict[str, Any] = {
        "name": "run 1",
        "params": {
            "db_url": "postgres://app:pa55word@db/app",
            "max_tokens": 512,
            "password": "hunter2",
            "Api-Key": {"nested": True},
            "token": None,
            "a/b~c": f"x {GHP}",
        },
        "tags": [f"k {AWS_ID}", 3, 1.5, None, True],
        "credentials": ["one", "two"],
        "pair": ("plain", f"{STRIPE}"),
    }
    before = copy.deepcopy(doc)
    out, found = REDACTOR.redact_document(doc)
    assert doc == before
    assert out == {
        "name": "run 1",
        "params": {
            "db_url": "postgres://app:[REDACTED:url-password]@db/app",
            "max_tokens": 512,
            "password": SECRET_FIELD_VALUE,
            "Api-Key": SECRET_FIELD_VALUE,
            "token": None,
            "a/b~c": "x [REDACTED:github-token]",
        },
        "tags": ["k [REDACTED:aws-access-key-id]", 3, 1.5, None, True],
        "credentials": SECRET_FIELD_VALUE,
        "pair": ["plain", "[REDACTED:stripe-key]"],
    }
    assert found == [
        Redaction("/params/db_url", "url-password"),
        Redaction("/params/password", "secret-field"),
        Redaction("/params/Api-Key", "secret-field"),
        Redaction("/params/a~1b~0c", "github-token"),
        Redaction("/tags/0", "aws-access-key-id"),
        Redaction("/credentials", "secret-field"),
        Redaction("/pair/1", "stripe-key"),
    ]


def test_redact_document_top_level_string_and_scalars() -> None:
    assert REDACTOR.redact_document(f"t {GHP}") == ("t [REDACTED:github-token]", [Redaction("", "github-token")])
    assert REDACTOR.redact_document(42) == (42, [])


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True), ("DB-Password", True), ("passwd", True), ("secret", True), ("client_secret", True),
        ("githubToken", True), ("api_key", True), ("apikey", True), ("X-Api-Key", True), ("XApiKey", True),
        ("Authorization", True), ("aws_access_key", True), ("private_key", True), ("credentials", True),
        ("SECRET", True), ("max_tokens", False), ("tokenizer", False), ("secret_name", False), ("token_count", False),
        ("private_key_path", False), ("owner", False), ("description", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


@pytest.fixture
def redact_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the module's log even when the CLI's logging setup stopped propagation."""
    log = logging.getLogger("affidavit.collectors.redact")
    level = log.level
    log.addHandler(caplog.handler)
    log.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        log.removeHandler(caplog.handler)
        log.setLevel(level)


def test_secret_never_appears_in_redactions_logs_or_errors(redact_log: pytest.LogCaptureFixture) -> None:
    caplog = redact_log
    secrets = [AWS_ID, AWS_SECRET, GHP, JWT, "hunter2hunter2", "s3cr3t-pw"]
    text = (
        f"{AWS_ID}\naws_secret_access_key={AWS_SECRET}\n{GHP}\n{JWT}\npassword=hunter2hunter2\n"
        "postgres://u:s3cr3t-pw@h/db\n"
    )
    redactor = Redactor(chunk_size=64)
    _, found_bytes = redactor.redact_bytes(text.encode())
    reader = redactor.redact_stream(io.BytesIO(text.encode()))
    streamed = reader.read()
    doc_out, found_doc = redactor.redact_document({"notes": text, "password": "hunter2hunter2"})
    # a source that fails after yielding a secret
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError("disk error")

    with pytest.raises(OSError) as err1:
        REDACTOR.redact_stream(io.BufferedReader(Failing())).read()
    # a value that is not JSON: its repr holds the secret
    with pytest.raises(TypeError) as err2:
        redactor.redact_document({"x": {GHP}})
    everything = " ".join(
        [
            repr(found_bytes), repr(reader.redactions), repr(found_doc), caplog.text,
            str(err1.value), str(err2.value), repr(doc_out), streamed.decode(),
        ]
    )
    assert "redacted" in caplog.text  # something was logged, and it holds no secret
    for secret in secrets:
        assert secret not in everything
    assert len(found_bytes) == len(reader.redactions) == 6
    assert str(err2.value) == "cannot redact a set at /x: not a JSON value"


# -- rules ------------------------------------------------------------------------


def test_default_rules_are_bounded_and_prefiltered() -> None:
    names = [r.name for r in DEFAULT_RULES]
    assert names == [
        "private-key", "aws-access-key-id", "aws-secret-access-key", "github-token", "gitlab-token", "slack-token",
        "google-api-key", "stripe-key", "jwt", "url-password", "secret-assignment",
    ]
    for rule in DEFAULT_RULES:
        width, around = rule_width(rule)
        assert 0 < width <= 32 * 1024, rule.name
        assert around <= 8, rule.name
        prefilter = rule_prefilter(rule)
        assert prefilter is not None, rule.name
        assert 0 < prefilter.min_width <= prefilter.max_width <= width, rule.name
    assert REDACTOR.prefiltered


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (lambda: Rule("open", re.compile(rb"secret=.+")), "no bounded maximum match length"),
        (lambda: Rule("empty", re.compile(rb"x{0,3}")), "can match the empty string"),
        (lambda: Rule("backref", re.compile(rb"(a{1,3})\1")), "back-references are not supported"),
    ],
)
def test_unbounded_or_unsafe_rules_are_refused(rule: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Redactor([rule()])


def test_rule_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="group 2 does not exist"):
        Rule("g", re.compile(rb"(a)"), 2)
    with pytest.raises(ValueError, match="named groups"):
        Rule("n", re.compile(rb"(?P<v>a)"))
    with pytest.raises(ValueError, match="bytes pattern"):
        Rule("s", re.compile("a"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule name"):
        Rule("Bad Name", re.compile(rb"a"))
    with pytest.raises(ValueError, match="unique"):
        Redactor([Rule("a", re.compile(rb"ab")), Rule("a", re.compile(rb"cd"))])
    with pytest.raises(ValueError, match="at least one rule"):
        Redactor([])
    with pytest.raises(ValueError, match="chunk_size"):
        Redactor(chunk_size=0)


def test_case_insensitive_custom_rule_inside_the_combined_pattern() -> None:
    rules = (Rule("word", re.compile(rb"sesame[0-9]{2}", re.IGNORECASE)), Rule("other", re.compile(rb"zz[0-9]{2}")))
    out, found = Redactor(rules).redact_bytes(b"open SESAME42 zz12 sesame7")
    assert out == b"open [REDACTED:word] [REDACTED:other] sesame7"
    assert [r.rule for r in found] == ["word", "other"]
