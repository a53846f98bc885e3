"""Read what coverage needs from the local store's SQLite index, without loading every artefact.

Coverage over 100,000 artefacts stays within a small multiple of a plain
``SELECT control, count(*) FROM artefact_controls GROUP BY control``:

1. that very GROUP BY gives each control's evidence count; one short query per
   control walks the runs newest first to its newest artefact. (With collector
   overrides in the library, ``GROUP BY control, run_id`` instead, so each run's
   collector can be applied.)
2. only artefacts that may still be fresh are read, and only their findings are
   parsed: per distinct TTL, ``ttl = ? AND collected_at >= now - ttl``. With an
   index on ``artefacts (ttl, collected_at)`` these are index range reads (the
   distinct TTLs come from a loose index scan); without it, one scan of
   ``artefacts`` filters the usual TTLs in SQL and returns any other for an exact
   check here.

Collector overrides (``collector_overrides`` in the library) are applied here,
by the collector type, so they also apply to evidence already stored.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from affidavit.config.catalog import ControlLibrary
from affidavit.config.durations import parse_duration
from affidavit.errors import StoreError
from affidavit.signing.predicate import iso_duration, utc_iso
from affidavit.store.index import INDEX_FORMAT, REINDEX_HINT

logger = logging.getLogger(__name__)

TTL_INDEX_COLUMNS = ("ttl", "collected_at")
_COLS = "run_id, seq, digest, name, collector, collected_at, effective_to, ttl, controls, findings"
_YEAR, _MONTH = 365, 30  # days, for ISO durations written with Y or M by other producers


@dataclass(frozen=True, order=True)
class EvidenceRef:
    """One artefact, as coverage cites it."""

    collected_at: datetime
    run_id: str
    digest: str
    name: str

    def to_json(self) -> dict[str, str]:
        return {"digest": f"sha256:{self.digest}", "name": self.name, "collected": utc_iso(self.collected_at),
                "run_id": self.run_id}


@dataclass(frozen=True)
class FindingRef:
    control: str
    result: str  # pass | fail | unknown (anything else is read as unknown)
    reason: str
    subject: str
    evidence: EvidenceRef

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "subject": self.subject, "reason": self.reason,
                "evidence": self.evidence.to_json()}


@dataclass
class ControlEvidence:
    """What the store holds for one common control (after collector overrides)."""

    control: str
    count: int = 0  # artefacts ever mapped to it
    fresh: int = 0  # artefacts still within their TTL and effective period
    unevaluated: int = 0  # fresh artefacts that carry no finding for this control
    newest: EvidenceRef | None = None
    # subject -> (order of the artefact, the artefact, its findings about the subject)
    latest: dict[str, tuple[tuple[Any, ...], EvidenceRef, list[dict[str, Any]]]] = field(default_factory=dict)

    def findings(self) -> list[FindingRef]:
        """The latest findings per subject from fresh evidence (all rules of that newest artefact)."""
        out = []
        for _, ref, found in sorted(self.latest.values(), key=lambda v: v[0]):
            for f in found:
                result = f.get("result")
                out.append(FindingRef(self.control, result if result in _RESULTS else "unknown",
                                      str(f.get("reason") or ""), str(f.get("subject") or ref.name), ref))
        return out

    def tally(self) -> tuple[dict[str, int], dict[str, tuple[str, str]]]:
        """Counts of the latest findings by result, and an example (subject, reason) per result."""
        counts = {"pass": 0, "fail": 0, "unknown": 0}
        best: dict[str, tuple[tuple[Any, ...], str, str]] = {}  # the newest example, whatever the row order
        for order, ref, found in self.latest.values():
            for f in found:
                result = f.get("result")
                if result not in _RESULTS:
                    result = "unknown"
                counts[result] += 1
                subject = str(f.get("subject") or ref.name)
                if result not in best or (order, subject) > best[result][:2]:
                    best[result] = (order, subject, str(f.get("reason") or ""))
        return counts, {r: (b[1], b[2]) for r, b in best.items()}


_RESULTS = ("pass", "fail", "unknown")


def parse_ttl(text: str | None) -> timedelta | None:
    """An artefact's ISO 8601 TTL; None when absent or unreadable (a warning is logged)."""
    if not text:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        pass
    m = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text.strip())
    if m and any(m.groups()):
        y, mo, w, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return timedelta(days=y * _YEAR + mo * _MONTH + w * 7 + d, hours=h, minutes=mi, seconds=s)
    logger.warning("ignoring unreadable TTL %r in the store index", text)
    return None


def connect(index_path: Path) -> sqlite3.Connection:
    """The store's index for reading; StoreError if it is missing or not an Affidavit index."""
    if not index_path.exists():
        raise StoreError(f"the store index {index_path} is missing", hint="run `affidavit store reindex`")
    try:
        conn = sqlite3.connect(str(index_path))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        raise StoreError(f"the store index {index_path} cannot be read ({e})", hint=REINDEX_HINT) from None
    if version != INDEX_FORMAT or not {"runs", "artefacts", "artefact_controls"} <= tables:
        conn.close()
        raise StoreError(f"the store index {index_path} has an unknown layout (format {version})", hint=REINDEX_HINT)
    return conn


def has_ttl_index(conn: sqlite3.Connection) -> bool:
    """True when some index on artefacts starts with (ttl, collected_at)."""
    for row in conn.execute("PRAGMA index_list('artefacts')").fetchall():
        cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{row[1]}')").fetchall())
        if cols[:2] == TTL_INDEX_COLUMNS:
            return True
    return False


def _loose_ttls(conn: sqlite3.Connection) -> list[str | None]:
    """The distinct TTLs, by a loose scan of the (ttl, collected_at) index: one seek per value."""
    rows = conn.execute(
        "WITH RECURSIVE t(v) AS (SELECT (SELECT min(ttl) FROM artefacts) UNION ALL "
        "SELECT (SELECT min(ttl) FROM artefacts WHERE ttl > t.v) FROM t WHERE t.v IS NOT NULL) "
        "SELECT v FROM t WHERE v IS NOT NULL"
    ).fetchall()
    has_null = conn.execute("SELECT 1 FROM artefacts WHERE ttl IS NULL LIMIT 1").fetchone() is not None
    return [r[0] for r in rows] + ([None] if has_null else [])


def _cutoff_text(now: datetime, ttl: timedelta) -> str:
    # Stored times are ISO text with optional fractional seconds, which do not sort exactly as
    # text within one second: query a second early, then check each row exactly.
    return utc_iso((now - ttl).replace(microsecond=0) - timedelta(seconds=1))


# TTLs as the pipeline writes them (signing.predicate.iso_duration) for the usual durations; the
# scan without the (ttl, collected_at) index filters these in SQL and returns rows with any other
# TTL for an exact check in Python (correct whatever the TTLs, fastest for these).
_USUAL_TTLS = tuple(timedelta(hours=h) for h in (1, 2, 4, 6, 8, 12)) + tuple(
    timedelta(days=d) for d in (1, 2, 3, 7, 14, 15, 28, 30, 31, 45, 60, 90, 120, 180, 183, 365, 366, 395, 730))


def _fresh_candidates(conn: sqlite3.Connection, now: datetime, usual: Iterable[timedelta] = ()) -> Iterator[tuple[Any, ...]]:
    """Artefacts that may still be fresh (a superset: the caller checks each exactly)."""
    if not has_ttl_index(conn):
        logger.debug("store index has no (ttl, collected_at) index: scanning artefacts")
        cases = {iso_duration(d): _cutoff_text(now, d) for d in (*_USUAL_TTLS, *usual)}
        when = " ".join("WHEN ? THEN ?" for _ in cases)
        params = [x for pair in cases.items() for x in pair]
        yield from conn.execute(
            f"SELECT {_COLS} FROM artefacts WHERE ttl IS NULL OR collected_at >= CASE ttl {when} ELSE '' END", params)
        return
    for ttl in _loose_ttls(conn):  # one index range read per TTL
        d = parse_ttl(ttl)
        if ttl is None:
            yield from conn.execute(f"SELECT {_COLS} FROM artefacts WHERE ttl IS NULL")
        elif d is None:
            yield from conn.execute(f"SELECT {_COLS} FROM artefacts WHERE ttl = ?", (ttl,))
        else:
            yield from conn.execute(f"SELECT {_COLS} FROM artefacts WHERE ttl = ? AND collected_at >= ?",
                                    (ttl, _cutoff_text(now, d)))


def read_evidence(index_path: Path, library: ControlLibrary, now: datetime) -> dict[str, ControlEvidence]:
    """Per common control (and any other control id found in the store): counts, freshness, findings."""
    conn = connect(index_path)
    try:
        return _read(conn, library, now)
    except sqlite3.Error as e:
        raise StoreError(f"the store index {index_path} cannot be read ({e})", hint=REINDEX_HINT) from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, library: ControlLibrary, now: datetime) -> dict[str, ControlEvidence]:
    acc: dict[str, ControlEvidence] = {}
    if library.overrides:
        _counts_by_run(conn, library, acc)
    else:  # the plain GROUP BY, then each control's newest run, walking runs newest first
        for control, n in conn.execute("SELECT control, count(*) FROM artefact_controls GROUP BY control"):
            acc[control] = ControlEvidence(control, count=n)
        for control, ce in acc.items():
            ce.newest = _newest(conn, control, None)
    _read_fresh(conn, library, now, acc)
    for ce in acc.values():
        ce.count = max(ce.count, ce.fresh)  # findings for controls an artefact does not list
    return acc


_NEWEST = (
    "SELECT a.collected_at, a.run_id, a.digest, a.name FROM artefact_controls c JOIN artefacts a "
    "ON a.run_id = c.run_id AND a.digest = c.digest AND a.name = c.name "
    "WHERE c.control = ?1 AND c.run_id = {run} ORDER BY a.seq DESC LIMIT 1"
)
_NEWEST_IN_RUN = _NEWEST.format(run="?2")
_NEWEST_ANY = _NEWEST.format(  # walk runs newest first; stop at the first that has the control
    run="(SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM artefact_controls x WHERE x.control = ?1 "
        "AND x.run_id = r.run_id) ORDER BY r.started_us DESC, r.run_id DESC LIMIT 1)")


def _newest(conn: sqlite3.Connection, control: str, run_id: str | None) -> EvidenceRef | None:
    """The artefact mapped to ``control`` in ``run_id`` (None: in the newest run that has one)."""
    if run_id is None:
        row = conn.execute(_NEWEST_ANY, (control,)).fetchone()
    else:
        row = conn.execute(_NEWEST_IN_RUN, (control, run_id)).fetchone()
    return EvidenceRef(datetime.fromisoformat(row[0]), row[1], row[2], row[3]) if row else None


def _counts_by_run(conn: sqlite3.Connection, library: ControlLibrary, acc: dict[str, ControlEvidence]) -> None:
    """With collector overrides: counts per (control, run), so each run's collector can be applied."""
    runs = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT run_id, source_type, started_us FROM runs")}
    newest_run: dict[str, tuple[int, str, str]] = {}  # control -> (started_us, run_id, stored control)
    for control, run_id, n in conn.execute(
        "SELECT control, run_id, count(*) FROM artefact_controls GROUP BY control, run_id"
    ):
        collector, started = runs.get(run_id, ("", 0))
        for eff in library.effective_controls(collector, control):
            ce = acc.get(eff)
            if ce is None:
                ce = acc[eff] = ControlEvidence(eff)
            ce.count += n
            best = newest_run.get(eff)
            if best is None or (started, run_id) > best[:2]:
                newest_run[eff] = (started, run_id, control)
    for eff, (_, run_id, stored) in newest_run.items():
        acc[eff].newest = _newest(conn, stored, run_id)


def _read_fresh(conn: sqlite3.Connection, library: ControlLibrary, now: datetime,
                acc: dict[str, ControlEvidence]) -> None:
    ttl_cache: dict[str | None, timedelta | None] = {}
    controls_cache: dict[str, list[str]] = {}  # rows of one source repeat the same controls list
    effective = library.effective_controls
    loads = json.loads
    when = datetime.fromisoformat
    for run_id, seq, digest, name, collector, collected, eff_to, ttl_text, controls_json, findings_json in (
        _fresh_candidates(conn, now, (c.ttl for c in library.common_controls() if c.ttl))
    ):
        if eff_to is not None and when(eff_to) < now:
            continue  # past the period it speaks for
        if ttl_text not in ttl_cache:
            ttl_cache[ttl_text] = parse_ttl(ttl_text)
        ttl = ttl_cache[ttl_text]
        collected_at = when(collected)
        if ttl is not None and collected_at + ttl < now:
            continue
        by_control: dict[str, list[dict[str, Any]]] = {}
        if findings_json != "[]":
            for f in loads(findings_json):
                if isinstance(f, dict) and isinstance(f.get("control"), str):
                    by_control.setdefault(f["control"], []).append(f)
        ref = EvidenceRef(collected_at, run_id, digest, name)
        order = (collected_at, run_id, seq)
        stored = controls_cache.get(controls_json)
        if stored is None:
            stored = controls_cache[controls_json] = [c for c in loads(controls_json) if isinstance(c, str)]
        for c in dict.fromkeys(stored + list(by_control)) if by_control else stored:
            found = by_control.get(c)
            for eff in effective(collector, c):
                if ttl is None and _expired_by_control(library, eff, collected_at, now):
                    continue
                ce = acc.get(eff)
                if ce is None:
                    ce = acc[eff] = ControlEvidence(eff, newest=ref)
                ce.fresh += 1
                if not found:
                    ce.unevaluated += 1
                    continue
                latest = ce.latest
                for f in found:
                    subject = str(f.get("subject") or name)
                    cur = latest.get(subject)
                    if cur is None or order > cur[0]:
                        latest[subject] = (order, ref, [f])
                    elif order == cur[0]:
                        cur[2].append(f)


def _expired_by_control(library: ControlLibrary, control: str, collected_at: datetime, now: datetime) -> bool:
    """Evidence without a TTL of its own takes its control's TTL (none: it does not expire)."""
    cc = library.common_control_or_none(control)
    return cc is not None and cc.ttl is not None and collected_at + cc.ttl < now
