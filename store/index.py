"""The local store's SQLite index (``index.db``) and the attestations it is built from.

The index is derived data: every row comes from a signed attestation, and
``LocalStore.reindex`` rebuilds it from them. Datetimes are ISO 8601 strings
with ``Z``; lists are JSON. ``runs.started_us`` (microseconds since the epoch)
orders runs, since ISO strings with and without fractional seconds do not sort
as text. ``artefact_controls`` has one row per artefact and (distinct) control,
indexed by control, for fast coverage queries such as
``SELECT control, count(*) FROM artefact_controls GROUP BY control``.
Tables: ``runs`` (one row per run), ``artefacts`` (one row per artefact, ``seq``
its position in the run), ``artefact_controls`` (run_id, digest, name, control).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from sqlite_utils import Database


def _import_sqlite_utils() -> ModuleType:
    """Import sqlite-utils without letting it pull in pandas and numpy.

    sqlite-utils imports pandas and numpy at import time whenever they are
    installed (only to adapt their types, which the index never stores): about
    110 MB and 0.3 s for every command on a data scientist's machine. Unless
    the process already has them, they are hidden for the duration of the
    import, so sqlite-utils takes its no-pandas path.
    """
    hidden = [m for m in ("pandas", "numpy") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        return importlib.import_module("sqlite_utils")
    finally:
        for m in hidden:
            if sys.modules.get(m) is None:
                del sys.modules[m]


_sqlite_utils = _import_sqlite_utils()

from affidavit.errors import StoreError
from affidavit.signing.dsse import PAYLOAD_TYPE, Envelope, parse_envelope
from affidavit.signing.hashing import sha256_bytes
from affidavit.signing.predicate import parse_utc, run_from_statement, utc_iso
from affidavit.signing.statement import parse_statement, subject_digests
from affidavit.store.base import ArtefactRecord, RunRecord

INDEX_FORMAT = 1  # PRAGMA user_version of index.db
REINDEX_HINT = "run `affidavit store reindex` to rebuild it from the attestations"
TABLES = ("runs", "artefacts", "artefact_controls")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_type TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    started_us INTEGER NOT NULL,
    keyid TEXT NOT NULL,
    statement_sha256 TEXT NOT NULL,
    artefact_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_us, run_id);
CREATE INDEX IF NOT EXISTS runs_by_source ON runs (source, started_us);
CREATE TABLE IF NOT EXISTS artefacts (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    collector TEXT NOT NULL,
    collected_at TEXT NOT NULL,
    controls TEXT NOT NULL,
    findings TEXT NOT NULL,
    effective_from TEXT,
    effective_to TEXT,
    ttl TEXT,
    redactions TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS artefacts_by_digest ON artefacts (digest);
CREATE INDEX IF NOT EXISTS artefacts_by_name ON artefacts (name);
CREATE INDEX IF NOT EXISTS artefacts_by_ttl ON artefacts (ttl, collected_at);
CREATE TABLE IF NOT EXISTS artefact_controls (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    control TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artefact_controls_by_control ON artefact_controls (control, run_id, digest, name);
CREATE INDEX IF NOT EXISTS artefact_controls_by_run ON artefact_controls (run_id);
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DSSE_SUFFIX = ".dsse.json"


@dataclass(frozen=True)
class Attestation:
    """One ``attestations/<run_id>.dsse.json``, parsed: what the index is rebuilt from."""

    path: Path
    document: dict[str, Any]  # the envelope JSON as stored
    envelope: Envelope
    subjects: tuple[tuple[str, str], ...]  # (name, sha256 hex) of the statement's subjects
    run: RunRecord


def load_attestation(path: Path) -> Attestation:
    """Parse a stored DSSE envelope into its run; OSError if unreadable, ValueError if malformed."""
    document = json.loads(path.read_bytes())
    envelope = parse_envelope(document)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ValueError(f"payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE}")
    subjects = tuple(subject_digests(parse_statement(envelope.payload)))
    run = run_from_statement(envelope.payload, envelope.signatures[0][0], sha256_bytes(envelope.payload))
    expected = path.name.removesuffix(DSSE_SUFFIX)
    if run.run_id != expected:
        raise ValueError(f"its statement is for run {run.run_id!r}, but the file is named for run {expected!r}")
    return Attestation(path, document, envelope, subjects, run)


def _micros(t: datetime) -> int:
    utc_iso(t)  # refuses naive datetimes
    return (t - _EPOCH) // timedelta(microseconds=1)


def _opt_iso(t: datetime | None) -> str | None:
    return utc_iso(t) if t is not None else None


def _opt_time(text: str | None) -> datetime | None:
    return parse_utc(text) if text is not None else None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def run_row(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "source": run.source,
        "source_type": run.source_type,
        "started": utc_iso(run.started),
        "finished": utc_iso(run.finished),
        "started_us": _micros(run.started),
        "keyid": run.keyid,
        "statement_sha256": run.statement_sha256,
        "artefact_count": run.artefact_count,
    }


def artefact_row(run_id: str, seq: int, a: ArtefactRecord) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seq": seq,
        "digest": a.digest,
        "name": a.name,
        "media_type": a.media_type,
        "size": a.size,
        "collector": a.collector,
        "collected_at": utc_iso(a.collected_at),
        "controls": _json(list(a.controls)),
        "findings": _json([dict(f) for f in a.findings]),
        "effective_from": _opt_iso(a.effective_from),
        "effective_to": _opt_iso(a.effective_to),
        "ttl": a.ttl,
        "redactions": _json([dict(r) for r in a.redactions]),
    }


def _run_record(row: dict[str, Any], artefacts: tuple[ArtefactRecord, ...] = ()) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        source=row["source"],
        source_type=row["source_type"],
        started=parse_utc(row["started"]),
        finished=parse_utc(row["finished"]),
        keyid=row["keyid"],
        statement_sha256=row["statement_sha256"],
        artefact_count=row["artefact_count"],
        artefacts=artefacts,
    )


def _artefact_record(row: dict[str, Any]) -> ArtefactRecord:
    return ArtefactRecord(
        run_id=row["run_id"],
        digest=row["digest"],
        name=row["name"],
        media_type=row["media_type"],
        size=row["size"],
        collector=row["collector"],
        collected_at=parse_utc(row["collected_at"]),
        controls=tuple(json.loads(row["controls"])),
        findings=tuple(json.loads(row["findings"])),
        effective_from=_opt_time(row["effective_from"]),
        effective_to=_opt_time(row["effective_to"]),
        ttl=row["ttl"],
        redactions=tuple(json.loads(row["redactions"])),
    )


_ARTEFACT_SELECT = (
    "SELECT a.* FROM artefacts a JOIN runs r ON r.run_id = a.run_id{where} "
    "ORDER BY r.started_us, r.run_id, a.seq"
)


class Index:
    """One connection to an index database (safe to share between threads)."""

    def __init__(self, path: Path, db: Database) -> None:
        self.path = path
        self.db = db
        self._identity = _file_identity(path)
        self._write = threading.RLock()  # one statement or transaction at a time on the shared connection

    @classmethod
    def open(cls, path: Path, *, wal: bool = True) -> Index:
        """Open (creating the schema in a new or empty file); StoreError if it is not a usable index."""
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the store index {path}: {e}", hint=REINDEX_HINT) from None
        try:
            db = _sqlite_utils.Database(conn)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = set(db.table_names())
            if version == 0 and not tables:
                with db.atomic():
                    db.executescript(_SCHEMA)
                    db.execute(f"PRAGMA user_version = {INDEX_FORMAT}")
            elif version != INDEX_FORMAT or not set(TABLES) <= tables:
                raise StoreError(
                    f"the store index {path} has an unknown layout (format {version})", hint=REINDEX_HINT
                )
            else:  # an index written by an earlier release gains the indexes added since
                db.execute("CREATE INDEX IF NOT EXISTS artefacts_by_ttl ON artefacts (ttl, collected_at)")
            if wal:
                db.enable_wal()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"the store index {path} is not a readable SQLite database ({e})", hint=REINDEX_HINT) from None
        except BaseException:
            conn.close()
            raise
        return cls(path, db)

    @classmethod
    def memory(cls) -> Index:
        """An in-memory index with the schema (fsck builds the index the attestations describe)."""
        db = _sqlite_utils.Database(memory=True)
        db.executescript(_SCHEMA)
        return cls(Path(":memory:"), db)

    def close(self) -> None:
        self.db.close()

    def is_current(self) -> bool:
        """False once the file at ``path`` was deleted or replaced since this connection opened it."""
        return _file_identity(self.path) == self._identity

    def insert_runs(self, runs: Iterable[RunRecord]) -> None:
        """Index runs in one transaction; a run already indexed is replaced (idempotent)."""
        with self._write, self._translate(), self.db.atomic():
            for run in runs:
                self._insert(run)

    def _insert(self, run: RunRecord) -> None:
        for table in TABLES:
            self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run.run_id])
        self.db.table("runs").insert(run_row(run))
        self.db.table("artefacts").insert_all(artefact_row(run.run_id, i, a) for i, a in enumerate(run.artefacts))
        self.db.table("artefact_controls").insert_all(
            {"run_id": run.run_id, "digest": a.digest, "name": a.name, "control": c}
            for a in run.artefacts
            for c in dict.fromkeys(a.controls)
        )

    def runs(
        self, *, since: datetime | None = None, source: str | None = None, with_artefacts: bool = False
    ) -> Iterator[RunRecord]:
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("started_us >= ?")
            params.append(_micros(since))
        if source is not None:
            where.append("source = ?")
            params.append(source)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._write, self._translate():
            rows = self.db.query(f"SELECT * FROM runs{clause} ORDER BY started_us, run_id", params)
        for row in rows:
            arts = tuple(self.artefacts(run_id=row["run_id"])) if with_artefacts else ()
            yield _run_record(row, arts)

    def artefacts(
        self, *, run_id: str | None = None, control: str | None = None, name: str | None = None
    ) -> Iterator[ArtefactRecord]:
        where: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            where.append("a.run_id = ?")
            params.append(run_id)
        if name is not None:
            where.append("a.name = ?")
            params.append(name)
        if control is not None:
            where.append(
                "EXISTS (SELECT 1 FROM artefact_controls c WHERE c.control = ? AND c.run_id = a.run_id"
                " AND c.digest = a.digest AND c.name = a.name)"
            )
            params.append(control)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._write, self._translate():
            rows = self.db.query(_ARTEFACT_SELECT.format(where=clause), params)
        for row in rows:
            yield _artefact_record(row)

    def latest(self, source: str) -> dict[str, ArtefactRecord]:
        """For one source, the newest indexed artefact of each name (what the last runs saw)."""
        sql = (
            "SELECT * FROM (SELECT a.*, ROW_NUMBER() OVER (PARTITION BY a.name "
            "ORDER BY r.started_us DESC, r.run_id DESC, a.seq DESC) AS newest "
            "FROM artefacts a JOIN runs r ON r.run_id = a.run_id WHERE r.source = ?) WHERE newest = 1"
        )
        with self._write, self._translate():
            rows = self.db.query(sql, [source])
        out: dict[str, ArtefactRecord] = {}
        for row in rows:
            row.pop("newest")
            rec = _artefact_record(row)
            out[rec.name] = rec
        return out

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, sorted: two indexes hold the same data iff snapshots are equal."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self._translate():
            for table in TABLES:
                out[table] = sorted(
                    (tuple(r) for r in self.db.execute(f"SELECT * FROM {table}").fetchall()),
                    key=lambda t: tuple((v is None, "" if v is None else str(v)) for v in t),
                )
        return out

    def load_from(self, path: Path) -> None:
        """Replace this index's whole content with the database at ``path``, in one transaction.

        SQLite's backup API writes through this connection (and its WAL), so
        other connections to the index see the old content or the new, never
        a mix, and a crash leaves the old index whole.
        """
        source = sqlite3.connect(str(path))
        try:
            with self._write, self._translate():
                source.backup(self.db.conn)
        finally:
            source.close()

    def same_as(self, runs: Iterable[RunRecord]) -> bool:
        """True when this index holds exactly the rows that indexing ``runs`` would give."""
        expected = Index.memory()
        try:
            expected.insert_runs(runs)
            return self.snapshot() == expected.snapshot()
        finally:
            expected.close()

    def _translate(self) -> _Translate:
        return _Translate(self.path)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _Translate:
    """Turns a SQLite error into a StoreError that names the index and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"the store index {self.path} cannot be used ({exc})", hint=REINDEX_HINT) from None
