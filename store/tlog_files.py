"""Low-level files of the transparency log: fixed-width record files, atomic writes, node positions."""

from __future__ import annotations

import os
from pathlib import Path

from affidavit.errors import StoreError
from affidavit.signing.atomic import fsync_dir, write_atomically

DAMAGED_HINT = "restore the store's log/ folder from a backup; `affidavit store fsck` shows what else is affected"


class Column:
    """A file of fixed-width records, read with pread and appended to at its end."""

    def __init__(self, path: Path, width: int, writable: bool) -> None:
        self.path, self.width = path, width
        flags = (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY
        self.fd = os.open(path, flags, 0o644)

    def count(self) -> int:
        return os.fstat(self.fd).st_size // self.width

    def read(self, index: int) -> bytes:
        data = os.pread(self.fd, self.width, index * self.width)
        if len(data) != self.width:
            raise StoreError(f"{self.path} is shorter than the log's checkpoint says", hint=DAMAGED_HINT)
        return data

    def read_many(self, count: int) -> bytes:
        data = os.pread(self.fd, count * self.width, 0) if count else b""
        if len(data) != count * self.width:
            raise StoreError(f"{self.path} is shorter than the log's checkpoint says", hint=DAMAGED_HINT)
        return data

    def append(self, index: int, data: bytes) -> None:
        os.pwrite(self.fd, data, index * self.width)

    def truncate(self, count: int) -> None:
        os.ftruncate(self.fd, count * self.width)

    def close(self) -> None:
        os.close(self.fd)


def node_position(level: int, index: int) -> int:
    """Where the perfect subtree (level >= 1, index) sits in nodes.bin."""
    c = (index + 1) << level
    return (c - 1) - (c - 1).bit_count() + (level - 1)


def internal_nodes(size: int) -> int:
    """How many perfect internal subtrees a log of ``size`` leaves has completed."""
    return size - size.bit_count()
