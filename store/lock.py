"""The store lock: one collection commits to a store at a time.

An exclusive ``fcntl.flock`` on ``<root>/lock``, polled until a timeout. flock
belongs to an open file description, so two handles in one process exclude
each other just as two processes do. The holder writes its pid into the file
so a refused caller can say who holds it. One :class:`StoreLock` is
re-entrant (nested ``hold`` blocks, from the thread that holds it, share the
one flock).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from affidavit.errors import StoreError, StoreLockedError

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between attempts while another holder has the lock


class StoreLock:
    """The lock of the store at ``root`` (file ``<root>/lock``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "lock"
        self._mutex = threading.RLock()  # serialises threads sharing this object
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Hold the lock for the block; raise StoreLockedError after ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._mutex.acquire(timeout=max(0.0, timeout)):
            raise self._busy(os.getpid())
        try:
            if self._depth == 0:
                self._acquire(deadline)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()
        finally:
            self._mutex.release()

    def _acquire(self, deadline: float) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"cannot open the store lock {self.path}: {e.strerror}") from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._busy(_holder_pid(fd)) from None
                    time.sleep(min(POLL_INTERVAL, remaining))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        logger.debug("took the lock of store %s", self.root)

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:  # pragma: no cover - _depth bookkeeping guarantees a descriptor
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        logger.debug("released the lock of store %s", self.root)

    def _busy(self, pid: int | None) -> StoreLockedError:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        return StoreLockedError(
            f"store {self.root} is busy: another collection ({who}) holds its lock",
            hint="wait for it to finish or raise store.lock_timeout",
        )


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
