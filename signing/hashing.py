"""Streaming SHA-256 in constant memory.

hashlib's SHA-256 is OpenSSL's (with the CPU's SHA extensions where present)
and releases the GIL on large updates; reading into one reused 1 MiB buffer
keeps memory flat whatever the input size and the per-call overhead negligible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1 << 20


def sha256_stream(stream: BinaryIO, sink: Callable[[memoryview], object] | None = None) -> tuple[str, int]:
    """Hash a binary stream to its end; return (lowercase hex, byte count).

    ``sink``, if given, receives every chunk as it is read (to copy while hashing).
    """
    h = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    total = 0
    readinto = getattr(stream, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(view)
            if not n:
                break
            chunk = view[:n]
        else:  # pragma: no cover - every stream we open has readinto
            data = stream.read(CHUNK_SIZE)
            if not data:
                break
            n = len(data)
            chunk = memoryview(data)
        h.update(chunk)
        if sink is not None:
            sink(chunk)
        total += n
    return h.hexdigest(), total


def sha256_file(path: Path) -> tuple[str, int]:
    """Hash a file by streaming it; return (lowercase hex, size)."""
    with path.open("rb", buffering=0) as f:
        return sha256_stream(f)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
