"""The transparency log's files under the store: append-only, crash-safe, O(log n) appends and proofs.

Layout under ``<store>/log/``::

    log.json        {"format", "origin", "log_id", "public_key", "created"}: which log this is
    leaves.bin      leaf hashes, 32 bytes each, in log order (what an exported bundle carries)
    nodes.bin       hashes of the complete perfect subtrees, 32 bytes each, in the order they complete
    entries.jsonl   one JSON line per entry: index, run_id, integrated_time, body (base64)
    offsets.bin     the end offset of each line of entries.jsonl, 8 bytes big-endian
    checkpoint      the latest signed checkpoint: the commit point
    pending.json    the run being committed (its envelope), until its attestation is stored

Appending writes every file past the last checkpoint, fsyncs them, signs the new
checkpoint and renames it into place: the rename commits. Whatever lies past the
checkpoint's size is uncommitted, and the writer truncates it when it opens the
log (under the store lock), so a crash leaves the log as of its last checkpoint.
The level-k node ending at leaf c (c a multiple of 2**k) sits in nodes.bin at
``(c - 1) - popcount(c - 1) + (k - 1)``; every subtree hash a proof needs is then
one read, or O(log n) reads for the subtree on the tree's right edge. Opening
checks the checkpoint's signature and that the cached subtrees hash to its root
(O(log n)); :meth:`LogStore.checked_leaves` (export, fsck) also checks every leaf.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from affidavit.errors import InputError, SigningKeyError, StoreError
from affidavit.signing.keys import PublicKey, Signer, keyid_of, load_public_key_pem, public_pem
from affidavit.signing.predicate import parse_utc, utc_iso
from affidavit.signing.tlog import (
    HASH_SIZE,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
)
from affidavit.signing.tlog_note import Checkpoint, CheckpointError, check_origin, log_id_of, sign_checkpoint, \
    verify_checkpoint
from affidavit.signing.atomic import fsync_dir, write_atomically
from affidavit.store.tlog_files import DAMAGED_HINT, Column, internal_nodes, node_position

logger = logging.getLogger(__name__)

LOG_DIR = "log"
LOG_FORMAT = 1
META, LEAVES, NODES, ENTRIES, OFFSETS = "log.json", "leaves.bin", "nodes.bin", "entries.jsonl", "offsets.bin"
CHECKPOINT, PENDING = "checkpoint", "pending.json"
_OFFSET_SIZE = 8


@dataclass(frozen=True)
class LogMeta:
    origin: str
    public_key: PublicKey
    created: datetime

    @property
    def log_id(self) -> bytes:
        return log_id_of(self.public_key)


@dataclass(frozen=True)
class LogRecord:
    """One logged entry: which run, when, and the leaf's preimage (the canonicalized body)."""

    index: int
    run_id: str
    integrated_time: int
    body: bytes


@dataclass(frozen=True)
class Pending:
    """The run being committed: enough to finish storing it if the process dies after the commit."""

    index: int
    run_id: str
    envelope: dict[str, Any]
    # the Sigstore bundle's timestampVerificationData (RFC 3161 tokens), when the run has any
    timestamps: dict[str, Any] | None = None


class LogStore:
    """One store's transparency log (see the module docstring for its files)."""

    def __init__(self, directory: Path, meta: LogMeta, writable: bool) -> None:
        """Use :meth:`open` (readers) or :meth:`open_for_append` (the committer, under the store lock)."""
        self.dir, self.meta, self.writable = directory, meta, writable
        opened: list[Column] = []
        try:
            for name, width in ((LEAVES, HASH_SIZE), (NODES, HASH_SIZE), (OFFSETS, _OFFSET_SIZE)):
                opened.append(Column(directory / name, width, writable))
            self.entries_fd = os.open(directory / ENTRIES, (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY,
                                      0o644)
        except OSError:
            for col in opened:
                col.close()
            raise
        self.leaves, self.nodes, self.offsets = opened
        self.size = 0
        self.root = root_hash(self.perfect, 0)
        self.checkpoint: str | None = None

    # -- opening -----------------------------------------------------------------

    @staticmethod
    def directory(store_root: Path) -> Path:
        return Path(store_root) / LOG_DIR

    @classmethod
    def exists(cls, store_root: Path) -> bool:
        return (cls.directory(store_root) / META).is_file()

    @classmethod
    def open(cls, store_root: Path) -> LogStore:
        """A read-only view of the log as of its latest checkpoint (StoreError if there is none)."""
        directory = cls.directory(store_root)
        if not (directory / META).is_file():
            raise StoreError(f"the store {store_root} has no transparency log yet",
                             hint="run `affidavit collect`: each signed run is logged")
        log = _construct(cls, directory, _read_meta(directory), writable=False)
        try:
            log._load_checkpoint()
        except BaseException:
            log.close()
            raise
        return log

    @classmethod
    def open_for_append(cls, store_root: Path, log_key: PublicKey, *, origin: str | None, default_origin: str,
                        now: datetime) -> LogStore:
        """Open (creating it on first use) and recover the log for appending; the caller holds the store lock.

        ``origin`` is the configured origin (None: keep the log's own, or
        ``default_origin`` for a new log). Recovery drops whatever an
        interrupted append left past the latest checkpoint.
        """
        directory = cls.directory(store_root)
        if not (directory / META).is_file():
            _create(directory, LogMeta(check_origin(origin or default_origin), log_key, now))
        meta = _read_meta(directory)
        if keyid_of(meta.public_key) != keyid_of(log_key):
            raise StoreError(
                f"the transparency log in {directory} was started with log key {keyid_of(meta.public_key)}; "
                f"signing.log_key holds key {keyid_of(log_key)}",
                hint="configure the log's original key: a log cannot change its key",
            )
        if origin is not None and origin != meta.origin:
            raise StoreError(f"the transparency log in {directory} is named {meta.origin!r}, "
                             f"signing.log_origin says {origin!r}",
                             hint="a log keeps its origin for life: remove signing.log_origin or set it back")
        log = _construct(cls, directory, meta, writable=True)
        try:
            log._load_checkpoint()
            log._truncate(log.size)
            for stray in directory.glob(".tmp-*"):
                stray.unlink(missing_ok=True)
        except BaseException:
            log.close()
            raise
        return log

    def _load_checkpoint(self) -> None:
        path = self.dir / CHECKPOINT
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            return  # an empty log: nothing committed yet
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"cannot read the log checkpoint {path}: {e}", hint=DAMAGED_HINT) from None
        try:
            cp = verify_checkpoint(text, self.meta.public_key)
        except CheckpointError as e:
            raise StoreError(f"the log checkpoint {path} is not valid: {e}", hint=DAMAGED_HINT) from None
        if cp.origin != self.meta.origin:
            raise StoreError(f"the log checkpoint {path} is for log {cp.origin!r}, not {self.meta.origin!r}",
                             hint=DAMAGED_HINT)
        have = (self.leaves.count(), self.nodes.count(), self.offsets.count())
        if have[0] < cp.size or have[1] < internal_nodes(cp.size) or have[2] < cp.size:
            raise StoreError(f"the log in {self.dir} is damaged: its checkpoint says {cp.size} entries, "
                             f"its files hold {have[0]} leaves, {have[1]} nodes, {have[2]} offsets",
                             hint=DAMAGED_HINT)
        if root_hash(self.perfect, cp.size) != cp.root:
            raise StoreError(f"the log in {self.dir} is damaged: its files do not hash to the root of its "
                             f"checkpoint (size {cp.size})", hint=DAMAGED_HINT)
        self.size, self.root, self.checkpoint = cp.size, cp.root, text

    def close(self) -> None:
        for col in (self.leaves, self.nodes, self.offsets):
            col.close()
        os.close(self.entries_fd)

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------

    def perfect(self, level: int, index: int) -> bytes:
        if level == 0:
            return self.leaves.read(index)
        return self.nodes.read(node_position(level, index))

    def leaves_bytes(self, size: int | None = None) -> bytes:
        """The first ``size`` leaf hashes (default: all committed), concatenated."""
        return self.leaves.read_many(self._bound(self.size if size is None else size))

    def checked_leaves(self) -> bytes:
        """All committed leaf hashes, after checking that they hash to the checkpoint's root (O(n))."""
        data = self.leaves_bytes()
        if MemoryTree(data).root() != self.root:
            raise StoreError(f"the log in {self.dir} is damaged: {LEAVES} does not hash to the root of its "
                             f"checkpoint (size {self.size})", hint=DAMAGED_HINT)
        return data

    def root_at(self, size: int) -> bytes:
        return root_hash(self.perfect, self._bound(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self.perfect, index, self._bound(self.size if size is None else size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(self.perfect, old_size, self._bound(self.size if new_size is None else new_size))

    def record(self, index: int) -> LogRecord:
        self._bound(index + 1)
        end = int.from_bytes(self.offsets.read(index), "big")
        start = int.from_bytes(self.offsets.read(index - 1), "big") if index else 0
        return self._parse_record(os.pread(self.entries_fd, end - start, start), index)

    def records(self) -> Iterator[LogRecord]:
        """Every committed entry, in log order (streamed)."""
        end = int.from_bytes(self.offsets.read(self.size - 1), "big") if self.size else 0
        with os.fdopen(os.dup(self.entries_fd), "rb") as f:
            f.seek(0)
            for index in range(self.size):
                line = f.readline()
                if f.tell() > end or not line.endswith(b"\n"):
                    raise StoreError(f"{self.dir / ENTRIES} is shorter than the log's checkpoint says",
                                     hint=DAMAGED_HINT)
                yield self._parse_record(line, index)

    def _parse_record(self, line: bytes, index: int) -> LogRecord:
        try:
            obj = json.loads(line)
            rec = LogRecord(int(obj["index"]), str(obj["run_id"]), int(obj["integrated_time"]),
                            base64.b64decode(obj["body"], validate=True))
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"entry {index} of {self.dir / ENTRIES} is malformed", hint=DAMAGED_HINT) from None
        if rec.index != index or leaf_hash(rec.body) != self.leaves.read(index):
            raise StoreError(f"entry {index} of {self.dir / ENTRIES} does not match its leaf hash", hint=DAMAGED_HINT)
        return rec

    def _bound(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise ValueError(f"the log holds {self.size} entries, not {size}")
        return size

    # -- the committed run's intent ---------------------------------------------

    def pending(self) -> Pending | None:
        path = self.dir / PENDING
        try:
            obj = json.loads(path.read_bytes())
            ts = obj.get("timestamps")
            return Pending(int(obj["index"]), str(obj["run_id"]), dict(obj["envelope"]),
                           dict(ts) if ts is not None else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"cannot read {path}: {e}", hint=DAMAGED_HINT) from None

    def set_pending(self, pending: Pending) -> None:
        self._writable()
        data = json.dumps({"index": pending.index, "run_id": pending.run_id, "envelope": pending.envelope,
                           "timestamps": pending.timestamps}, sort_keys=True).encode("utf-8")
        self._guard(lambda: write_atomically(self.dir / PENDING, data), "record the run being logged")

    def clear_pending(self) -> None:
        self._writable()

        def clear() -> None:
            (self.dir / PENDING).unlink(missing_ok=True)
            fsync_dir(self.dir)

        self._guard(clear, "clear the logged run's intent")

    # -- appending ---------------------------------------------------------------

    def append(self, items: Sequence[tuple[str, bytes, int]], signer: Signer) -> list[int]:
        """Append (run_id, body, integrated_time) items and commit them with one new checkpoint.

        Returns their indices. On any failure nothing is committed and the
        files are cut back to the last checkpoint.
        """
        self._writable()
        if keyid_of(signer.public_key) != keyid_of(self.meta.public_key):
            raise StoreError(f"the log key given ({signer.keyid}) is not this log's key "
                             f"({keyid_of(self.meta.public_key)})")
        first = self.size
        text: str | None = None
        try:
            self._guard(lambda: self._write(items), "append to the transparency log")
            size = first + len(items)
            root = root_hash(self.perfect, size)
            text = sign_checkpoint(Checkpoint(self.meta.origin, size, root), signer)
            try:
                verify_checkpoint(text, self.meta.public_key)  # a bad signer must not commit
            except CheckpointError as e:
                raise SigningKeyError(f"the log key made a checkpoint its own public key rejects ({e})",
                                      hint="check the log key (for a KMS key: its algorithm)") from None
            self._guard(lambda: write_atomically(self.dir / CHECKPOINT, text.encode("utf-8")),
                        "commit the transparency log's checkpoint")
        except BaseException:
            if text is not None and self._checkpoint_on_disk() == text:
                self.size, self.root, self.checkpoint = size, root, text  # renamed into place: committed
                raise
            try:
                self._truncate(first)
            except OSError:  # pragma: no cover - the next open truncates again
                logger.warning("could not cut the log back to its checkpoint; the next collection will")
            raise
        self.size, self.root, self.checkpoint = size, root, text
        logger.debug("logged %d entries; log size %d", len(items), size)
        return list(range(first, size))

    def _checkpoint_on_disk(self) -> str | None:
        try:
            return (self.dir / CHECKPOINT).read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def _write(self, items: Sequence[tuple[str, bytes, int]]) -> None:
        end = int.from_bytes(self.offsets.read(self.size - 1), "big") if self.size else 0
        index = self.size
        lines: list[bytes] = []
        for run_id, body, integrated_time in items:
            line = json.dumps({"index": index, "run_id": run_id, "integrated_time": integrated_time,
                               "body": base64.b64encode(body).decode("ascii")}, sort_keys=True).encode() + b"\n"
            lines.append(line)
            end += len(line)
            self.offsets.append(index, end.to_bytes(_OFFSET_SIZE, "big"))
            self.leaves.append(index, leaf_hash(body))
            count, level = index + 1, 1
            while count % (1 << level) == 0:
                j = (count >> level) - 1
                node = node_hash(self.perfect(level - 1, 2 * j), self.perfect(level - 1, 2 * j + 1))
                self.nodes.append(node_position(level, j), node)
                level += 1
            index += 1
        start = end - sum(len(x) for x in lines)
        os.pwrite(self.entries_fd, b"".join(lines), start)
        for fd in (self.entries_fd, self.offsets.fd, self.leaves.fd, self.nodes.fd):
            os.fsync(fd)

    def _truncate(self, size: int) -> None:
        end = int.from_bytes(self.offsets.read(size - 1), "big") if size else 0
        os.ftruncate(self.entries_fd, end)
        self.offsets.truncate(size)
        self.leaves.truncate(size)
        self.nodes.truncate(internal_nodes(size))

    def _writable(self) -> None:
        if not self.writable:
            raise StoreError("the transparency log was opened read-only")

    def _guard(self, action: Any, what: str) -> None:
        try:
            action()
        except OSError as e:
            raise StoreError(f"cannot {what} in {self.dir}: {e.strerror or e}") from None


def _construct(cls: type[LogStore], directory: Path, meta: LogMeta, writable: bool) -> LogStore:
    try:
        return cls(directory, meta, writable)
    except OSError as e:
        raise StoreError(f"cannot open the transparency log in {directory}: {e.strerror or e}",
                         hint=DAMAGED_HINT) from None


def _create(directory: Path, meta: LogMeta) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in (LEAVES, NODES, ENTRIES, OFFSETS):
            (directory / name).touch()
        doc = {"format": LOG_FORMAT, "origin": meta.origin, "log_id": meta.log_id.hex(),
               "public_key": public_pem(meta.public_key).decode("ascii"), "created": utc_iso(meta.created)}
        write_atomically(directory / META, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        fsync_dir(directory.parent)
    except OSError as e:
        raise StoreError(f"cannot create the transparency log in {directory}: {e.strerror or e}") from None
    logger.info("started transparency log %s (log id %s) in %s", meta.origin, meta.log_id.hex(), directory)


def _read_meta(directory: Path) -> LogMeta:
    path = directory / META
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("format") != LOG_FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        meta = LogMeta(check_origin(str(doc["origin"])), load_public_key_pem(doc["public_key"].encode(), str(path)),
                       parse_utc(str(doc["created"])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InputError) as e:
        raise StoreError(f"{path} is not a transparency log description ({e})", hint=DAMAGED_HINT) from None
    if meta.log_id.hex() != doc.get("log_id"):
        raise StoreError(f"{path}: its log_id is not the id of its public key", hint=DAMAGED_HINT)
    return meta

