"""Verification limits: the model, the JSON guard, and every limit at exactly the limit (VALID) and one past it
(INVALID, naming the limit) on real exported bundles."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tlog_fixtures import LoggedStore, logged_store

from affidavit.errors import UsageError
from affidavit.signing.archive import ReadLimits, is_metadata
from affidavit.signing.bundle import RunAttestation, write_bundle
from affidavit.signing.dsse import sign_envelope
from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.signing.limits import (
    DEFAULT_MAX_PROOF_HASHES,
    VerifyLimits,
    json_depth_exceeds,
    json_problem,
    limits_from_options,
    parse_size,
    unpaired_surrogate,
)
from affidavit.signing.predicate import run_statement
from affidavit.signing.sigstore import make_bundle
from affidavit.signing.tlog_entry import MAX_PROOF_HASHES
from affidavit.signing.verify import VerifyReport, verify_bundle
from affidavit.store.base import ArtefactRecord, RunRecord

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def nested(depth: int, kind: str = "[") -> str:
    close = "]" if kind == "[" else "}"
    inner = "1" if kind == "[" else '"k": 1'
    if depth == 0:
        return "1"
    return (kind if kind == "[" else '{"k": ') * (depth - 1) + f"{kind}{inner}{close}" + close * (depth - 1)


def reasons(report: VerifyReport, member: str | None = None) -> list[str]:
    return [f.reason for f in report.failures if member is None or f.member == member]


# -- the model ------------------------------------------------------------------------------------

def test_defaults_are_sane() -> None:
    limits = VerifyLimits()
    assert ReadLimits is VerifyLimits
    assert limits.max_members == 1_000_000 and limits.max_total_bytes == 64 << 30
    assert limits.max_metadata_bytes == 64 << 20 and limits.max_metadata_total_bytes == 1 << 30
    assert limits.max_json_depth == 64
    assert limits.max_proof_hashes == DEFAULT_MAX_PROOF_HASHES == MAX_PROOF_HASHES


@pytest.mark.parametrize(("field", "value"), [("max_members", 0), ("max_total_bytes", -1), ("max_json_depth", 0),
                                              ("max_metadata_bytes", True), ("max_proof_hashes", -1),
                                              ("max_metadata_total_bytes", 1.5)])
def test_out_of_range_limits_are_usage_errors(field: str, value: Any) -> None:
    with pytest.raises(UsageError, match=f"limit {field}.* must be an integer of at least"):
        VerifyLimits(**{field: value})


def test_limits_from_the_command_line_flags() -> None:
    assert limits_from_options() == VerifyLimits()
    limits = limits_from_options(max_members=10, max_bytes=2048, max_json_bytes=512, max_json_depth=8,
                                 max_proof_hashes=0)
    assert limits == VerifyLimits(max_members=10, max_total_bytes=2048, max_metadata_bytes=512, max_json_depth=8,
                                  max_proof_hashes=0)
    with pytest.raises(UsageError, match=r"\(--max-json-depth\) must be an integer of at least 1, not 0"):
        limits_from_options(max_json_depth=0)
    with pytest.raises(UsageError, match=r"\(--max-bytes\)"):
        limits_from_options(max_bytes=-5)


@pytest.mark.parametrize(("text", "size"), [("1048576", 1 << 20), ("64K", 64 << 10), ("512MiB", 512 << 20),
                                            ("64g", 64 << 30), (" 2 TB ", 2 << 40), ("0", 0)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "ten", "64X", "1 2"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(UsageError, match="is not a size"):
        parse_size(text)


# -- the JSON guard -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["[", "{"])
def test_depth_at_and_past_the_limit(kind: str) -> None:
    for limit in (1, 2, 5, 64):
        assert not json_depth_exceeds(nested(limit, kind).encode(), limit)
        assert json_depth_exceeds(nested(limit + 1, kind).encode(), limit)
        assert json.loads(nested(limit, kind))  # the fixtures are JSON of that depth
    assert not json_depth_exceeds(b"1", 1) and not json_depth_exceeds(b'"[[[["', 1)


def test_brackets_inside_strings_do_not_count() -> None:
    doc = b'{"a": "[[[[{{{{", "b": "\\"[[[[", "c": "\\\\", "d": [1]}'
    assert json.loads(doc)["c"] == "\\"
    assert not json_depth_exceeds(doc, 2) and json_depth_exceeds(doc, 1)
    assert json_depth_exceeds(b'["\\\\\\"", [[1]]]', 2)  # an escaped backslash, then an escaped quote
    assert json_depth_exceeds(b'["unterminated [[[[[[[', 1) is False


def test_deep_nesting_is_found_without_recursion() -> None:
    deep = b"[" * 1_000_000 + b"]" * 1_000_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    assert json_problem(deep, 64) == "JSON nested deeper than 64 levels (limit)"


def _depth(obj: Any) -> int:
    if isinstance(obj, dict):
        return 1 + max(map(_depth, obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max(map(_depth, obj), default=0)
    return 0


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n', max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                        st.text(alphabet='[]{}"\\k', max_size=4), kids, max_size=3), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(doc=JSON, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_depth_agrees_with_the_parsed_document(doc: Any, ascii_only: bool, indent: int | None) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    depth = _depth(doc)
    for limit in {max(depth - 1, 1), depth, depth + 1}:
        assert json_depth_exceeds(text, limit) == (depth > limit)


@pytest.mark.parametrize(("text", "alone"), [
    ('["\\ud800"]', True), ('["\\udfff"]', True), ('["a\\ud800b"]', True), ('["\\ud800\\ud800\\udc00"]', True),
    ('["\\ud83d\\ude00"]', False), ('["\\uD83D\\uDE00"]', False), ('["\\\\ud800"]', False),
    ('["\\\\\\ud800"]', True), ('["\\u00e9"]', False), ('["plain"]', False)])
def test_unpaired_surrogates(text: str, alone: bool) -> None:
    assert unpaired_surrogate(text.encode()) is alone
    value = json.loads(text)[0]
    try:
        value.encode("utf-8")
        printable = True
    except UnicodeEncodeError:
        printable = False
    assert printable is not alone  # the guard says exactly what printing would refuse
    assert (json_problem(text.encode(), 64) is not None) is alone


# -- every limit on a real bundle ------------------------------------------------------------------

@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoggedStore, Path, Path]:
    """A store with five logged runs, exported as a plain tar and as a directory (with a JSON extra member)."""
    root = tmp_path_factory.mktemp("limits")
    ls = logged_store(root)
    ls.collect(5)
    library = [("controls/deep.json", nested(64).encode())]
    ls.export(root / "b.tar", library_files=library)
    with tarfile.open(root / "b.tar") as tf:
        tf.extractall(root / "b", filter="data")
    return ls, root / "b.tar", root / "b"


def tar_sizes(path: Path) -> dict[str, int]:
    with tarfile.open(path) as tf:
        return {i.name: i.size for i in tf.getmembers()}


def test_members_at_and_past_the_limit(logged: tuple[LoggedStore, Path, Path]) -> None:
    ls, tar, folder = logged
    count = len(tar_sizes(tar))
    assert ls.verify(tar, limits=VerifyLimits(max_members=count)).valid
    report = ls.verify(tar, limits=VerifyLimits(max_members=count - 1))
    assert not report.valid
    assert f"more than {count - 1} members; the rest was not read (limit)" in reasons(report, "(archive)")
    entries = len(list(folder.rglob("*")))  # in a directory, folders count too
    assert entries > count
    assert ls.verify(folder, limits=VerifyLimits(max_members=entries)).valid
    assert f"more than {entries - 1} members; the rest was not read (limit)" in reasons(
        ls.verify(folder, limits=VerifyLimits(max_members=entries - 1)), "(archive)")


def test_expanded_size_at_and_past_the_limit(logged: tuple[LoggedStore, Path, Path]) -> None:
    ls, tar, folder = logged
    total = sum(tar_sizes(tar).values())
    for target in (tar, folder):
        assert ls.verify(target, limits=VerifyLimits(max_total_bytes=total)).valid
        report = ls.verify(target, limits=VerifyLimits(max_total_bytes=total - 1))
        assert not report.valid
        assert any(f"the bundle expands to more than {total - 1} bytes; stopped (limit)" == r for r in reasons(report))


def test_expanded_size_of_a_compressed_bomb_is_bounded(logged: tuple[LoggedStore, Path, Path],
                                                       tmp_path: Path) -> None:
    """A member that claims (and holds) 256 MiB of zeros, gzip-compressed to ~250 KiB: stopped at the limit."""
    ls, tar, _ = logged
    with tarfile.open(tar) as src:
        members = [(i, src.extractfile(i).read()) for i in src.getmembers()]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        for info, data in members[:1]:
            dst.addfile(info, io.BytesIO(data))
        bomb = tarfile.TarInfo("artefacts/sha256/" + "0" * 64)
        bomb.size = 256 << 20
        dst.addfile(bomb, io.BytesIO(bytes(bomb.size)))
    import gzip

    (tmp_path / "bomb.tar.gz").write_bytes(gzip.compress(out.getvalue(), compresslevel=9, mtime=0))
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 1 << 20
    report = ls.verify(tmp_path / "bomb.tar.gz", limits=VerifyLimits(max_total_bytes=1 << 20))
    assert "the bundle expands to more than 1048576 bytes; stopped (limit)" in reasons(
        report, "artefacts/sha256/" + "0" * 64)


def test_metadata_size_at_and_past_the_limit(logged: tuple[LoggedStore, Path, Path]) -> None:
    ls, tar, folder = logged
    sizes = {n: s for n, s in tar_sizes(tar).items() if is_metadata(n)}
    largest = max(sizes, key=lambda n: sizes[n])
    for target in (tar, folder):
        assert ls.verify(target, limits=VerifyLimits(max_metadata_bytes=sizes[largest])).valid
        report = ls.verify(target, limits=VerifyLimits(max_metadata_bytes=sizes[largest] - 1))
        assert not report.valid
        assert f"metadata member larger than {sizes[largest] - 1} bytes (limit)" in reasons(report, largest)
    kept = sum(sizes.values())
    assert ls.verify(tar, limits=VerifyLimits(max_metadata_total_bytes=kept)).valid
    report = ls.verify(tar, limits=VerifyLimits(max_metadata_total_bytes=kept - 1))
    assert any(r == f"the metadata members add up to more than {kept - 1} bytes (limit)" for r in reasons(report))


def test_json_depth_at_and_past_the_limit(logged: tuple[LoggedStore, Path, Path], tmp_path: Path) -> None:
    """controls/deep.json is nested exactly 64 deep: VALID with the default limit, INVALID at 63."""
    ls, tar, folder = logged
    for target in (tar, folder):
        assert ls.verify(target).valid
        report = ls.verify(target, limits=VerifyLimits(max_json_depth=63))
        assert reasons(report) == ["JSON nested deeper than 63 levels (limit)"]
        assert report.failures[0].member == "controls/deep.json"
    ls.export(tmp_path / "deeper", library_files=[("controls/deep.json", nested(65).encode())])
    report = ls.verify(tmp_path / "deeper")
    assert reasons(report, "controls/deep.json") == ["JSON nested deeper than 64 levels (limit)"]


def _statement_bundle(out: Path, depth: int) -> tuple[LocalSigner, Path]:
    """A bundle whose one run statement is nested ``depth`` deep (statement -> predicate -> a list)."""
    signer = LocalSigner(generate_private_key("ed25519"))
    content = b'{"doc": 1}'
    digest = hashlib.sha256(content).hexdigest()
    run_id = "20261129T100000Z-deep"
    art = ArtefactRecord(run_id=run_id, digest=digest, name="doc.json", media_type="application/json",
                         size=len(content), collector="test", collected_at=T0, controls=(), findings=(), ttl="P7D")
    record = RunRecord(run_id, "deep", "files", T0, T0 + timedelta(minutes=1), signer.keyid, "", 1, (art,))
    statement = json.loads(run_statement(record, "agent"))
    statement["predicate"]["nested"] = json.loads(nested(depth - 2))
    envelope = sign_envelope(json.dumps(statement).encode(), signer)
    write_bundle(out, runs=[RunAttestation(run_id, envelope, make_bundle(envelope, signer.keyid))],
                 open_blob=lambda h: io.BytesIO(content), signer=signer, public_keys=[signer.public_key],
                 agent="agent", created=T0)
    return signer, out


def test_json_depth_of_a_signed_statement(tmp_path: Path) -> None:
    """The limit holds inside envelopes too: a run statement nested 65 deep is refused before it is parsed."""
    signer, at_limit = _statement_bundle(tmp_path / "at", 64)
    assert verify_bundle(at_limit, {signer.keyid: signer.public_key}).valid
    signer, past = _statement_bundle(tmp_path / "past", 65)
    report = verify_bundle(past, {signer.keyid: signer.public_key})
    assert not report.valid and report.runs == ()
    assert any(f.member.endswith(".dsse.json") and f.reason == "its payload: JSON nested deeper than 64 levels (limit)"
               for f in report.failures), report.failures


def test_proof_length_at_and_past_the_limit(logged: tuple[LoggedStore, Path, Path]) -> None:
    ls, tar, folder = logged
    longest = 0
    for path in (folder / "runs").glob("*.sigstore.json"):
        entry = json.loads(path.read_bytes())["verificationMaterial"]["tlogEntries"][0]
        longest = max(longest, len(entry["inclusionProof"]["hashes"]))
    assert longest == 3  # five entries: the first leaves need three hashes
    for target in (tar, folder):
        assert ls.verify(target, limits=VerifyLimits(max_proof_hashes=longest)).valid
        report = ls.verify(target, limits=VerifyLimits(max_proof_hashes=longest - 1))
        assert not report.valid and report.log.status == "failed"
        assert any(f"holds {longest} hashes, more than {longest - 1} (limit)" in r for r in reasons(report))
    # the keyword verify_bundle had before the limits model still wins over it
    assert not ls.verify(tar, limits=VerifyLimits(max_proof_hashes=longest), max_proof_hashes=longest - 1).valid


def test_a_huge_directory_is_not_listed_past_the_member_limit(tmp_path: Path) -> None:
    from affidavit.signing.archive import read_bundle

    for i in range(200):
        (tmp_path / f"f{i:03d}").write_bytes(b"x")
    contents = read_bundle(tmp_path, limits=VerifyLimits(max_members=10))
    assert [(f.member, f.reason) for f in contents.failures] == [
        ("(archive)", "more than 10 members; the rest was not read (limit)")]
    assert contents.members == {}  # stopped while listing, before reading any
    assert len(read_bundle(tmp_path, limits=VerifyLimits(max_members=200)).members) == 200
