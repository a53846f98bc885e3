"""Bundle containers: safe, streaming reading of a bundle and deterministic writing of one.

A bundle is a .tar.gz / .tar archive (recognised by its content, not its name)
or a directory. Reading is one streaming pass: each regular member is hashed
(and kept in memory only if it is small metadata). Anything a hostile archive
could use against the reader (absolute or escaping paths, links, devices,
FIFOs, duplicate names, oversized content) becomes a :class:`Failure` naming
the member, never an exception. Writing is deterministic (fixed order and
headers) and atomic (a temporary name renamed at the end).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

from affidavit.errors import InputError, UsageError
from affidavit.signing.hashing import CHUNK_SIZE, sha256_stream

BundleKind = Literal["tar.gz", "tar", "directory"]
Progress = Callable[[int], None] | None
ARCHIVE = "(archive)"  # the member name of a failure about the archive as a whole
_METADATA_NAMES = ("manifest.json", "SHA256SUMS", "README.md")
_METADATA_SUFFIXES = (".json", ".sig", ".pem")
_REGULAR_ONLY = "a bundle holds regular files only"
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class Failure:
    """One reason a bundle is not valid, about one member (or the archive)."""

    member: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"member": self.member, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.member}: {self.reason}"


@dataclass(frozen=True)
class ReadLimits:
    max_members: int = 1_000_000
    max_total_bytes: int = 64 << 30
    max_metadata_bytes: int = 64 << 20


@dataclass(frozen=True)
class Member:
    name: str
    sha256: str
    size: int
    data: bytes | None  # the bytes of a small metadata member; None for artefacts


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
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":" and raw[0].isalpha()):
        return raw, "path is absolute"
    parts = raw.split("/")
    while parts and parts[0] == ".":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    if ".." in parts or any(".." in p.split("\\") for p in parts):
        return raw, "path escapes the bundle"
    if any(p in ("", ".") for p in parts) or "\\" in raw or "\x00" in raw:
        return raw, "path is not in plain form (empty or '.' components, or backslashes)"
    return "/".join(parts), None


class _Reader:
    def __init__(self, contents: BundleContents, limits: ReadLimits, progress: Callable[[int], None] | None) -> None:
        self.contents, self.limits, self.progress = contents, limits, progress
        self.seen: set[str] = set()
        self.count = 0
        self.total = 0

    def fail(self, member: str, reason: str) -> None:
        self.contents.failures.append(Failure(member, reason))

    def admit(self, raw: str, is_dir: bool) -> str | None:
        """Check a member's name, the count limit and duplicates; the name to use, or None to skip it."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise _Stop(ARCHIVE, f"more than {self.limits.max_members} members; the rest was not read (limit)")
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

    def read(self, name: str, size: int, stream: BinaryIO) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise _Stop(name, f"the bundle expands to more than {self.limits.max_total_bytes} bytes; stopped (limit)")
        keep = is_metadata(name)
        if keep and size > self.limits.max_metadata_bytes:
            self.fail(name, f"metadata member larger than {self.limits.max_metadata_bytes} bytes (limit)")
            keep = False
        if keep:
            data = stream.read(size + 1)
            hexd, n = hashlib.sha256(data).hexdigest(), len(data)
            if self.progress is not None:
                self.progress(n)
        else:
            progress = self.progress
            hexd, n = sha256_stream(stream, (lambda c: progress(len(c))) if progress is not None else None)
            data = None
        if n != size:
            self.fail(name, f"holds {n} bytes, its header says {size}")
        self.contents.members[name] = Member(name, hexd, n, data)


class _Stop(Exception):
    def __init__(self, member: str, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(member, reason)


def _not_a_bundle(path: Path) -> InputError:
    return InputError(
        f"{path} is not a bundle: neither a directory nor a tar or gzip-compressed tar archive",
        hint="pass the .tar.gz, .tar or directory that `affidavit export` wrote",
    )


def _read_tar(path: Path, reader: _Reader) -> None:
    try:
        f = path.open("rb")
    except OSError as e:
        raise InputError(f"cannot read bundle {path}: {e.strerror}") from None
    with f:
        try:
            tf = tarfile.open(fileobj=f, mode="r|*")
        except _ARCHIVE_ERRORS:
            raise _not_a_bundle(path) from None
        reader.contents.kind = "tar.gz" if getattr(tf.fileobj, "comptype", "tar") != "tar" else "tar"
        current = ARCHIVE
        try:
            for info in tf:
                current = info.name
                name = reader.admit(info.name, info.isdir())
                if name is None or info.isdir():
                    continue
                if info.issym():
                    reader.fail(name, f"symbolic link (to {info.linkname!r}) refused: {_REGULAR_ONLY}")
                elif info.islnk():
                    reader.fail(name, f"hard link (to {info.linkname!r}) refused: {_REGULAR_ONLY}")
                elif info.ischr() or info.isblk():
                    reader.fail(name, f"device file refused: {_REGULAR_ONLY}")
                elif info.isfifo():
                    reader.fail(name, f"FIFO refused: {_REGULAR_ONLY}")
                elif not info.isreg():
                    reader.fail(name, f"member of type {info.type!r} refused: {_REGULAR_ONLY}")
                else:
                    stream = tf.extractfile(info)
                    assert stream is not None  # a regular member always has one
                    reader.read(name, info.size, stream)  # type: ignore[arg-type]
                current = ARCHIVE
        except _Stop as stop:
            reader.contents.failures.append(stop.failure)
        except _ARCHIVE_ERRORS as e:
            if reader.count == 0:
                raise _not_a_bundle(path) from None
            reader.fail(current, f"the archive is truncated or corrupt here ({e})")


def _read_dir(root: Path, reader: _Reader) -> None:
    """Walk a directory bundle (never following a symlink), breadth-first and sorted."""
    folders: list[tuple[Path, str]] = [(root, "")]
    try:
        while folders:
            folder, prefix = folders.pop(0)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as e:
                reader.fail(prefix.rstrip("/") or ARCHIVE, f"cannot list directory: {e.strerror}")
                continue
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                name = reader.admit(prefix + entry.name, stat.S_ISDIR(st.st_mode))
                if name is None:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    reader.fail(name, f"symbolic link (to {os.readlink(entry.path)!r}) refused: {_REGULAR_ONLY}")
                elif stat.S_ISDIR(st.st_mode):
                    folders.append((Path(entry.path), name + "/"))
                elif stat.S_ISREG(st.st_mode):
                    _read_file(reader, name, entry.path, st.st_size)
                else:
                    reader.fail(name, f"not a regular file (device, FIFO or socket) refused: {_REGULAR_ONLY}")
    except _Stop as stop:
        reader.contents.failures.append(stop.failure)


def _read_file(reader: _Reader, name: str, path: str, size: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        reader.fail(name, f"cannot read: {e.strerror}")
        return
    with os.fdopen(fd, "rb") as f:
        reader.read(name, size, f)


def read_bundle(
    path: Path, *, limits: ReadLimits = ReadLimits(), progress: Callable[[int], None] | None = None
) -> BundleContents:
    """Read every member of a bundle in one pass (raises InputError if ``path`` is not a bundle at all)."""
    if path.is_dir():
        contents = BundleContents(path, "directory")
        _read_dir(path, _Reader(contents, limits, progress))
        return contents
    if not path.exists():
        raise InputError(f"bundle {path} does not exist", hint="check the path")
    if not path.is_file():
        raise _not_a_bundle(path)
    contents = BundleContents(path, "tar")
    _read_tar(path, _Reader(contents, limits, progress))
    return contents


def bundle_kind(out: Path | str) -> BundleKind:
    """The bundle form ``out`` asks for: by its suffix, else a directory."""
    text = str(out)
    lower = text.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lower.endswith(".tar"):
        return "tar"
    if text.endswith(("/", os.sep)) or Path(text).is_dir() or not Path(text).suffix:
        return "directory"
    raise UsageError(
        f"cannot tell which bundle form {text!r} asks for",
        hint="end the name in .tar.gz, .tgz or .tar, or give a directory path ending in /",
    )


class _HashingReader:
    """Reads a blob for tarfile, hashing what passes and refusing short reads."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self.raw, self.progress = raw, progress
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        want = size
        while want != 0:
            data = self.raw.read(want if want > 0 else CHUNK_SIZE)
            if not data:
                break
            parts.append(data)
            if want > 0:
                want -= len(data)
        out = b"".join(parts)
        self.hash.update(out)
        self.count += len(out)
        if self.progress is not None and out:
            self.progress(len(out))
        return out


class _HashingWriter:
    """The archive file as tarfile/gzip see it: hashes every byte written."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.count += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self.f.flush()


class BundleSink:
    """Where members go, in order; records (name, sha256 hex) of each."""

    kind: BundleKind

    def __init__(self, out: Path, created: datetime) -> None:
        self.out = out
        self.mtime = int(created.timestamp())
        self.tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
        self.digests: list[tuple[str, str]] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def add_stream(self, name: str, size: int, stream: BinaryIO, progress: Progress) -> tuple[str, int]:
        """Copy a stream of (supposedly) ``size`` bytes; return the (hex, byte count) actually seen."""
        raise NotImplementedError

    def commit(self) -> tuple[Path, str | None]:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _TarSink(BundleSink):
    def __init__(self, out: Path, created: datetime, gz: bool) -> None:
        super().__init__(out, created)
        self.kind = "tar.gz" if gz else "tar"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.tmp.open("xb")
        self.writer = _HashingWriter(self.file)
        target: Any = self.writer
        self.gz: gzip.GzipFile | None = None
        if gz:
            self.gz = target = gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=target, mtime=self.mtime)
        self.tar = tarfile.TarFile(fileobj=target, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK_SIZE)

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self.mtime, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self.digests.append((name, hashlib.sha256(data).hexdigest()))

    def add_stream(self, name: str, size: int, stream: BinaryIO, progress: Progress) -> tuple[str, int]:
        reader = _HashingReader(stream, progress)
        try:
            self.tar.addfile(self._info(name, size), reader)
        except OSError:
            if reader.count < size:  # the blob is shorter than its statement says
                return reader.hash.hexdigest(), reader.count
            raise
        if reader.read(1):  # longer than its statement says
            return reader.hash.hexdigest(), reader.count
        self.digests.append((name, reader.hash.hexdigest()))
        return reader.hash.hexdigest(), reader.count

    def commit(self) -> tuple[Path, str | None]:
        self.tar.close()
        if self.gz is not None:
            self.gz.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.out)
        return self.out, self.writer.hash.hexdigest()

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class _DirSink(BundleSink):
    kind: BundleKind = "directory"

    def __init__(self, out: Path, created: datetime) -> None:
        super().__init__(out, created)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"{out} already exists and is not an empty directory", hint="choose a new bundle path")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()

    def _open(self, name: str) -> BinaryIO:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("xb")

    def add_bytes(self, name: str, data: bytes) -> None:
        with self._open(name) as f:
            f.write(data)
        self.digests.append((name, hashlib.sha256(data).hexdigest()))

    def add_stream(self, name: str, size: int, stream: BinaryIO, progress: Progress) -> tuple[str, int]:
        def copy(chunk: memoryview) -> None:
            f.write(chunk)
            if progress is not None:
                progress(len(chunk))

        with self._open(name) as f:
            hexd, n = sha256_stream(stream, copy)
        if n == size:
            self.digests.append((name, hexd))
        return hexd, n

    def commit(self) -> tuple[Path, str | None]:
        if self.out.is_dir():
            self.out.rmdir()  # empty, checked when the sink opened
        os.replace(self.tmp, self.out)
        return self.out, None

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_sink(out: Path | str, created: datetime) -> BundleSink:
    """A writer for the bundle form ``out`` asks for (raises UsageError if it cannot tell)."""
    kind = bundle_kind(out)
    path = Path(out).absolute()
    if kind == "directory":
        return _DirSink(path, created)
    return _TarSink(path, created, gz=kind == "tar.gz")


