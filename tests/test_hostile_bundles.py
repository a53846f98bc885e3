"""Hostile bundles: whatever is done to a real exported bundle, verify answers INVALID (or "not a bundle"), in time.

Property-based (hypothesis): real bundles from the real pipeline and export
(with a transparency log) are mutated at every level: bytes of the tar and of
the gzip stream (flipped, inserted, deleted, truncated), the sizes in tar
headers (re-checksummed, so only the lie remains), archive members (added,
removed, renamed, duplicated, turned into links, devices, FIFOs or unknown
types, written in ustar, GNU or pax form), directory bundles (links, FIFOs),
and the JSON documents, signed statements and log entries inside them (values
and types changed, keys added or dropped, deep nesting, huge strings, unpaired
surrogates), re-signed by the exporter's key so the checks behind the
signatures run too. Every outcome must be a report with ``valid`` False and a
printable reason for each failure, or InputError / UsageError; VALID only for a
bundle whose signed content is the original's (or that the trusted key
re-signed); never another exception, never more than EXAMPLE_SECONDS. Then,
one by one: tar structures a hostile writer can make (oversized or endless
extension headers, sparse members, lying numbers, bad padding, unprintable
names), what honest writers make (GNU tar in four formats, multi-member gzip),
deep values right at the recursion limit behind checks that pass, and the CLI
on hostile bundles: exit 1 or 2, and no traceback.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import affidavit_bin, require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlog_fixtures import AGENT, logged_store

from affidavit.errors import InputError, UsageError
from affidavit.signing.archive import BundleContents, Failure, ReadLimits, _Reader, _read_file, printable
from affidavit.signing.bundle import BUNDLE_DSSE, BUNDLE_FILES, BUNDLE_PAYLOAD, BUNDLE_SIG, SUMS, json_bytes
from affidavit.signing.dsse import sign_envelope
from affidavit.signing.keys import LocalSigner, PublicKey, public_pem
from affidavit.signing.statement import BUNDLE_PREDICATE, make_statement
from affidavit.signing.verify import VerifyReport, verify_bundle

EXAMPLE_SECONDS = 10  # the hard bound on one verification (the hypothesis deadline is lower)
# HOSTILE_EXAMPLES=2000 for a longer hunt; the default keeps the file under ~30 s
SETTINGS = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "120")), deadline=5000, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(BaseException):
    """A verification ran past its bound (a BaseException: no `except Exception` in the verifier can swallow it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after ``seconds``; restores pytest-timeout's own alarm afterwards."""
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"verify ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    delay, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if delay:
            signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - start), 0.001), interval)


class Original:
    """The bundle every example starts from (a plain class: hypothesis prints it by its short repr)."""

    def __init__(self, folder: Path, tar: bytes, members: dict[str, bytes], signer: LocalSigner,
                 log_key: PublicKey, checkpoint: str) -> None:
        self.folder = folder  # the directory form, never modified
        self.tar = tar  # the same bundle as a plain tar
        self.members = members  # every regular member's bytes, by name
        self.signer = signer
        self.log_key = log_key
        self.checkpoint = checkpoint  # an older checkpoint of the same log (consistency is checked too)
        self.created = json.loads(members["manifest.json"])["created"]  # what a re-signed statement says

    @property
    def trust(self) -> dict[str, PublicKey]:
        return {self.signer.keyid: self.signer.public_key}

    def __repr__(self) -> str:
        return f"Original({self.folder}, {len(self.members)} members)"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    root = tmp_path_factory.mktemp("hostile")
    ls = logged_store(root)
    ls.collect(2)
    old = ls.checkpoint()
    ls.collect(1)
    ls.export(root / "bundle.tar")
    with tarfile.open(root / "bundle.tar") as tf:  # the same bundle as a directory
        tf.extractall(root / "bundle", filter="data")
    members = {str(p.relative_to(root / "bundle")): p.read_bytes() for p in (root / "bundle").rglob("*")
               if p.is_file()}
    assert ls.verify(root / "bundle", checkpoint=old).valid
    return Original(root / "bundle", (root / "bundle.tar").read_bytes(), members, ls.signer,
                    ls.log_signer.public_key, old)


def tar_members(data: bytes) -> dict[str, bytes] | None:
    """The regular members of a (possibly mutated) tar or tar.gz as Python's tarfile reads them; None if it cannot."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            out: dict[str, bytes] = {}
            for info in tf:
                stream = tf.extractfile(info) if info.isreg() else None
                if stream is not None:
                    out[info.name.removeprefix("./")] = stream.read()
            return out
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError):
        return None


def check(target: Path, original: Original, contents: Callable[[], dict[str, bytes] | None] | None) -> str:
    """Verify ``target`` and check the outcome is clean; returns "valid", "invalid" or "error".

    ``contents`` reads the members another way: a VALID report is only right for the original bytes.
    None: the bundle was re-signed by the trusted exporter, so VALID may be right for other bytes too.
    """
    started = time.monotonic()
    try:
        with time_limit(EXAMPLE_SECONDS):
            report = verify_bundle(target, original.trust, log_key=original.log_key, checkpoint=original.checkpoint)
    except (InputError, UsageError) as e:
        assert e.message.strip()
        return "error"
    assert time.monotonic() - started < EXAMPLE_SECONDS
    assert isinstance(report, VerifyReport)
    assert report.valid == (not report.failures)
    text = "\n".join(report.summary_lines())
    text.encode("utf-8")  # printable: no unpaired surrogate reaches the auditor's terminal
    json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
    for f in report.failures:
        assert f.reason.strip() and f.member.strip(), f
        assert "\n" not in f.reason and "\n" not in f.member
    if report.valid and contents is not None:
        got = signed_content(contents())
        if got != signed_content(original.members):
            odd = sorted(set(got or {}) ^ set(original.members))
            odd += sorted(n for n in set(got or {}) & set(original.members) if (got or {})[n] != original.members[n])
            raise AssertionError(f"VALID, but the members are not the original bytes: {odd[:8]} "
                                 f"({'unreadable' if got is None else len(got)} members read another way)")
        return "valid"
    return "invalid"


def signed_content(members: dict[str, bytes] | None) -> dict[str, Any] | None:
    """The members, with the bundle's DSSE envelope as what its signature covers: the payload and the signatures
    (nothing covers the envelope's bytes, so a dropped keyid hint or other white space is no change)."""
    if members is None or BUNDLE_DSSE not in members:
        return members
    try:
        env = json.loads(members[BUNDLE_DSSE])
        signed = (env["payload"], env["payloadType"], sorted(s["sig"] for s in env["signatures"]))
    except (ValueError, KeyError, TypeError):
        return members
    return {**members, BUNDLE_DSSE: signed}


def resign_all(folder: Path, original: Original) -> None:
    """Rebuild SHA256SUMS and the bundle statement, as the exporter could (whatever the manifest now holds)."""
    for name in BUNDLE_FILES:
        (folder / name).unlink(missing_ok=True)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != SUMS)
    digests = [(n, hashlib.sha256((folder / n).read_bytes()).hexdigest()) for n in names]
    (folder / SUMS).write_text("".join(f"{d}  {n}\n" for n, d in digests))
    digests.append((SUMS, hashlib.sha256((folder / SUMS).read_bytes()).hexdigest()))
    predicate = {"format_version": 1, "created": original.created, "agent": AGENT, "members": len(digests)}
    env = sign_envelope(make_statement(digests, BUNDLE_PREDICATE, predicate), original.signer)
    (folder / BUNDLE_PAYLOAD).write_bytes(base64.b64decode(env["payload"]))
    (folder / BUNDLE_SIG).write_bytes(base64.b64decode(env["signatures"][0]["sig"]))
    (folder / BUNDLE_DSSE).write_bytes(json_bytes(env))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


def write(work: Path, data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=work)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


# -- bytes ------------------------------------------------------------------------------------------

@st.composite
def byte_edits(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "overwrite", "copy-block"]))
        if op == "flip":
            out[pos] ^= draw(st.integers(1, 255))
        elif op == "set":
            out[pos] = draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x80, 0xFF]))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=600))
        elif op == "delete":
            del out[pos:pos + draw(st.integers(1, 1100))]
        elif op == "truncate":
            del out[pos:]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=1024))
            out[pos:pos + len(chunk)] = chunk
        else:  # a whole 512-byte block of the archive copied over another (a plausible header elsewhere)
            src = draw(st.integers(0, max(len(out) // 512 - 1, 0))) * 512
            out[pos - pos % 512:pos - pos % 512 + 512] = out[src:src + 512]
    return bytes(out)


@SETTINGS
@given(data=st.data(), form=st.sampled_from(["tar", "tar.gz", "gz-of-edited-tar"]))
def test_byte_edits(original: Original, work: Path, data: st.DataObject, form: str) -> None:
    if form == "tar":
        mutated, suffix = data.draw(byte_edits(original.tar)), ".tar"
    elif form == "tar.gz":
        mutated, suffix = data.draw(byte_edits(gzip.compress(original.tar, mtime=0))), ".tar.gz"
    else:  # valid gzip around a damaged tar
        mutated, suffix = gzip.compress(data.draw(byte_edits(original.tar)), mtime=0), ".tar.gz"
    path = write(work, mutated, suffix)
    check(path, original, lambda: tar_members(mutated))
    path.unlink()


# -- sizes in headers -----------------------------------------------------------------------------

def set_size(block: bytes, size_field: bytes) -> bytes:
    """A tar header with another size field and a correct checksum (the lie is all that is wrong)."""
    b = bytearray(block)
    b[124:136] = size_field
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def size_field(size: int) -> bytes:
    if size < 0:
        return b"\xff" + (size % (1 << 88)).to_bytes(11, "big")
    if size >= 8 ** 11:
        return b"\x80" + size.to_bytes(11, "big")
    return b"%011o\0" % size


@SETTINGS
@given(data=st.data(), gz=st.booleans())
def test_header_sizes_that_lie(original: Original, work: Path, data: st.DataObject, gz: bool) -> None:
    with tarfile.open(fileobj=io.BytesIO(original.tar)) as tf:
        infos = tf.getmembers()
    info = data.draw(st.sampled_from(infos))
    lie = data.draw(st.sampled_from([0, info.size - 1, info.size + 1, info.size + 512, info.size * 2 + 7, 1 << 33,
                                     (1 << 62), 8 ** 11, -1, -(1 << 40)]) | st.integers(0, len(original.tar)))
    if lie == info.size:
        lie += 1
    header = info.offset_data - 512
    tar = original.tar[:header] + set_size(original.tar[header:header + 512], size_field(lie)) + \
        original.tar[header + 512:]
    mutated = gzip.compress(tar, mtime=0) if gz else tar
    path = write(work, mutated, ".tar.gz" if gz else ".tar")
    assert check(path, original, lambda: tar_members(mutated)) != "valid"
    path.unlink()


# -- archive members --------------------------------------------------------------------------------

HOSTILE_NAMES = ["../evil", "runs/../../evil", "/etc/evil", "C:/evil", "a\\b", "a//b", "./", ".", "",
                 "manifest.json", "./manifest.json", "artefacts/sha256/" + "0" * 64, "runs/x.dsse.json",
                 "keys/" + "a" * 64 + ".pub.pem", "log/checkpoint", "evil\nVALID: all good", "\x1b[2Jclear",
                 "r\u202eexe.json", "n" * 300 + ".json", "\u00e9t\u00e9.json", "trusted_root.json"]
TYPES = [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z", b"V"]


@st.composite
def member_edits(draw: st.DrawFn, members: dict[str, bytes]) -> list[tuple[str, bytes, bytes, str]]:
    """(name, type, data, linkname) entries: the original's, edited."""
    entries = [(n, tarfile.REGTYPE, d, "") for n, d in members.items()]
    names = st.sampled_from(HOSTILE_NAMES + list(members)) | st.text(max_size=40)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(entries) - 1)) if entries else 0
        op = draw(st.sampled_from(["remove", "rename", "duplicate", "add", "retype", "swap", "empty"]))
        if op == "add" or not entries:
            entries.insert(i, (draw(names), draw(st.sampled_from(TYPES)), draw(st.binary(max_size=300)),
                               draw(names)))
        elif op == "remove":
            del entries[i]
        elif op == "rename":
            entries[i] = (draw(names), *entries[i][1:])
        elif op == "duplicate":
            entries.insert(draw(st.integers(0, len(entries))), entries[i])
        elif op == "retype":
            entries[i] = (entries[i][0], draw(st.sampled_from(TYPES)), entries[i][2], draw(names))
        elif op == "swap":
            j = draw(st.integers(0, len(entries) - 1))
            entries[i], entries[j] = entries[j], entries[i]
        else:
            entries[i] = (entries[i][0], entries[i][1], b"", entries[i][3])
    return entries


def build_tar(entries: list[tuple[str, bytes, bytes, str]], fmt: int) -> bytes | None:
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
            for name, kind, data, link in entries:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, link
                info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE, b"Z", b"V") else 0
                tf.addfile(info, io.BytesIO(data) if info.size else None)
    except (ValueError, UnicodeError):
        return None  # a name this format cannot hold
    return out.getvalue()


@SETTINGS
@given(data=st.data(), fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
       gz=st.booleans())
def test_member_edits(original: Original, work: Path, data: st.DataObject, fmt: int, gz: bool) -> None:
    tar = build_tar(data.draw(member_edits(original.members)), fmt)
    if tar is None:
        return
    mutated = gzip.compress(tar, mtime=0) if gz else tar
    path = write(work, mutated, ".tar.gz" if gz else ".tar")
    check(path, original, lambda: tar_members(mutated))
    path.unlink()


@settings(SETTINGS, max_examples=SETTINGS.max_examples // 3)
@given(data=st.data())
def test_directory_edits(original: Original, work: Path, data: st.DataObject) -> None:
    """The same edits on a directory bundle: links, FIFOs, removed and added files."""
    folder = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(original.folder, folder, dirs_exist_ok=True)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for _ in range(data.draw(st.integers(1, 3))):
        victim = data.draw(st.sampled_from(files))
        op = data.draw(st.sampled_from(["remove", "symlink", "fifo", "add", "hardlink", "dir-link"]))
        victim.unlink(missing_ok=True)
        if op == "symlink":
            victim.symlink_to("/etc/hostname")
        elif op == "fifo":
            os.mkfifo(victim)
        elif op == "add":
            victim.write_bytes(data.draw(st.binary(max_size=100)))
        elif op == "hardlink":
            os.link(next(p for p in files if p.is_file() and not p.is_symlink()), victim)
        elif op == "dir-link":
            victim.symlink_to(folder / "runs", target_is_directory=True)
    check(folder, original, lambda: {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                                     if p.is_file() and not p.is_symlink()})
    shutil.rmtree(folder)


# -- JSON documents and signed statements -------------------------------------------------------------

DEEP = "\x00deep\x00"  # a placeholder swapped for raw JSON text after serialising
LEAVES = st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=True) | \
    st.text(max_size=30) | st.sampled_from(["", "sha256:" + "0" * 64, "\x1b[31mred", "line\nbreak", "../x",
                                            "A" * 2_000_000, "\u202e", "1" * 40])
VALUES = st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                         max_size=4), max_leaves=12)
RAW = st.sampled_from(["[" * d + "]" * d for d in (63, 64, 65, 500, 950, 990, 1000, 5000, 100_000)] +
                      ['{"a":' * d + "1" + "}" * d for d in (65, 990, 100_000)] +
                      ['"\\ud800"', '"\\udfff x"', '["\\ud83d\\ude00", "\\ud83d"]', "1e999999", "-0", "1" * 5000])


def paths(obj: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*here, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*here, i))
    return out


@st.composite
def json_edit(draw: st.DrawFn, doc: Any, under: tuple[Any, ...] = ()) -> bytes:
    """``doc`` with one node (at or below ``under``) replaced by any value, raw deep or odd JSON, or nothing."""
    doc = copy.deepcopy(doc)
    where = draw(st.sampled_from([p for p in paths(doc) if p[:len(under)] == under]))
    op = draw(st.sampled_from(["value", "raw", "drop", "add"]))
    raw = draw(RAW) if op in ("raw", "add") else ""
    value: Any = DEEP if op in ("raw", "add") else draw(VALUES)
    node = doc
    for k in where:
        node = node[k]
    if op == "add" and isinstance(node, (dict, list)):  # a new key or item: nothing checks what it holds
        node.append(value) if isinstance(node, list) else node.setdefault(draw(st.text(max_size=6)), value)
    elif not where:
        doc = value if op != "drop" else {}
    else:
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        if op == "drop":
            del parent[where[-1]]
        else:
            parent[where[-1]] = value
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    return text.replace(json.dumps(DEEP), raw).encode("utf-8", "surrogatepass")


def documents(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json"))


@SETTINGS
@given(data=st.data(), resign=st.booleans(), pack=st.booleans())
def test_json_edits(original: Original, work: Path, data: st.DataObject, resign: bool, pack: bool) -> None:
    """One JSON member edited; re-signed by the bundle key (so only the deeper checks can catch it) or not."""
    folder = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(original.folder, folder, dirs_exist_ok=True)
    name = data.draw(st.sampled_from(documents(folder)))
    doc = json.loads((folder / name).read_bytes())
    (folder / name).write_bytes(data.draw(json_edit(doc)))
    if resign:
        resign_all(folder, original)
    target = folder
    if pack:
        target = folder.with_suffix(".tar")
        with tarfile.open(target, "w") as tf:
            for p in sorted(folder.rglob("*")):
                tf.add(p, str(p.relative_to(folder)), recursive=False)
    check(target, original, None if resign else lambda: {
        str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    shutil.rmtree(folder)
    target.unlink(missing_ok=True)


def resign_run(folder: Path, run: str, payload: bytes, signer: LocalSigner, keep_log: bool) -> None:
    """Sign ``payload`` as run ``run``'s statement, as the run key's holder could (its log entry now lies)."""
    env = sign_envelope(payload, signer)
    sigstore = json.loads((folder / "runs" / f"{run}.sigstore.json").read_bytes())
    sigstore["dsseEnvelope"] = env
    if not keep_log:
        sigstore["verificationMaterial"]["tlogEntries"] = []
    (folder / "runs" / f"{run}.dsse.json").write_bytes(json_bytes(env))
    (folder / "runs" / f"{run}.sigstore.json").write_bytes(json_bytes(sigstore))
    (folder / "runs" / f"{run}.payload.json").write_bytes(payload)
    (folder / "runs" / f"{run}.sig").write_bytes(base64.b64decode(env["signatures"][0]["sig"]))


@SETTINGS
@given(data=st.data(), keep_log=st.booleans())
def test_signed_statement_edits(original: Original, work: Path, data: st.DataObject, keep_log: bool) -> None:
    """A run statement (or the bundle statement) edited and validly signed: the shapes behind the signature."""
    folder = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(original.folder, folder, dirs_exist_ok=True)
    runs = sorted(p.name.removesuffix(".payload.json") for p in (folder / "runs").glob("*.payload.json"))
    run = data.draw(st.sampled_from(runs))
    statement = json.loads((folder / "runs" / f"{run}.payload.json").read_bytes())
    resign_run(folder, run, data.draw(json_edit(statement)), original.signer, keep_log)
    resign_all(folder, original)
    assert check(folder, original, None) != "valid"
    shutil.rmtree(folder)


@SETTINGS
@given(data=st.data())
def test_log_entry_edits(original: Original, work: Path, data: st.DataObject) -> None:
    """A run's log entry, or the canonicalized body inside it, edited (the bundle re-signed)."""
    folder = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(original.folder, folder, dirs_exist_ok=True)
    path = data.draw(st.sampled_from(sorted((folder / "runs").glob("*.sigstore.json"))))
    sigstore = json.loads(path.read_bytes())
    entry = sigstore["verificationMaterial"]["tlogEntries"][0]
    if data.draw(st.booleans()):
        body = base64.b64decode(entry["canonicalizedBody"])
        entry["canonicalizedBody"] = base64.b64encode(data.draw(json_edit(json.loads(body)))).decode()
        changed = base64.b64decode(entry["canonicalizedBody"]) != body
        text = json.dumps(sigstore).encode()
    else:
        text = data.draw(json_edit(sigstore, under=("verificationMaterial", "tlogEntries", 0)))
        try:
            changed = json.loads(text) != sigstore
        except (ValueError, RecursionError):
            changed = True
    path.write_bytes(text)
    resign_all(folder, original)
    outcome = check(folder, original, None)
    assert outcome != "valid" or not changed
    shutil.rmtree(folder)


# -- deep values where every check before the deep one passes ------------------------------------------------

def near_the_recursion_limit() -> list[int]:
    """Depths around where parsing at this stack depth (plus the verifier's own frames) would hit the limit."""
    room = sys.getrecursionlimit() - len(traceback.extract_stack())
    return [63, 64, 65, 500, *range(room - 60, room + 5), 5000]


def with_deep_key(text: bytes, depth: int) -> bytes:
    """A JSON object with one more key, last in sorted order, nested ``depth`` deep (canonical form kept)."""
    obj = json.loads(text)
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (canonical[:-1] + ',"~":' + "[" * depth + "]" * depth + "}").encode()


@pytest.mark.parametrize("carrier", ["statement", "log entry body", "members"])
def test_deep_values_behind_checks_that_pass_never_crash(original: Original, work: Path, carrier: str) -> None:
    """The nesting that breaks the parser's or the serialiser's recursion depends on the stack; whatever it is,
    a deep value in a signed statement, a log entry's body or a member is a failure, never a RecursionError."""
    folder = Path(tempfile.mkdtemp(dir=work))
    run = sorted(n for n in original.members if n.startswith("runs/") and n.endswith(".payload.json"))[0][5:-13]
    for depth in near_the_recursion_limit():
        shutil.copytree(original.folder, folder, dirs_exist_ok=True)
        if carrier == "statement":  # validly signed, carrying the deep key
            statement = original.members[f"runs/{run}.payload.json"]
            resign_run(folder, run, with_deep_key(statement, depth), original.signer, keep_log=True)
        elif carrier == "log entry body":  # the statement as logged; its entry's body with one more key
            sigstore = json.loads(original.members[f"runs/{run}.sigstore.json"])
            entry = sigstore["verificationMaterial"]["tlogEntries"][0]
            entry["canonicalizedBody"] = base64.b64encode(
                with_deep_key(base64.b64decode(entry["canonicalizedBody"]), depth)).decode()
            (folder / "runs" / f"{run}.sigstore.json").write_bytes(json.dumps(sigstore).encode())
        else:
            for member in ("manifest.json", "trusted_root.json", f"runs/{run}.sigstore.json"):
                (folder / member).write_bytes(with_deep_key(original.members[member], depth))
        resign_all(folder, original)
        assert check(folder, original, None) == "invalid", depth


# -- the command line -----------------------------------------------------------------------------------

def hostile_inputs(original: Original, root: Path) -> dict[str, Path]:
    """A few bundles, one per kind of hostility, each built deterministically."""
    out: dict[str, Path] = {}
    out["truncated.tar.gz"] = write(root, gzip.compress(original.tar, mtime=0)[:5000], ".tar.gz")
    out["not-a-bundle.tar"] = write(root, b"\x00garbage" * 300, ".tar")
    links = build_tar([(n, tarfile.REGTYPE, d, "") for n, d in original.members.items()] +
                      [("evil\nVALID", tarfile.SYMTYPE, b"", "/etc/passwd")], tarfile.PAX_FORMAT)
    assert links is not None
    out["links.tar"] = write(root, links, ".tar")
    for name, member, text in [
            ("deep", "trusted_root.json", "[" * 100_000 + "]" * 100_000),
            ("surrogate", "manifest.json", '{"created": "2026-11-29T10:00:00Z", "agent": "a", "format": "\\ud800"}')]:
        folder = Path(tempfile.mkdtemp(dir=root))
        shutil.copytree(original.folder, folder, dirs_exist_ok=True)
        (folder / member).write_text(text)
        resign_all(folder, original)
        out[name] = folder
    folder = Path(tempfile.mkdtemp(dir=root))
    shutil.copytree(original.folder, folder, dirs_exist_ok=True)
    run = sorted((folder / "runs").glob("*.payload.json"))[0].name.removesuffix(".payload.json")
    statement = json.loads((folder / "runs" / f"{run}.payload.json").read_bytes())
    statement["predicate"]["artefacts"][0]["name"] = "\udcff\x1b[2J"  # escaped by json.dumps: valid JSON text
    resign_run(folder, run, json.dumps(statement).encode(), original.signer, True)
    resign_all(folder, original)
    out["statement"] = folder
    return out


@pytest.mark.slow
def test_cli_on_hostile_bundles_exits_1_or_2_without_a_traceback(original: Original, tmp_path: Path,
                                                                 clean_env: dict[str, str]) -> None:
    key = tmp_path / "key.pub.pem"
    key.write_bytes(public_pem(original.signer.public_key))
    log_key = tmp_path / "log.pub.pem"
    log_key.write_bytes(public_pem(original.log_key))
    codes = {}
    for name, target in hostile_inputs(original, tmp_path).items():
        for extra in ([], ["--json"]):
            r = subprocess.run([affidavit_bin(), "verify", str(target), "--key", str(key), "--log-key", str(log_key),
                                *extra], capture_output=True, env=clean_env, timeout=60)
            out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
            assert r.returncode in (1, 2), (name, r.returncode, out)
            assert "Traceback" not in out, (name, out)
            assert "\x1b" not in r.stdout.decode("utf-8", "replace"), (name, "an escape sequence reached the terminal")
            codes[name] = r.returncode
            if extra:
                assert r.returncode == 2 or json.loads(r.stdout)["valid"] is False
    assert codes == {"truncated.tar.gz": 1, "not-a-bundle.tar": 2, "links.tar": 1, "deep": 1, "surrogate": 1,
                     "statement": 1}


# -- archive structures, one by one -----------------------------------------------------------------------

def block(name: bytes, kind: bytes = b"0", size: int | bytes = 0, *, magic: bytes = b"ustar\x0000",
          prefix: bytes = b"", linkname: bytes = b"") -> bytes:
    """One tar header block, checksummed (``size`` as a number, or the raw 12-byte field)."""
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108], b[108:116], b[116:124], b[136:148] = b"0000644\0", b"0000000\0", b"0000000\0", b"00000000000\0"
    b[124:136] = size if isinstance(size, bytes) else b"%011o\0" % size
    b[156:157] = kind
    b[157:157 + len(linkname)] = linkname
    b[257:265] = magic
    b[345:345 + len(prefix)] = prefix
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def entry(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    return block(name, kind, len(data)) + data + bytes(-len(data) % 512)


def pax(records: dict[str, str], kind: bytes = b"x") -> bytes:
    body = b""
    for key, value in records.items():
        text = f" {key}={value}\n".encode()
        length = len(text) + len(str(len(text)))
        length += len(str(length)) - len(str(len(text)))
        body += str(length).encode() + text
    return entry(b"././@PaxHeader", body, kind)


END = bytes(1024)


def verify_bytes(original: Original, work: Path, data: bytes, suffix: str = ".tar") -> VerifyReport:
    path = write(work, data, suffix)
    with time_limit(EXAMPLE_SECONDS):
        return verify_bundle(path, original.trust, log_key=original.log_key)


def original_entries(original: Original) -> bytes:
    return b"".join(entry(n.encode(), d) for n, d in original.members.items())


def test_the_original_rebuilt_block_by_block_is_valid(original: Original, work: Path) -> None:
    assert verify_bytes(original, work, original_entries(original) + END).valid


@pytest.mark.parametrize(("extra", "member", "reason"), [
    (pax({"comment": "x" * 70_000}) + entry(b"y", b"1"), "(archive)",
     "bytes (more than 65536) refused; the rest was not read (limit)"),
    (pax({"comment": "x"}) * 9 + entry(b"y", b"1"), "(archive)", "more than 8 extension headers in a row"),
    (block(b"sparse", b"S", 512) + bytes(512), "sparse", "GNU sparse member refused; the rest of the archive"),
    (block(b"neg", b"0", b"\xff" * 12), "(archive)", "negative size in a header"),
    (block(b"huge", b"0", b"\x80" + (1 << 80).to_bytes(11, "big")), "huge", "the bundle expands to more than"),
    (block(b"octal", b"0", b"12345678901\0"), "(archive)", "the size field of a header is not an octal number"),
    (pax({"size": "12x"}) + entry(b"y", b"1"), "(archive)", "a pax header's size is not a number"),
    (entry(b"././@PaxHeader", b"99 path=short\n", b"x") + entry(b"y", b"1"), "(archive)",
     "a pax header's records are malformed"),
    (entry(b"././@PaxHeader", b"0 =\n", b"x") + entry(b"y", b"1"), "(archive)", "a pax header's records are malformed"),
    (block(b"pad", b"0", 3) + b"abc" + b"\x01" + bytes(508), "(archive)", "the block after member 'pad' is not padded"),
    (block(b"bad-sum", b"0", 0)[:148] + b"0000000\0" + block(b"bad-sum", b"0", 0)[156:], "(archive)",
     "a header's checksum does not match"),
    (entry(b"c\xe9f\xe9", b"x"), "c\\udce9f\\udce9", "name holds control or invisible characters, or bytes that are"),
    (entry(b"evil\nVALID: ok", b"x"), "evil\\x0aVALID: ok", "name holds control or invisible characters"),
    (entry(b"r\xe2\x80\xaejson.exe", b"x"), "r\\u202ejson.exe", "name holds control or invisible characters"),
    (entry(b"link", b"", b"2"), "link", "symbolic link (to '') refused"),
    (entry(b"vol", b"label", b"V"), "vol", "member of type 'V' refused: a bundle holds regular files only"),
])
def test_hostile_structures(original: Original, work: Path, extra: bytes, member: str, reason: str) -> None:
    report = verify_bytes(original, work, original_entries(original) + extra + END)
    assert not report.valid
    assert any(f.member == member and reason in f.reason for f in report.failures), report.failures
    assert all("\n" not in f.member and "\u202e" not in f.member for f in report.failures)


@pytest.mark.parametrize(("tail", "reason"), [
    (b"", "the archive ends without its end-of-archive marker"),
    (b"x" * 300, "the archive ends inside a header"),
])
def test_archive_ends_early(original: Original, work: Path, tail: bytes, reason: str) -> None:
    report = verify_bytes(original, work, original_entries(original) + tail)
    assert any(reason in f.reason for f in report.failures), report.failures


def test_names_other_tar_writers_use(original: Original, work: Path) -> None:
    """GNU long names, ustar prefixes, pax paths, a global pax header (as `git archive` writes): all read."""
    first = next(n for n in original.members if n.startswith("artefacts/"))
    data = original.members[first]
    others = b"".join(entry(n.encode(), d) for n, d in original.members.items() if n != first)
    long_name = entry(b"././@LongLink", first.encode() + b"\0", b"L") + entry(b"ignored", data)
    head, _, tail = first.rpartition("/")
    prefixed = block(tail.encode(), b"0", len(data), prefix=head.encode()) + data + bytes(-len(data) % 512)
    pax_path = pax({"path": first}) + entry(b"ignored", data)
    global_header = pax({"comment": "3f2a9c"}, b"g")
    for variant in (long_name, prefixed, pax_path, global_header + pax_path):
        assert verify_bytes(original, work, variant + others + END).valid


def test_bundles_repacked_by_gnu_tar_verify(original: Original, work: Path) -> None:
    tar = require_tool("tar")
    for fmt in ("gnu", "posix", "ustar", "v7"):
        out = work / f"repacked-{fmt}.tar.gz"
        subprocess.run([tar, "-C", str(original.folder), f"--format={fmt}", "-czf", str(out), "."], check=True)
        report = verify_bundle(out, original.trust, log_key=original.log_key, checkpoint=original.checkpoint)
        assert report.valid, (fmt, report.failures)


def test_gzip_forms(original: Original, work: Path) -> None:
    data = original_entries(original) + END
    half = len(data) // 2
    assert verify_bytes(original, work, gzip.compress(data[:half]) + gzip.compress(data[half:]), ".tar.gz").valid
    assert verify_bytes(original, work, gzip.compress(data) + b"trailing junk", ".tar.gz").valid
    crc = bytearray(gzip.compress(data))
    crc[-8] ^= 1
    report = verify_bytes(original, work, bytes(crc), ".tar.gz")
    assert any("Error -3 while decompressing data: incorrect data check" in f.reason for f in report.failures)
    report = verify_bytes(original, work, gzip.compress(data)[:-4], ".tar.gz")
    assert any("the gzip stream is truncated" in f.reason for f in report.failures)


@pytest.mark.parametrize(("tool", "name"), [("bzip2", "bzip2"), ("xz", "xz")])
def test_other_compressions_are_not_bundles(original: Original, work: Path, tool: str, name: str) -> None:
    path = write(work, original.tar, ".tar")
    subprocess.run([require_tool(tool), "-f", str(path)], check=True)
    compressed = next(work.glob(path.name + ".*"))
    with pytest.raises(InputError, match=f"is not a bundle: it is compressed with {name}"):
        verify_bundle(compressed, original.trust)


def test_failure_texts_are_printable() -> None:
    f = Failure("a\nb\u202e", "x" * 5000 + "\x1b[2J")
    assert f.member == "a\\x0ab\\u202e"
    assert f.reason == "x" * 2000 + "… (3004 more characters)"
    assert Failure("", "r").member == "''" and Failure(" ", "r").member == "' '"
    assert Failure("m", "\udcff").reason == "\\udcff" and printable("ok: ä ✓") == "ok: ä ✓"


def test_a_fifo_swapped_in_after_the_listing_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    contents = BundleContents(tmp_path, "directory")
    with time_limit(5):
        _read_file(_Reader(contents, ReadLimits(), None), "fifo", str(tmp_path / "fifo"), memoryview(bytearray(64)))
    assert [f.reason for f in contents.failures] == [
        "not a regular file (device, FIFO or socket) refused: a bundle holds regular files only"]
