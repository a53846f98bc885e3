"""Coverage over an audit period: when was each control evidenced by passing evidence?

Each artefact speaks for an interval: from ``effective_from`` (else its
collection time) to ``effective_to`` (else collection time + TTL, else + its
control's TTL, else open-ended). A newer artefact with the same name and control
supersedes it from the newer one's start: a snapshot holds until the next
snapshot, never longer than its TTL, so a failing or missed collection shows as a
gap. The passing intervals of a control are the union of the intervals of its
passing artefacts (every finding for the control ``pass``; no finding counts as
passing unless the control's automation is ``full``, see :mod:`affidavit.agent.coverage`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from affidavit.agent.coverage_query import connect, parse_ttl
from affidavit.config.catalog import ControlLibrary
from affidavit.errors import UsageError
from affidavit.signing.predicate import parse_utc, utc_iso

Interval = tuple[datetime, datetime]  # [start, end)
FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive

    def to_json(self) -> dict[str, str]:
        return {"from": utc_iso(self.start), "to": utc_iso(self.end)}


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _when(text: str, *, end: bool) -> datetime:
    text = text.strip()
    try:
        if _DATE.match(text):
            t = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return t + timedelta(days=1) if end else t  # a date as TO includes that whole day
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not a date or time; write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_period(text: str) -> Period:
    """``FROM..TO`` (dates or ISO times, UTC); a date as TO includes that day."""
    start_text, sep, end_text = text.partition("..")
    if not sep or not start_text.strip() or not end_text.strip():
        raise UsageError(f"{text!r} is not a period; write FROM..TO, e.g. 2025-01-01..2025-12-31")
    period = Period(_when(start_text, end=False), _when(end_text, end=True))
    if period.end <= period.start:
        raise UsageError(f"period {text!r} ends before it starts")
    return period


# -- interval algebra over sorted, disjoint lists ----------------------------------------

def union(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def gaps(covered: Sequence[Interval], period: Period) -> list[Interval]:
    """The parts of ``period`` not in ``covered`` (sorted, disjoint)."""
    out: list[Interval] = []
    cursor = period.start
    for s, e in covered:
        if e <= cursor:
            continue
        if s >= period.end:
            break
        if s > cursor:
            out.append((cursor, min(s, period.end)))
        cursor = max(cursor, e)
    if cursor < period.end:
        out.append((cursor, period.end))
    return out


# -- reading ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Span:
    start: datetime
    end: datetime
    passing: bool


def passing_intervals(index_path: Path, library: ControlLibrary, controls: Iterable[str],
                      period: Period) -> dict[str, list[Interval]]:
    """Per control in ``controls``: the union of its passing evidence intervals, clipped to ``period``."""
    wanted = set(controls)
    spans: dict[tuple[str, str], list[_Span]] = {}  # (control, artefact name) -> spans
    conn = connect(index_path)
    try:
        rows = conn.execute(
            "SELECT name, collector, collected_at, effective_from, effective_to, ttl, controls, findings "
            "FROM artefacts WHERE collected_at < ?", (utc_iso(period.end + timedelta(seconds=1)),)
        )
        for name, collector, collected, eff_from, eff_to, ttl_text, controls_json, findings_json in rows:
            _add_spans(library, wanted, spans, name, collector, parse_utc(collected), eff_from, eff_to,
                       parse_ttl(ttl_text), json.loads(controls_json), json.loads(findings_json))
    finally:
        conn.close()
    out: dict[str, list[Interval]] = {c: [] for c in wanted}
    for (control, _), items in spans.items():
        items.sort(key=lambda sp: sp.start)
        for k, sp in enumerate(items):
            end = sp.end
            for later in items[k + 1:]:
                if later.start > sp.start:  # superseded by the next snapshot of the same evidence
                    end = min(end, later.start)
                    break
            if sp.passing and end > sp.start:
                out[control].append((max(sp.start, period.start), min(end, period.end)))
    return {c: union(v) for c, v in out.items()}


def _add_spans(library: ControlLibrary, wanted: set[str], spans: dict[tuple[str, str], list[_Span]], name: str,
               collector: str, collected_at: datetime, eff_from: str | None, eff_to: str | None,
               ttl: timedelta | None, controls: list[Any], findings: list[Any]) -> None:
    by_control: dict[str, list[str]] = {}
    for f in findings:
        if isinstance(f, dict) and isinstance(f.get("control"), str):
            by_control.setdefault(f["control"], []).append(str(f.get("result")))
    start = parse_utc(eff_from) if eff_from else collected_at
    for c in dict.fromkeys([x for x in controls if isinstance(x, str)] + list(by_control)):
        for eff in library.effective_controls(collector, c):
            if eff not in wanted:
                continue
            cc = library.common_control_or_none(eff)
            if eff_to:
                end = parse_utc(eff_to)
            elif ttl is not None:
                end = collected_at + ttl
            elif cc is not None and cc.ttl is not None:
                end = collected_at + cc.ttl
            else:
                end = FOREVER
            results = by_control.get(c, [])
            passing = all(r == "pass" for r in results) if results else (cc is None or cc.automation != "full")
            spans.setdefault((eff, name), []).append(_Span(start, end, passing))
