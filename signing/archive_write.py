"""Writing a bundle: a .tar.gz, .tar or directory, deterministic and atomic.

The reading side (and the format's rules) is :mod:`affidavit.signing.archive`.
Members are written in the order given, with fixed headers (owner, mode, time),
so the same evidence gives the same bytes; an archive is written under a
temporary name and renamed when complete, a directory is assembled next to its
final name and renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from affidavit.errors import UsageError
from affidavit.signing.archive import BundleKind, Progress
from affidavit.signing.hashing import CHUNK_SIZE, sha256_stream


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


