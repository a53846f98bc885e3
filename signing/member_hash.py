"""Hashing a bundle's artefacts where they lie, off the verifier's main thread.

The verifier's main thread lists the members, reads the metadata and checks
signatures, statements and proofs, all Python; the artefacts' bytes only need
hashing. Threads would share the interpreter lock with that Python work: a
hashing thread needs the lock back after every read and every hash call, and
two of them hashed a hundred times fewer files while the main thread was busy
than while it slept. So a
:class:`Hasher` starts on threads (cheap for a small bundle) and, once more
than ``process_after`` bytes have been handed to it, sends the rest in
batches to worker processes, which the main thread's work cannot hold up.
Should a process fail (killed, or none can start), its batch is hashed on the
calling thread instead: the result is the same, only later.

A job names where its bytes lie: a file of a directory bundle (opened without
following links or blocking on a FIFO, read to one byte past its listed size
so a file that grew shows) or a stretch of a plain tar (opened by path, and
refused if the path no longer names the file whose headers were parsed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import stat
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import IO, Any, NamedTuple

from affidavit.signing.hashing import CHUNK_SIZE

log = logging.getLogger(__name__)

Result = tuple[int, str, str, int, str | None]  # (order, name, sha256 hex, bytes read, why it could not be read)
REGULAR_ONLY = "a bundle holds regular files only"
NOT_REGULAR = f"not a regular file (device, FIFO or socket) refused: {REGULAR_ONLY}"
PROCESS_AFTER = 8 << 20  # bytes hashed on threads before worker processes take over
_BATCH_JOBS = 256  # jobs per batch sent to a process
_BATCH_BYTES = 16 << 20  # or fewer, once their sizes add up to this
_THREAD_BATCH = 32  # jobs per batch queued to a thread
NICE = 10  # worker processes run at a lower priority, taking the CPU the verifier's main thread leaves


class FileJob(NamedTuple):  # tuples: ten thousand of them are made while the verifier waits
    """A file of a directory bundle, ``size`` bytes when it was listed."""

    order: int
    name: str
    path: str
    size: int


class SliceJob(NamedTuple):
    """``size`` bytes at ``offset`` of the plain tar at ``path``, whose (st_dev, st_ino) is ``identity``."""

    order: int
    name: str
    path: str
    identity: tuple[int, int]
    offset: int
    size: int


Job = FileJob | SliceJob


class _Tars:
    """The tar files one worker has open (each opened once, and checked to be the one parsed)."""

    def __init__(self) -> None:
        self.fds: dict[tuple[str, tuple[int, int]], int | str] = {}  # (path, identity) -> fd, or why not

    def fd(self, job: SliceJob) -> int | str:
        found = self.fds.get((job.path, job.identity))
        if found is None:
            try:
                fd = os.open(job.path, os.O_RDONLY)
            except OSError as e:
                found = f"cannot read the archive: {e.strerror}"
            else:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != job.identity:
                    os.close(fd)
                    found = "the archive was replaced while it was being read"
                else:
                    found = fd
            self.fds[(job.path, job.identity)] = found
        return found

    def close(self) -> None:
        for fd in self.fds.values():
            if isinstance(fd, int):
                os.close(fd)
        self.fds = {}


def _hash_file(job: FileJob, buf: memoryview) -> Result:
    try:
        fd = os.open(job.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        return job.order, job.name, "", 0, f"cannot read: {e.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO or device since the listing
            return job.order, job.name, "", 0, NOT_REGULAR
        h, total, most = hashlib.sha256(), 0, job.size + 1
        while total < most:  # one byte more than its size: a file that grew since it was listed shows
            n = os.readv(fd, [buf[:min(len(buf), most - total)]])
            if not n:
                break
            h.update(buf[:n])
            total += n
        return job.order, job.name, h.hexdigest(), total, None
    except OSError as e:
        return job.order, job.name, "", 0, f"cannot read: {e.strerror}"
    finally:
        os.close(fd)


def _hash_slice(job: SliceJob, buf: memoryview, tars: _Tars) -> Result:
    fd = tars.fd(job)
    if isinstance(fd, str):
        return job.order, job.name, "", 0, fd
    h, total = hashlib.sha256(), 0
    try:
        while total < job.size:
            n = os.preadv(fd, [buf[:min(len(buf), job.size - total)]], job.offset + total)
            if not n:
                break
            h.update(buf[:n])
            total += n
    except OSError as e:
        return job.order, job.name, "", total, f"cannot read: {e.strerror}"
    return job.order, job.name, h.hexdigest(), total, None


def hash_job(job: Job, buf: memoryview, tars: _Tars) -> Result:
    """Read and hash one member where it lies; never raises (a problem is the result's last field)."""
    try:
        return _hash_file(job, buf) if isinstance(job, FileJob) else _hash_slice(job, buf, tars)
    except Exception as e:  # a worker must never die with jobs queued: the reader would wait forever
        return job.order, job.name, "", 0, f"cannot read: {e}"


def hash_batch(jobs: list[Job]) -> list[Result]:
    """Hash a batch of jobs (what a worker process runs)."""
    buf, tars = memoryview(bytearray(CHUNK_SIZE)), _Tars()
    try:
        return [hash_job(job, buf, tars) for job in jobs]
    finally:
        tars.close()


# -- worker processes --------------------------------------------------------------------------
# A worker is ``python -P -m affidavit.signing.member_hash``: batches of jobs come in on stdin, one
# JSON list a line; each batch's results go out on stdout, one JSON list a line, in order. (Not
# multiprocessing: its "spawn" start re-runs the caller's main script in every child.)


def _job_json(job: Job) -> list[object]:
    return ["file" if isinstance(job, FileJob) else "slice", *job]


def _job_from_json(item: list[Any]) -> Job:
    if item[0] == "file":
        return FileJob(int(item[1]), str(item[2]), str(item[3]), int(item[4]))
    dev, ino = item[4]
    return SliceJob(int(item[1]), str(item[2]), str(item[3]), (int(dev), int(ino)), int(item[5]), int(item[6]))


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The worker process's loop: hash each batch read from ``stdin``, answer on ``stdout``."""
    buf, tars = memoryview(bytearray(CHUNK_SIZE)), _Tars()
    with contextlib.suppress(OSError):  # behind the verifier's own checks: they are on its critical path
        os.nice(NICE)
    try:
        for line in stdin:
            results = [hash_job(_job_from_json(item), buf, tars) for item in json.loads(line)]
            stdout.write(json.dumps(results).encode("utf-8") + b"\n")
            stdout.flush()
    finally:
        tars.close()


class _Process:
    """One worker process, fed by a thread that takes batches from a shared queue while this worker has
    fewer than ``IN_HAND`` (so a slow worker never holds work another could do), read by another thread.
    An answer that does not match its batch job for job ends the worker like a crash would."""

    IN_HAND = 4

    def __init__(self, batches: queue.Queue[list[Job] | None], done: Callable[[list[Result], int], None]) -> None:
        self.batches, self.done = batches, done
        # -P: the working directory (perhaps the bundle being verified) is not put on the import path,
        # so a json.py or hashlib.py there is never imported
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.in_hand: deque[list[Job]] = deque()  # sent, not yet answered (oldest first)
        self.room = threading.Semaphore(self.IN_HAND)
        self.lock = threading.Lock()
        self.failed: list[list[Job]] = []  # batches it took and did not answer
        self.dead = False
        self.threads = [threading.Thread(target=self._send, name="bundle-hash-send", daemon=True),
                        threading.Thread(target=self._receive, name="bundle-hash-receive", daemon=True)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        assert self.proc.stdin is not None
        try:
            while True:
                self.room.acquire()
                batch = self.batches.get()
                if batch is None:
                    self.batches.put(None)  # for the other workers
                    break
                with self.lock:
                    if self.dead:  # for another worker, or for close() to hash
                        self.batches.put(batch)
                        break
                    self.in_hand.append(batch)
                self.proc.stdin.write(json.dumps([_job_json(j) for j in batch]).encode("utf-8") + b"\n")
                self.proc.stdin.flush()
        except (OSError, ValueError):  # the process died: the receiver hands its batches back
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()

    def _receive(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                results = [(int(o), str(n), str(h), int(c), None if p is None else str(p))
                           for o, n, h, c, p in json.loads(line)]
                with self.lock:
                    batch = self.in_hand[0]
                    if [r[0] for r in results] != [j.order for j in batch]:
                        raise ValueError("an answer for another batch")
                    self.in_hand.popleft()
                self.done(results, sum(j.size for j in batch))
                self.room.release()
        except (OSError, ValueError, TypeError, IndexError):
            pass
        finally:
            self.proc.wait()
            with self.lock:
                self.dead = True
                self.failed.extend(self.in_hand)
                self.in_hand.clear()
            self.room.release()  # a sender waiting for room finds the worker dead

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def join(self) -> list[list[Job]]:
        """Wait for the worker to answer everything it took; the batches it did not answer."""
        for t in self.threads:
            t.join()
        return self.failed


class Hasher:
    """Hashes jobs on ``workers`` threads, then (past ``process_after`` bytes) on as many processes.

    ``progress`` receives the bytes of each job once hashed, from a worker
    thread. ``process_after=None`` keeps every job on threads.
    """

    def __init__(self, workers: int, *, progress: Callable[[int], None] | None = None,
                 process_after: int | None = PROCESS_AFTER) -> None:
        self.workers, self.progress, self.process_after = workers, progress, process_after
        self.submitted = 0  # bytes handed over so far
        self._jobs: queue.Queue[list[Job] | None] = queue.Queue()  # not bounded: jobs are small, members capped
        self._batches: queue.Queue[list[Job] | None] = queue.Queue()  # for the processes
        self._results: list[Result] = []
        self._thread_batch: list[Job] = []
        self._process_batch: list[Job] = []
        self._batch_bytes = 0
        self._processes: list[_Process] | None = None
        self._abort = threading.Event()
        self._threads = [threading.Thread(target=self._work, name="bundle-hash", daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        buf, tars = memoryview(bytearray(CHUNK_SIZE)), _Tars()
        try:
            while (batch := self._jobs.get()) is not None:
                for job in batch:
                    if self._abort.is_set():
                        break
                    self._results.append(hash_job(job, buf, tars))
                    if self.progress is not None:
                        self.progress(job.size)
        finally:
            tars.close()

    def _done(self, results: list[Result], size: int) -> None:
        self._results.extend(results)
        if self.progress is not None:
            self.progress(size)

    def _start_processes(self) -> list[_Process]:
        started: list[_Process] = []
        if not sys.executable:  # an embedded interpreter: there is no python to start
            return started
        for _ in range(self.workers):
            try:
                started.append(_Process(self._batches, self._done))
            except (OSError, ValueError):  # no process can start here: the threads take the rest
                break
        return started

    def expect(self, size: int) -> None:
        """About ``size`` bytes are coming (a plain tar's size): start the processes now if they will be needed,
        so that they are ready when the first artefact comes."""
        if self._processes is None and self.process_after is not None and size > self.process_after:
            self._processes = self._start_processes()

    def submit(self, job: Job) -> None:
        self.submitted += job.size
        if self._processes is None and self.process_after is not None and self.submitted > self.process_after:
            self._processes = self._start_processes()
        if self._processes:
            self._process_batch.append(job)
            self._batch_bytes += job.size
            if len(self._process_batch) >= _BATCH_JOBS or self._batch_bytes >= _BATCH_BYTES:
                self._batches.put(self._process_batch)
                self._process_batch, self._batch_bytes = [], 0
            return
        self._thread_batch.append(job)
        if len(self._thread_batch) >= _THREAD_BATCH:
            self._jobs.put(self._thread_batch)
            self._thread_batch = []

    def close(self, *, abort: bool = False) -> list[Result]:
        """Wait for every job; the results in the order of the jobs' ``order``.

        ``abort``: the caller is giving up (an interrupt): stop the threads and processes at once, and
        return what was done."""
        if abort:
            self._abort.set()
            for p in self._processes or ():
                p.kill()
        if self._process_batch:
            self._batches.put(self._process_batch)
            self._process_batch = []
        self._batches.put(None)
        if self._thread_batch:
            self._jobs.put(self._thread_batch)
            self._thread_batch = []
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        unanswered: list[list[Job]] = []
        for p in self._processes or ():
            unanswered += p.join()
        while True:  # batches taken by no worker (every one of them died), wherever they are in the queue
            try:
                left = self._batches.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                unanswered.append(left)
        if unanswered and not abort:
            log.warning("%d batch(es) of artefacts hashed on the calling thread: the hashing processes ended early "
                        "(exit status %s)", len(unanswered),
                        ", ".join(str(p.proc.returncode) for p in self._processes or ()) or "none started")
        for batch in [] if abort else unanswered:  # hashed here: the same result, only later
            self._done(hash_batch(batch), sum(j.size for j in batch))
        self._threads, self._processes = [], []
        return sorted(self._results)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
