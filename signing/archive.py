"""Bundle containers: safe, streaming reading of a bundle.

A bundle is a .tar.gz / .tar archive (recognised by its content, not its name)
or a directory. Reading is one streaming pass under :class:`ReadLimits` (the
``signing.limits`` model): each member is hashed as it passes, and kept in
memory only if it is metadata the verifier reads. The tar and gzip formats are
parsed here, not by ``tarfile``, so that every byte of a hostile archive is
accounted for: extension headers are bounded, sparse and unknown members are
refused, a number that does not fit is an error, and a bad header mid-archive
is a failure rather than a silent end. Anything a hostile bundle could use
against the reader (absolute or escaping paths, links, devices, FIFOs,
duplicate names, names with control characters, oversized or too deeply nested
content) becomes a :class:`Failure` naming the member, never an exception.
Artefacts of a directory or a plain tar are read and hashed where they lie by
workers (:mod:`affidavit.signing.member_hash`: threads, then processes for a
large bundle) while the main thread walks on; :func:`open_bundle` returns once
the walk is done, so the verifier checks the metadata while they hash.
Writing is :mod:`affidavit.signing.archive_write`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, NamedTuple

from affidavit.errors import InputError
from affidavit.signing.hashing import CHUNK_SIZE
from affidavit.signing.limits import VerifyLimits, json_problem
from affidavit.signing.member_hash import NOT_REGULAR, PROCESS_AFTER, REGULAR_ONLY, FileJob, Hasher, Job, SliceJob

BundleKind = Literal["tar.gz", "tar", "directory"]
Progress = Callable[[int], None] | None
ReadLimits = VerifyLimits  # the name the reader's callers know the limits model by
ARCHIVE = "(archive)"  # the member name of a failure about the archive as a whole
_METADATA_NAMES = ("manifest.json", "SHA256SUMS", "README.md")
_METADATA_SUFFIXES = (".json", ".sig", ".pem", ".tsr")
_UNPARSED_JSON = ".payload.json"  # raw signed payloads, for OpenSSL users
# control, bidirectional-override and invisible characters, and unpaired surrogates (undecodable bytes)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
MAX_TEXT = 2000  # characters of a failure's member name or reason
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*(?:/[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*)*\Z")


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` safe to print on one line: at most ``limit`` characters, unprintable ones escaped."""
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more characters)"
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Failure:
    """One reason a bundle is not valid, about one member (or the archive); both texts are printable."""

    member: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "member", printable(self.member if self.member.strip() else repr(self.member)))
        object.__setattr__(self, "reason", printable(self.reason))

    def to_json(self) -> dict[str, str]:
        return {"member": self.member, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.member}: {self.reason}"


class Member(NamedTuple):  # a tuple: one per member, ten thousands of them made while the auditor waits
    name: str
    sha256: str
    size: int
    data: bytes | None  # the bytes of a small metadata member; None for artefacts (and refused metadata)
    refused: bool = False  # metadata the reader would not keep (a limit; JSON it must not parse): never re-read it


@dataclass
class BundleContents:
    source: Path
    kind: BundleKind
    members: dict[str, Member] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def is_metadata(name: str) -> bool:
    """Members whose bytes the verifier reads (everything else is only hashed)."""
    if name.startswith("artefacts/"):
        return False
    if name.startswith("log/"):  # the checkpoint and the leaf hashes (32 bytes a run)
        return True
    return name in _METADATA_NAMES or name.endswith(_METADATA_SUFFIXES)


def normalise_name(raw: str) -> tuple[str, str | None]:
    """(the member's name without leading ./, the reason it is refused or None)."""
    if _PLAIN_NAME.match(raw):  # the usual case, decided at once
        return raw, None
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":" and raw[0].isalpha()):
        return raw, "path is absolute"
    parts = raw.split("/")
    while parts and parts[0] == ".":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    if ".." in parts or any(".." in p.split("\\") for p in parts):
        return raw, "path escapes the bundle"
    if _UNPRINTABLE.search(raw):
        return raw, "name holds control or invisible characters, or bytes that are not UTF-8"
    if any(p in ("", ".") for p in parts) or "\\" in raw:
        return raw, "path is not in plain form (empty or '.' components, or backslashes)"
    return "/".join(parts), None


class _Stop(Exception):
    """A limit was reached: the rest of the bundle is not read."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(member, reason)


class _Corrupt(Exception):
    """The archive's bytes stop being a well-formed tar (or gzip) stream here."""


Sink = Callable[[memoryview], object]
Pipe = Callable[[Sink], int]  # streams a member's bytes into a sink; returns how many there were


class _Reader:
    """Charges every entry to the limits, checks its name, hashes it and keeps the metadata."""

    def __init__(self, contents: BundleContents, limits: ReadLimits, progress: Callable[[int], None] | None,
                 workers: Hasher | None = None) -> None:
        self.contents, self.limits, self.progress, self.workers = contents, limits, progress, workers
        self.seen: set[str] = set()
        self.count = 0
        self.total = 0  # the members' bytes, as their headers (or the file system) give them
        self.kept = 0  # the metadata bytes held in memory
        self.later: dict[str, int] = {}  # members a worker hashes: their sizes

    def fail(self, member: str, reason: str) -> None:
        self.contents.failures.append(Failure(member, reason))

    def charge(self, member: str, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise _Stop(member, f"the bundle expands to more than {self.limits.max_total_bytes} bytes; stopped (limit)")

    def admit(self, raw: str, is_dir: bool, size: int = 0) -> str | None:
        """Count an entry and the ``size`` bytes that follow it; the name to read it by, or None to skip it."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise _Stop(ARCHIVE, f"more than {self.limits.max_members} members; the rest was not read (limit)")
        self.charge(raw, size)
        name, problem = normalise_name(raw)
        if problem:
            self.fail(raw, problem)
            return None
        if is_dir:
            return name
        if not name:
            self.fail(raw, "member has an empty name")
            return None
        if name in self.seen:
            self.fail(name, "duplicate member (the bundle holds more than one entry with this name)")
            return None
        self.seen.add(name)
        return name

    def read(self, name: str, size: int, pipe: Pipe) -> None:
        """Hash a member (``size`` bytes, says its header) as ``pipe`` streams it; keep it if metadata."""
        limits = self.limits
        keep = refused = is_metadata(name)
        if keep and size > limits.max_metadata_bytes:
            self.fail(name, f"metadata member larger than {limits.max_metadata_bytes} bytes (limit)")
            keep = False
        elif keep and self.kept + size > limits.max_metadata_total_bytes:
            self.fail(name, f"the metadata members add up to more than {limits.max_metadata_total_bytes} bytes "
                            "(limit)")
            keep = False
        h = hashlib.sha256()
        parts: list[bytes] = []
        progress = self.progress

        def sink(chunk: memoryview) -> None:
            h.update(chunk)
            if keep:
                parts.append(bytes(chunk))
            if progress is not None:
                progress(len(chunk))

        n = pipe(sink)
        if n != size:
            self.fail(name, f"holds {n} bytes, its header says {size}")
        data = b"".join(parts) if keep else None
        if data is not None:
            self.kept += len(data)
            # a .payload.json is only ever compared byte for byte with the signed payload (whose own depth the
            # envelope check limits): it is never parsed, so it is not scanned
            if name.endswith(".json") and not name.endswith(_UNPARSED_JSON) and \
                    (problem := json_problem(data, limits.max_json_depth)):
                self.fail(name, problem)
                data = None
        self.contents.members[name] = Member(name, h.hexdigest(), n, data, refused and data is None)

    def read_later(self, name: str, size: int, job: Callable[[int], Job]) -> None:
        """Have a worker read and hash an artefact (``job(order)`` says where it lies); finish() records it."""
        assert self.workers is not None
        self.contents.members[name] = Member(name, "", size, None)  # a placeholder: the order of members stays
        self.later[name] = size
        self.workers.submit(job(len(self.later)))

    def finish(self, *, abort: bool = False) -> None:
        """Wait for the workers and record what they found (``abort``: stop them, record nothing)."""
        workers, self.workers = self.workers, None
        if workers is None:
            return
        results = workers.close(abort=abort)
        if abort:
            return
        for _, name, hexd, n, problem in results:
            if problem is not None:
                self.fail(name, problem)
                del self.contents.members[name]
                continue
            if n != self.later[name]:
                self.fail(name, f"holds {n} bytes, its header says {self.later[name]}")
            self.contents.members[name] = Member(name, hexd, n, None)
        self.later = {}


def _not_a_bundle(path: Path, detail: str = "neither a directory nor a tar or gzip-compressed tar archive") -> InputError:
    return InputError(f"{path} is not a bundle: {detail}",
                      hint="pass the .tar.gz, .tar or directory that `affidavit export` wrote")


# -- tar and gzip -------------------------------------------------------------------------------
BLOCK = 512
MAX_EXTENSION_BYTES = 64 << 10  # one pax or GNU long-name header's data (paths, sizes: a few hundred bytes)
MAX_EXTENSIONS = 8  # extension headers in a row, before one member
_TRAILER = 1 << 20  # of a gzip stream after the tar's end: read to check the gzip CRC
_ZERO_BLOCK = bytes(BLOCK)
_OCTAL = re.compile(rb"[0-7]+\Z")
_DIGITS = re.compile(rb"[0-9]{1,20}\Z")
_REGULAR_TYPES = (b"0", b"\0", b"7")
_EXTENSION_TYPES = (b"x", b"g", b"L", b"K")
_REFUSED_TYPES = {b"1": "hard link", b"2": "symbolic link", b"3": "device file", b"4": "device file",
                  b"6": "FIFO"}
_OTHER_COMPRESSION = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


class _GzipSource:
    """A gzip file's decompressed bytes, at most CHUNK_SIZE at a time (a bomb never fills memory).

    The compressed input goes in growing pieces (512 bytes first): zlib reports damage only for a whole
    piece, so small first pieces let the members before the damage be read (INVALID, not "not a bundle").
    """

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.inflate = zlib.decompressobj(31)
        self.piece = BLOCK

    def _read(self) -> bytes:
        data = self.f.read(self.piece)
        self.piece = min(self.piece * 2, 1 << 18)
        return data

    def chunk(self) -> bytes:
        while True:
            d = self.inflate
            if d.unconsumed_tail:
                out = d.decompress(d.unconsumed_tail, CHUNK_SIZE)
            elif d.eof:  # a gzip file may hold several members; anything else after the last is ignored
                rest = d.unused_data if len(d.unused_data) >= 2 else d.unused_data + self._read()
                if not rest.startswith(b"\x1f\x8b"):
                    return b""
                self.inflate = zlib.decompressobj(31)
                out = self.inflate.decompress(rest, CHUNK_SIZE)
            else:
                data = self._read()
                if not data:
                    raise _Corrupt("the gzip stream is truncated")
                out = d.decompress(data, CHUNK_SIZE)
            if out:
                return out


_READ_AHEAD = 2 * BLOCK  # a member's padding (< 512 bytes) and the next header


class _Cursor:
    """A tar stream: headers as bytes, members' data streamed, or (in a plain file) passed over.

    A plain file is read by offset, at most :data:`_READ_AHEAD` bytes further than asked (a
    member's padding and the next header come in one read), so passing over a member that a worker
    reads (by its offset too) costs next to nothing; a gzip stream comes in decompressed chunks.
    """

    def __init__(self, f: IO[bytes], gz: _GzipSource | None, path: Path) -> None:
        self.fd, self.gz, self.path = f.fileno(), gz, str(path)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)  # workers open the file by path: they check it is this one
        self.buf = memoryview(bytearray(CHUNK_SIZE if gz is None else 0))
        self.view = memoryview(b"")
        self.pos = 0
        self.offset = 0  # bytes consumed (in a plain file: where the next byte is)

    def _refill(self, want: int) -> int:
        if self.gz is not None:
            self.view = memoryview(self.gz.chunk())
        else:
            self.view = self.buf[:os.preadv(self.fd, [self.buf[:min(max(want, _READ_AHEAD), len(self.buf))]],
                                            self.offset)]
        self.pos = 0
        return len(self.view)

    def pipe(self, n: int, sink: Sink | None) -> int:
        """Pass the next ``n`` bytes to ``sink`` (None: skip them); how many there were before the end.
        The views are only valid during the call."""
        done = 0
        while done < n:
            if self.pos == len(self.view) and not self._refill(n - done):
                break
            step = min(len(self.view) - self.pos, n - done)
            if sink is not None:
                sink(self.view[self.pos:self.pos + step])
            self.pos += step
            done += step
            self.offset += step
        return done

    def pass_over(self, n: int) -> int:
        """In a plain file, the offset of the next ``n`` bytes, which are passed over (read ahead or not)."""
        assert self.gz is None
        start = self.offset
        if n >= len(self.view) - self.pos:
            self.pos = len(self.view)  # the rest of what was read ahead, and on from there unread
        else:
            self.pos += n
        self.offset += n
        return start

    def take(self, n: int) -> bytes:
        if self.pos == len(self.view) and self.gz is None:  # nothing buffered: one read, with the read-ahead
            self._refill(n)
        if self.pos + n <= len(self.view):  # the usual case: a header, a padding
            data = bytes(self.view[self.pos:self.pos + n])
            self.pos += n
            self.offset += n
            return data
        parts: list[bytes] = []
        self.pipe(n, lambda v: parts.append(bytes(v)))
        return b"".join(parts)


@dataclass
class _Header:
    name: str
    kind: bytes
    size: int
    linkname: str


def _number(raw: bytes, what: str) -> int:
    if raw[:1] == b"\xff":
        raise _Corrupt(f"negative {what} in a header")
    if raw[:1] == b"\x80":  # GNU base-256, for numbers octal cannot hold
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not _OCTAL.match(text):
        raise _Corrupt(f"the {what} field of a header is not an octal number")
    return int(text, 8)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_header(block: bytes) -> _Header | None:
    """A tar header block (None for the end-of-archive zero block)."""
    if block == _ZERO_BLOCK:
        return None
    stored = _number(block[148:156], "checksum")
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    if stored != unsigned and stored != 256 + sum(struct.unpack("148b8x356b", block)):
        raise _Corrupt("a header's checksum does not match")
    name = _text(block[:100])
    if block[257:263] == b"ustar\0":  # POSIX ustar: the name may continue in the prefix field
        prefix = _text(block[345:500])
        name = f"{prefix}/{name}" if prefix else name
    kind = block[156:157]
    if kind == b"\0" and name.endswith("/"):
        kind = b"5"  # an old-style directory
    return _Header(name, kind, _number(block[124:136], "size"), _text(block[157:257]))


def _pax_records(data: bytes) -> dict[str, bytes]:
    """The "<length> <key>=<value>\\n" records of a pax header (linear; _Corrupt when malformed)."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        length = int(data[pos:space]) if space > pos and _DIGITS.match(data[pos:space]) else 0
        end = pos + length
        if length < space - pos + 4 or end > len(data) or data[end - 1] != 0x0A:
            raise _Corrupt("a pax header's records are malformed")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq or not key:
            raise _Corrupt("a pax header's records are malformed")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return records


def _apply(header: _Header, records: dict[str, bytes]) -> None:
    if "path" in records:
        header.name = records["path"].decode("utf-8", "surrogateescape")
    if "linkpath" in records:
        header.linkname = records["linkpath"].decode("utf-8", "surrogateescape")
    if "size" in records:
        if not _DIGITS.match(records["size"]):
            raise _Corrupt("a pax header's size is not a number")
        header.size = int(records["size"])


def _read_extension(cursor: _Cursor, reader: _Reader, header: _Header) -> bytes:
    if header.size > MAX_EXTENSION_BYTES:
        raise _Stop(ARCHIVE, f"a tar extension header of {header.size} bytes (more than {MAX_EXTENSION_BYTES}) "
                             "refused; the rest was not read (limit)")
    reader.charge(ARCHIVE, header.size)
    data = cursor.take(header.size)
    if len(data) < header.size:
        raise _Corrupt("the archive ends inside an extension header")
    _padding(cursor, header.size, "an extension header")
    return data


def _padding(cursor: _Cursor, size: int, what: str) -> None:
    """Skip the zeros that fill a member's last block; anything else means its size is wrong."""
    if not size % BLOCK:
        return
    padding = cursor.take(-size % BLOCK)
    if len(padding) < -size % BLOCK:
        raise _Corrupt(f"the archive ends inside {what}")
    if padding.count(0) != len(padding):
        raise _Corrupt(f"the block after {what} is not padded with zeros: its header's size is wrong")


def _member_problem(header: _Header) -> str:
    what = _REFUSED_TYPES.get(header.kind)
    if what in ("hard link", "symbolic link"):
        return f"{what} (to {header.linkname!r}) refused: {REGULAR_ONLY}"
    if what is not None:
        return f"{what} refused: {REGULAR_ONLY}"
    return f"member of type {header.kind.decode('latin-1')!r} refused: {REGULAR_ONLY}"


def _read_tar_stream(cursor: _Cursor, reader: _Reader) -> None:
    """Every entry up to the end-of-archive marker (raises _Corrupt, _Stop)."""
    global_records: dict[str, bytes] = {}
    records: dict[str, bytes] = {}
    extensions = 0
    while True:
        block = cursor.take(BLOCK)
        if len(block) < BLOCK:
            raise _Corrupt("the archive ends inside a header" if block else
                           "the archive ends without its end-of-archive marker")
        header = _parse_header(block)
        if header is None:
            return
        if header.kind in _EXTENSION_TYPES:
            extensions += 1
            if extensions > MAX_EXTENSIONS:
                raise _Corrupt(f"more than {MAX_EXTENSIONS} extension headers in a row")
            data = _read_extension(cursor, reader, header)
            if header.kind in (b"x", b"g"):
                (records if header.kind == b"x" else global_records).update(_pax_records(data))
            else:
                records["path" if header.kind == b"L" else "linkpath"] = data.split(b"\0", 1)[0]
            continue
        if header.kind == b"S":
            raise _Stop(header.name, "GNU sparse member refused; the rest of the archive was not read")
        if global_records or records:
            _apply(header, {**global_records, **records})
            records = {}
        extensions = 0
        size = 0 if header.kind in _REFUSED_TYPES or header.kind == b"5" else header.size  # bytes that follow
        name = reader.admit(header.name, header.kind == b"5", size)
        done = 0
        if name is not None and header.kind != b"5":
            if header.kind in _REGULAR_TYPES:
                def pipe(sink: Sink) -> int:
                    nonlocal done
                    done = cursor.pipe(size, sink)
                    return done

                if reader.workers is not None and cursor.gz is None and not is_metadata(name):
                    reader.read_later(name, size, functools.partial(SliceJob, name=name, path=cursor.path,
                                                                    identity=cursor.identity,
                                                                    offset=cursor.pass_over(size), size=size))
                    done = size
                else:
                    reader.read(name, size, pipe)
            else:
                reader.fail(name, _member_problem(header))
        rest = size - done
        if rest and cursor.pipe(rest, None) < rest:
            raise _Corrupt(f"the archive ends inside member {header.name!r}")
        _padding(cursor, size, f"member {header.name!r}")


def _read_tar(path: Path, reader: _Reader) -> None:
    try:
        f = path.open("rb", buffering=0)
    except OSError as e:
        raise InputError(f"cannot read bundle {path}: {e.strerror}") from None
    with f:
        _read_tar_file(path, f, reader)


def _read_tar_file(path: Path, f: IO[bytes], reader: _Reader) -> None:
    magic = f.read(6)
    f.seek(0)
    for prefix, name in _OTHER_COMPRESSION.items():
        if magic.startswith(prefix):
            raise _not_a_bundle(path, f"it is compressed with {name}; a bundle is a tar, gzip-compressed or not")
    gz = magic.startswith(b"\x1f\x8b")
    reader.contents.kind = "tar.gz" if gz else "tar"
    if not gz and reader.workers is not None:
        reader.workers.expect(os.fstat(f.fileno()).st_size)
    cursor = _Cursor(f, _GzipSource(f) if gz else None, path)
    try:
        _read_tar_stream(cursor, reader)
        if gz:
            cursor.pipe(_TRAILER, None)  # the rest of the gzip stream, up to its CRC (zlib checks it)
    except _Stop as stop:
        reader.contents.failures.append(stop.failure)
    except (_Corrupt, zlib.error, OSError) as e:
        if reader.count == 0:
            raise _not_a_bundle(path) from None
        reader.fail(ARCHIVE, f"the archive is truncated or corrupt at byte {cursor.offset} of its tar stream ({e})")


# -- directories ---------------------------------------------------------------------------------
def _read_dir(root: Path, reader: _Reader) -> None:
    """Walk a directory bundle (never following a symlink), breadth-first and sorted."""
    folders: deque[tuple[str, str]] = deque([(str(root), "")])
    buf = memoryview(bytearray(CHUNK_SIZE))  # for the members read on this thread
    try:
        while folders:
            folder, prefix = folders.popleft()
            try:
                entries = _listing(folder, reader.limits.max_members - reader.count, reader.limits.max_members)
            except OSError as e:
                reader.fail(prefix.rstrip("/") or ARCHIVE, f"cannot list directory: {e.strerror}")
                continue
            for entry in entries:
                try:
                    is_dir, is_link = entry.is_dir(follow_symlinks=False), entry.is_symlink()
                    is_file = entry.is_file(follow_symlinks=False)
                except OSError as e:
                    reader.fail(prefix + entry.name, f"cannot read: {e.strerror}")
                    continue
                name = reader.admit(prefix + entry.name, is_dir)
                if name is None:
                    continue
                if is_link:
                    reader.fail(name, f"symbolic link (to {_link_target(entry.path)!r}) refused: {REGULAR_ONLY}")
                elif is_dir:
                    folders.append((entry.path, name + "/"))
                elif is_file and reader.workers is not None and not is_metadata(name):
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except OSError as e:
                        reader.fail(name, f"cannot read: {e.strerror}")
                        continue
                    reader.charge(name, size)
                    reader.read_later(name, size, functools.partial(FileJob, name=name, path=entry.path, size=size))
                elif is_file:
                    _read_file(reader, name, entry.path, buf)
                else:
                    reader.fail(name, NOT_REGULAR)
    except _Stop as stop:
        reader.contents.failures.append(stop.failure)


def _listing(folder: str, room: int, limit: int) -> list[os.DirEntry[str]]:
    """A directory's entries, sorted; _Stop as soon as there are more than ``room`` (a huge one is never all
    in memory)."""
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            entries.append(entry)
            if len(entries) > room:
                raise _Stop(ARCHIVE, f"more than {limit} members; the rest was not read (limit)")
    return sorted(entries, key=lambda e: e.name)


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _read_file(reader: _Reader, name: str, path: str, buf: memoryview) -> None:
    """Hash one file, opened without following a link or blocking on a FIFO swapped in since the listing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        reader.fail(name, f"cannot read: {e.strerror}")
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            reader.fail(name, NOT_REGULAR)
            return
        reader.charge(name, st.st_size)

        def pipe(sink: Sink) -> int:
            total, most = 0, st.st_size + 1  # one byte more: a file that grew since its fstat shows
            while total < most:
                n = os.readv(fd, [buf[:min(len(buf), most - total)]])
                if not n:
                    break
                sink(buf[:n])
                total += n
            return total

        reader.read(name, st.st_size, pipe)
    except OSError as e:
        reader.fail(name, f"cannot read: {e.strerror}")
    finally:
        os.close(fd)


class BundleReading:
    """A bundle being read: its metadata members are in ``contents``; its artefacts are still being hashed
    (their members hold an empty digest) until :meth:`finish`, which must be called (``with`` does it)."""

    def __init__(self, contents: BundleContents, reader: _Reader) -> None:
        self.contents, self._reader = contents, reader

    def finish(self) -> BundleContents:
        """Wait for every artefact's digest (and the failures reading them found); the contents."""
        self._reader.finish()
        return self.contents

    def __enter__(self) -> BundleReading:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # an interrupt or a bug: do not wait for the hashing to end
            self._reader.finish(abort=True)
        self.finish()


def read_bundle(
    path: Path, *, limits: ReadLimits = ReadLimits(), progress: Callable[[int], None] | None = None,
    process_after: int | None = PROCESS_AFTER,
) -> BundleContents:
    """Read every member of a bundle in one pass (raises InputError if ``path`` is not a bundle at all)."""
    with open_bundle(path, limits=limits, progress=progress, process_after=process_after) as reading:
        pass
    return reading.contents


def open_bundle(
    path: Path, *, limits: ReadLimits = ReadLimits(), progress: Callable[[int], None] | None = None,
    process_after: int | None = PROCESS_AFTER,
) -> BundleReading:
    """Start reading a bundle: returns once every member is listed and the metadata is read, while
    workers go on hashing the artefacts (raises InputError if ``path`` is not a bundle at all).

    ``process_after``: bytes of artefacts hashed on threads before worker processes take the rest
    (None: threads only), see :mod:`affidavit.signing.member_hash`."""
    if path.is_dir():
        contents = BundleContents(path, "directory")
    elif not path.exists():
        raise InputError(f"bundle {path} does not exist", hint="check the path")
    elif not path.is_file():
        raise _not_a_bundle(path)
    else:
        contents = BundleContents(path, "tar")
    hasher = Hasher(_worker_count(), progress=progress, process_after=process_after)
    reader = _Reader(contents, limits, progress, hasher)
    try:
        _read_dir(path, reader) if contents.kind == "directory" else _read_tar(path, reader)
    except BaseException:
        reader.finish(abort=True)
        raise
    return BundleReading(contents, reader)


def _worker_count() -> int:
    """Threads that read and hash artefacts: one per CPU this process may use, up to 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))
