"""The local evidence store: content-addressed blobs, attestations, and a SQLite index.

Layout under the store root::

    affidavit-store.json              {"format": 1}: marks the directory as a store
    objects/sha256/ab/<64 hex>        blobs (two-hex fan-out), mode 0444
    attestations/<run_id>.dsse.json   the run's DSSE envelope
    attestations/<run_id>.sigstore.json   the same envelope in a Sigstore bundle
    index.db                          SQLite (WAL) index, rebuilt from the attestations by reindex()
    lock                              flock'ed by the collection committing to the store
    tmp/                              temp files, renamed into place (same file system)

Every write is temp file + rename, so a crash leaves either the old state or
the new one, plus at most a stray temp file that ``fsck`` reports as a
warning. Attestations and the index are fsynced as they are written; blobs
are fsynced in one parallel batch (``sync``) before the attestation that
references them, which costs one group commit per run instead of two fsyncs
per artefact.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

from affidavit.errors import InputError, StoreError
from affidavit.signing.atomic import fsync_dir
from affidavit.signing.dsse import verified_keyids
from affidavit.signing.hashing import sha256_file, sha256_stream
from affidavit.signing.keys import PublicKey, keyid_of
from affidavit.signing.sigstore import envelope_of
from affidavit.store.base import ArtefactRecord, BlobInfo, FsckProblem, RunRecord
from affidavit.store.index import DSSE_SUFFIX, Attestation, Index, load_attestation
from affidavit.store.lock import StoreLock

logger = logging.getLogger(__name__)

MARKER = "affidavit-store.json"
STORE_FORMAT = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
BUNDLE_SUFFIX = ".sigstore.json"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
NOT_A_STORE_HINT = "run `affidavit collect` or `affidavit init` to create one"


def check_digest(digest: str) -> str:
    """A SHA-256 digest as 64 lowercase hex characters; ValueError otherwise (never a path)."""
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError(f"not a SHA-256 digest (64 lowercase hex characters): {digest!r}")
    return digest


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"invalid run id {run_id!r}: use 1-201 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return run_id


def attestation_json(obj: dict[str, Any]) -> bytes:
    """The exact bytes an attestation file holds."""
    return json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")


class LocalStore:
    """A store in a local directory (see the module docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        """Use :meth:`open`, which checks (or creates) the layout."""
        self.root = root
        self.objects = root / "objects" / "sha256"
        self.attestations_dir = root / "attestations"
        self.tmp = root / "tmp"
        self.index_path = root / "index.db"
        self._lock = StoreLock(root)
        self._index: Index | None = None
        self._index_mutex = threading.Lock()
        # blobs renamed into place whose bytes and directory entries are not yet fsynced;
        # sync() makes them durable before any attestation can reference them
        self._unsynced: set[Path] = set()
        self._unsynced_mutex = threading.Lock()

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, create: bool = False) -> LocalStore:
        """Open the store at ``root``; with ``create``, make one there if there is none.

        The index is opened on first use, so a store with a damaged index.db
        still opens (for ``reindex`` and ``fsck``).
        """
        root = Path(root).absolute()
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not an Affidavit store directory", hint="point store.path at a directory")
        marker = root / MARKER
        marker_existed = marker.exists()
        if not marker_existed:
            if not create:
                raise StoreError(f"{root} is not an Affidavit store", hint=NOT_A_STORE_HINT)
            _create_layout(root)
            logger.info("created evidence store %s", root)
        else:
            _check_marker(marker)
        store = cls(root)
        try:
            for d in (store.objects, store.attestations_dir, store.tmp):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot prepare store {root}: {e.strerror}") from None
        if not marker_existed:
            store._idx()  # a new store starts with an (empty) index
        return store

    def close(self) -> None:
        with self._index_mutex:
            if self._index is not None:
                self._index.close()
                self._index = None

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        check_digest(digest)
        return self.objects / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: str) -> BinaryIO:
        path = self.blob_path(digest)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise StoreError(
                f"blob sha256:{digest} is not in store {self.root}", hint="run `affidavit store fsck`"
            ) from None
        except OSError as e:
            raise StoreError(f"cannot read blob {path}: {e.strerror}") from None

    def put_file(self, path: Path) -> BlobInfo:
        try:
            f = path.open("rb")
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        with f:
            return self.put_stream(f)

    def put_stream(self, stream: BinaryIO) -> BlobInfo:
        """Store a stream's bytes (one pass, constant memory); a blob already present is a no-op."""
        tmp = self._temp_file("blob-")
        try:
            with tmp.open("wb") as f:
                digest, size = sha256_stream(stream, sink=self._sink(f))
                self._guard(lambda: _seal(f, 0o444, durable=False), "write a blob")
            dest = self.blob_path(digest)
            if _present(dest, size):
                logger.debug("blob sha256:%s already stored", digest)
            else:  # absent, or cut short by a crash before it was synced: (re)place it
                self._guard(lambda: _install(tmp, dest, durable=False), "store a blob")
                with self._unsynced_mutex:
                    self._unsynced.add(dest)
                logger.debug("stored blob sha256:%s (%d bytes)", digest, size)
        finally:
            tmp.unlink(missing_ok=True)
        return BlobInfo(digest=digest, size=size)

    def _sink(self, f: IO[bytes]) -> Callable[[memoryview], object]:
        def write(chunk: memoryview) -> object:
            return self._guard(lambda: f.write(chunk), "write a blob")

        return write

    # -- attestations ------------------------------------------------------------

    def attestation_paths(self, run_id: str) -> tuple[Path, Path]:
        check_run_id(run_id)
        return (
            self.attestations_dir / f"{run_id}{DSSE_SUFFIX}",
            self.attestations_dir / f"{run_id}{BUNDLE_SUFFIX}",
        )

    def sync(self) -> None:
        """Make every blob stored since the last sync durable (file data, then directory entries).

        Blobs are renamed into place without an fsync each; one batch of fsyncs
        (in parallel, so the file system can commit them together) runs before
        an attestation is written, so no signed run ever references a blob that
        a power loss could take away. A blob left unsynced by a crash is
        unreferenced; a later put of the same bytes replaces it if it was cut short.
        """
        with self._unsynced_mutex:
            pending = sorted(self._unsynced)
            self._unsynced.clear()
        if not pending:
            return
        from concurrent.futures import ThreadPoolExecutor

        def flush(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        dirs = sorted({p.parent for p in pending} | {p.parent.parent for p in pending})
        with ThreadPoolExecutor(max_workers=min(8, len(pending))) as pool:
            self._guard(lambda: list(pool.map(flush, pending)), "sync blobs")
            self._guard(lambda: list(pool.map(fsync_dir, dirs)), "sync blob directories")

    def put_attestation(self, run_id: str, dsse: dict[str, Any], sigstore_bundle: dict[str, Any]) -> None:
        """Write a run's envelope and bundle; the same content again is a no-op, different content an error.

        Every blob stored before is made durable first (:meth:`sync`)."""
        self.sync()
        paths = self.attestation_paths(run_id)
        if sigstore_bundle.get("dsseEnvelope") != dsse:
            raise ValueError(f"run {run_id}: the Sigstore bundle does not wrap the given DSSE envelope")
        files = list(zip(paths, (attestation_json(dsse), attestation_json(sigstore_bundle)), strict=True))
        for path, data in files:  # refuse before writing anything
            self._check_same(path, data, run_id)
        for path, data in files:
            if not path.exists():
                self._write_new(path, data, run_id)
        logger.debug("stored the attestation of run %s", run_id)

    def _check_same(self, path: Path, data: bytes, run_id: str) -> None:
        try:
            existing = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from None
        if existing != data:
            raise StoreError(
                f"run {run_id} already has a different attestation in {path}",
                hint="run ids are unique: give the new run a new id",
            )

    def _write_new(self, path: Path, data: bytes, run_id: str) -> None:
        tmp = self._temp_file("att-")
        try:

            def write() -> None:
                with tmp.open("wb") as f:
                    f.write(data)
                    _seal(f, 0o444)

            self._guard(write, "write an attestation")
            try:
                os.link(tmp, path)  # never replaces: a racing writer's file wins and is compared
            except FileExistsError:
                self._check_same(path, data, run_id)
                return
            except OSError as e:
                raise StoreError(f"cannot write {path}: {e.strerror}") from None
            self._guard(lambda: fsync_dir(path.parent), "write an attestation")
        finally:
            tmp.unlink(missing_ok=True)

    def attestation_files(self) -> list[Path]:
        """Every ``*.dsse.json`` in attestations/, sorted by name."""
        return sorted(self.attestations_dir.glob(f"*{DSSE_SUFFIX}"))

    # -- index -------------------------------------------------------------------

    def _idx(self) -> Index:
        """The open index, reopened if index.db was replaced; StoreError if it is missing or unusable."""
        with self._index_mutex:
            if self._index is not None and not self._index.is_current():
                self._index.close()
                self._index = None
            if self._index is None:
                if not self.index_path.exists() and any(self.attestation_files()):
                    raise StoreError(
                        f"the store index {self.index_path} is missing", hint="run `affidavit store reindex`"
                    )
                self._index = Index.open(self.index_path)
            return self._index

    def index_run(self, run: RunRecord) -> None:
        """Index a run, its artefacts and their controls in one transaction (idempotent per run_id)."""
        check_run_id(run.run_id)
        for a in run.artefacts:
            check_digest(a.digest)
        self._idx().insert_runs([run])

    def runs(
        self, *, since: datetime | None = None, source: str | None = None, with_artefacts: bool = False
    ) -> Iterator[RunRecord]:
        """Indexed runs started at or after ``since``, oldest first (newest last).

        A run's ``artefacts`` are loaded only ``with_artefacts`` (else ``()``;
        ``RunRecord`` equality ignores them): listing runs stays cheap however
        many artefacts they hold, and :meth:`artefacts` gives one run's.
        """
        return self._idx().runs(since=since, source=source, with_artefacts=with_artefacts)

    def artefacts(
        self, *, run_id: str | None = None, control: str | None = None, name: str | None = None
    ) -> Iterator[ArtefactRecord]:
        """Indexed artefacts, in run order (oldest run first) then in their run's order."""
        return self._idx().artefacts(run_id=run_id, control=control, name=name)

    def latest(self, source: str) -> dict[str, ArtefactRecord]:
        """The newest artefact of each name that a source's runs stored (the incremental baseline)."""
        return self._idx().latest(source)

    def read_attestation(self, path: Path) -> Attestation:
        """Load one ``*.dsse.json``; StoreError naming the file when it is malformed."""
        try:
            return load_attestation(path)
        except OSError as e:
            raise StoreError(f"cannot read attestation {path}: {e.strerror}") from None
        except ValueError as e:
            raise StoreError(
                f"malformed attestation {path}: {e}", hint="run `affidavit store fsck`; restore the file from a backup"
            ) from None

    def reindex(self, *, lock_timeout: float = 0.0) -> int:
        """Rebuild index.db from the attestations (under the store lock); return the number of runs.

        The new index is built in tmp/, then copied into index.db in one SQLite
        transaction (so readers see old or new and a crash leaves the old index
        whole); an index.db that SQLite cannot use is replaced by renaming.
        """
        with self.lock(lock_timeout):
            runs = [self.read_attestation(p).run for p in self.attestation_files()]
            tmp = self._temp_file("index-", ".db")
            try:
                built = Index.open(tmp, wal=False)
                try:
                    built.insert_runs(runs)
                finally:
                    built.close()
                try:
                    current = self._idx()
                except StoreError:
                    self._guard(lambda: self._replace_index(tmp), "replace index.db")
                else:
                    current.load_from(tmp)
            finally:
                tmp.unlink(missing_ok=True)
                tmp.with_name(tmp.name + "-journal").unlink(missing_ok=True)
        logger.info("reindexed %d runs in store %s", len(runs), self.root)
        return len(runs)

    def _replace_index(self, new: Path) -> None:
        """Rename a built index over an unusable index.db (and drop that file's WAL files)."""
        with new.open("rb") as f:
            os.fsync(f.fileno())
        self.close()
        for suffix in ("-wal", "-shm"):  # the old file's: they must never meet the new one
            self.index_path.with_name(self.index_path.name + suffix).unlink(missing_ok=True)
        os.replace(new, self.index_path)
        fsync_dir(self.root)
        logger.warning("replaced the unusable index of store %s", self.root)

    # -- lock and checks ---------------------------------------------------------

    def lock(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the store's exclusive lock; StoreLockedError if not free within ``timeout`` seconds."""
        return self._lock.hold(timeout)

    def fsck(self, trusted_keys: Sequence[PublicKey] = ()) -> list[FsckProblem]:
        """Check the store's consistency (streaming every blob through SHA-256); [] when clean.

        Errors: a blob whose content does not match its name, an unreadable or
        (given ``trusted_keys``) unverifiable attestation, a missing artefact
        blob, a Sigstore bundle that does not wrap its envelope, an index that
        differs from the attestations. Warnings: leftover temp files and blobs
        no attestation references. A collection running meanwhile shows as
        such leftovers: hold :meth:`lock` for a quiet view.
        """
        problems: list[FsckProblem] = []
        blobs = self._fsck_blobs(problems)
        for path in sorted(self.tmp.iterdir()):
            problems.append(
                FsckProblem(self._rel(path), "leftover temporary file from an interrupted write", "warning")
            )
        keys = {keyid_of(k): k for k in trusted_keys}
        attestations = self._fsck_attestations(problems, keys, blobs)
        self._fsck_index(problems, [a.run for a in attestations])
        from affidavit.store.tlog_fsck import fsck_log

        problems += fsck_log(self.root, {a.run.run_id: a.document for a in attestations})
        referenced = {digest for a in attestations for _, digest in a.subjects}
        for digest in sorted(set(blobs) - referenced):
            problems.append(
                FsckProblem(self._rel(self.blob_path(digest)), "unreferenced blob, left by an interrupted run", "warning")
            )
        return problems

    def _fsck_blobs(self, problems: list[FsckProblem]) -> dict[str, int]:
        """Hash every blob; return {digest: size} of the files named as blobs."""
        sizes: dict[str, int] = {}
        for fan in sorted(self.objects.iterdir()):
            if not (fan.is_dir() and _HEX2.fullmatch(fan.name)):
                problems.append(FsckProblem(self._rel(fan), "not a blob directory (objects/sha256/<2 hex>/)", "warning"))
                continue
            for path in sorted(fan.iterdir()):
                rel = self._rel(path)
                if not (_HEX64.fullmatch(path.name) and path.name.startswith(fan.name) and path.is_file()):
                    problems.append(FsckProblem(rel, "not a blob (blobs are named by their SHA-256)", "warning"))
                    continue
                try:
                    digest, size = sha256_file(path)
                except OSError as e:
                    problems.append(FsckProblem(rel, f"unreadable blob: {e.strerror}"))
                    continue
                if digest != path.name:
                    problems.append(FsckProblem(rel, f"corrupt blob: its content hashes to {digest}, not its name"))
                sizes[path.name] = size
        return sizes

    def _fsck_attestations(
        self, problems: list[FsckProblem], keys: dict[str, PublicKey], blobs: dict[str, int]
    ) -> list[Attestation]:
        good: list[Attestation] = []
        for path in sorted(self.attestations_dir.iterdir()):
            rel, name = self._rel(path), path.name
            if name.endswith(BUNDLE_SUFFIX):
                if not path.with_name(name.removesuffix(BUNDLE_SUFFIX) + DSSE_SUFFIX).exists():
                    problems.append(FsckProblem(rel, "Sigstore bundle without its DSSE envelope"))
                continue
            if not name.endswith(DSSE_SUFFIX):
                problems.append(FsckProblem(rel, "not an attestation file", "warning"))
                continue
            try:
                att = load_attestation(path)
            except OSError as e:
                problems.append(FsckProblem(rel, f"unreadable attestation: {e.strerror}"))
                continue
            except ValueError as e:
                problems.append(FsckProblem(rel, f"malformed attestation: {e}"))
                continue
            good.append(att)
            problems.extend(self._fsck_attestation(att, keys, blobs))
        return good

    def _fsck_attestation(
        self, att: Attestation, keys: dict[str, PublicKey], blobs: dict[str, int]
    ) -> Iterator[FsckProblem]:
        rel = self._rel(att.path)
        if keys and not verified_keyids(att.envelope, keys):
            yield FsckProblem(rel, "signature does not verify with any trusted key")
        if {d for _, d in att.subjects} != {a.digest for a in att.run.artefacts}:
            yield FsckProblem(rel, "the statement's subjects and its predicate's artefacts differ")
        for name, digest in att.subjects:
            if digest not in blobs:
                yield FsckProblem(rel, f"artefact {name!r} (sha256:{digest}) is missing from objects/")
        for a in att.run.artefacts:
            if a.digest in blobs and blobs[a.digest] != a.size:
                yield FsckProblem(rel, f"artefact {a.name!r} has {blobs[a.digest]} bytes; its predicate says {a.size}")
        bundle = att.path.with_name(att.run.run_id + BUNDLE_SUFFIX)
        try:
            envelope, _ = envelope_of(json.loads(bundle.read_bytes()))
        except FileNotFoundError:
            yield FsckProblem(self._rel(bundle), f"missing: the Sigstore bundle of {att.path.name}")
        except (OSError, ValueError) as e:
            yield FsckProblem(self._rel(bundle), f"malformed Sigstore bundle: {e}")
        else:
            if envelope != att.document:
                yield FsckProblem(self._rel(bundle), f"its dsseEnvelope differs from {att.path.name}")

    def _fsck_index(self, problems: list[FsckProblem], runs: list[RunRecord]) -> None:
        try:
            same = self._idx().same_as(runs)
        except StoreError as e:
            problems.append(FsckProblem("index", e.diagnostics()))
            return
        if not same:
            problems.append(FsckProblem("index", "index out of date: run `affidavit store reindex`"))

    # -- helpers -----------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _temp_file(self, prefix: str, suffix: str = ".tmp") -> Path:
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix=prefix, suffix=suffix)
        except OSError as e:
            raise StoreError(f"cannot create a temporary file in {self.tmp}: {e.strerror}") from None
        os.close(fd)
        return Path(name)

    def _guard(self, action: Callable[[], Any], what: str) -> Any:
        """Run a file-system action, turning an OSError into a StoreError."""
        try:
            return action()
        except OSError as e:
            raise StoreError(f"cannot {what} in store {self.root}: {e.strerror or e}") from None


def _seal(f: IO[bytes], mode: int, *, durable: bool = True) -> None:
    f.flush()
    if durable:
        os.fsync(f.fileno())
    os.fchmod(f.fileno(), mode)


def _present(dest: Path, size: int) -> bool:
    """A blob of that digest is in place with the right size (a crash cannot leave it short unnoticed)."""
    try:
        return dest.stat().st_size == size
    except FileNotFoundError:
        return False


def _install(tmp: Path, dest: Path, *, durable: bool = True) -> None:
    created = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)  # a racing writer of the same digest wrote the same bytes
    if durable:
        fsync_dir(dest.parent)
        if created:
            fsync_dir(dest.parent.parent)


def _create_layout(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for d in (root / "objects" / "sha256", root / "attestations", root / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        (root / "lock").touch()
        marker_tmp = root / "tmp" / f"{MARKER}.tmp"
        with marker_tmp.open("wb") as f:
            f.write((json.dumps({"format": STORE_FORMAT}, indent=2, sort_keys=True) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(marker_tmp, root / MARKER)  # last: a half-made store is not a store
        fsync_dir(root)
    except OSError as e:
        raise StoreError(f"cannot create a store in {root}: {e.strerror or e}") from None


def _check_marker(marker: Path) -> None:
    try:
        meta = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        raise StoreError(
            f"{marker} is not a valid store marker", hint=f'it should hold {{"format": {STORE_FORMAT}}}'
        ) from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != STORE_FORMAT:
        raise StoreError(
            f"store {marker.parent} has format {fmt!r}; this Affidavit reads format {STORE_FORMAT}",
            hint="use the Affidavit version that wrote it, or a newer one",
        )
