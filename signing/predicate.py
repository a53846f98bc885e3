"""The evidence predicate: per-run metadata signed inside the in-toto statement.

One subject per artefact; everything that differs between artefacts lives in
``predicate.artefacts[]``, keyed by digest. The index is rebuilt from these
signed predicates, so they are the single source of truth.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from affidavit.signing.statement import EVIDENCE_PREDICATE, make_statement, parse_statement
from affidavit.store.base import ArtefactRecord, RunRecord

PREDICATE_FORMAT = 1
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


def utc_iso(t: datetime) -> str:
    """ISO 8601 with ``Z``; refuses naive datetimes."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: Affidavit uses timezone-aware UTC everywhere")
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return t.astimezone(UTC)


def iso_duration(d: timedelta) -> str:
    """timedelta -> ISO 8601 duration (days, hours, minutes, seconds)."""
    secs = int(d.total_seconds())
    if secs <= 0:
        raise ValueError("a TTL must be positive")
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{seconds}S" if seconds else "")
    return out + ("T" + time if time else "")


def artefact_entry(a: ArtefactRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "digest": f"sha256:{a.digest}",
        "name": a.name,
        "media_type": a.media_type,
        "size": a.size,
        "collector": a.collector,
        "collected": utc_iso(a.collected_at),
        "controls": list(a.controls),
        "findings": [dict(f) for f in a.findings],
        "redactions": [dict(r) for r in a.redactions],
    }
    if a.effective_from is not None or a.effective_to is not None:
        entry["effective"] = {
            "from": utc_iso(a.effective_from) if a.effective_from else None,
            "to": utc_iso(a.effective_to) if a.effective_to else None,
        }
    if a.ttl is not None:
        entry["ttl"] = a.ttl
    return entry


def run_statement(run: RunRecord, agent: str) -> bytes:
    """The statement payload for one run (raises ValueError for a run with no artefacts)."""
    predicate = {
        "format": PREDICATE_FORMAT,
        "agent": agent,
        "run_id": run.run_id,
        "source": {"name": run.source, "type": run.source_type},
        "started": utc_iso(run.started),
        "finished": utc_iso(run.finished),
        "artefacts": [artefact_entry(a) for a in run.artefacts],
    }
    return make_statement(((a.name, a.digest) for a in run.artefacts), EVIDENCE_PREDICATE, predicate)


def _kind_problem(obj: Any, field: str, kind: type | tuple[type, ...], optional: bool = False) -> str | None:
    value = obj.get(field)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        return f"{field} is missing or not a {getattr(kind, '__name__', 'value')}"
    return None


def _artefact_ok(a: Any) -> bool:
    """Whether one ``predicate.artefacts[]`` entry passes every check of :func:`predicate_problem` (fast path)."""
    if not isinstance(a, dict):
        return False
    get = a.get
    digest, size, eff, ttl = get("digest"), get("size"), get("effective"), get("ttl")
    if not (isinstance(digest, str) and isinstance(get("name"), str) and isinstance(get("media_type"), str)
            and isinstance(get("collector"), str) and isinstance(get("collected"), str)):
        return False
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return False
    if ttl is not None and not isinstance(ttl, str):
        return False
    if eff is not None and (not isinstance(eff, dict) or not isinstance(eff.get("from"), (str, type(None)))
                            or not isinstance(eff.get("to"), (str, type(None)))):
        return False
    for f, item in (("controls", str), ("findings", dict), ("redactions", dict)):
        value = get(f, [])
        if not isinstance(value, list):
            return False
        for x in value:
            if not isinstance(x, item):
                return False
    return digest.startswith("sha256:") and HEX64_RE.match(digest[7:]) is not None


def predicate_problem(stmt: dict[str, Any]) -> str | None:
    """What is wrong with the types of an evidence statement's predicate, or None.

    ``run_from_statement`` calls it first, so statements read from outside
    (bundles, a store's files) never reach the records with the wrong types.
    """
    p = stmt.get("predicate")
    if not isinstance(p, dict):
        return "predicate is not an object"
    for f in ("run_id", "started", "finished"):
        if problem := _kind_problem(p, f, str):
            return problem
    src = p.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("name"), str) or not isinstance(src.get("type"), str):
        return "source must be an object with name and type strings"
    arts = p.get("artefacts")
    if not isinstance(arts, list) or not arts:
        return "artefacts is missing or not a non-empty list"
    for i, a in enumerate(arts):
        if _artefact_ok(a):  # the usual case, decided without building the messages
            continue
        if not isinstance(a, dict):
            return f"artefacts[{i}] is not an object"
        checks = [_kind_problem(a, f, str) for f in ("digest", "name", "media_type", "collector", "collected")]
        checks += [_kind_problem(a, "size", int), _kind_problem(a, "ttl", str, True),
                   _kind_problem(a, "effective", dict, True)]
        for f, item in (("controls", str), ("findings", dict), ("redactions", dict)):
            value = a.get(f, [])
            if not isinstance(value, list) or not all(isinstance(x, item) for x in value):
                checks.append(f"{f} is not a list of {item.__name__}s")
        eff = a.get("effective") or {}
        if any(not isinstance(eff.get(k), (str, type(None))) for k in ("from", "to")):
            checks.append("effective.from/to are not strings")
        if not str(a.get("digest", "")).startswith("sha256:") or not HEX64_RE.match(str(a["digest"])[7:]):
            checks.append("digest is not sha256:<64 hex>")
        if isinstance(a.get("size"), int) and a["size"] < 0:
            checks.append("size is negative")
        if problem := next((c for c in checks if c), None):
            return f"artefacts[{i}]: {problem}"
    return None


def run_from_statement(payload: bytes, keyid: str, statement_sha256: str) -> RunRecord:
    """Rebuild a run's records from its signed statement payload (raises ValueError on a bad shape)."""
    return run_from_parsed(parse_statement(payload), keyid, statement_sha256)


def run_from_parsed(stmt: dict[str, Any], keyid: str, statement_sha256: str, *, checked: bool = False) -> RunRecord:
    """:func:`run_from_statement` for a statement ``parse_statement`` already returned (parsed once).

    ``checked``: the caller has already found ``predicate_problem(stmt)`` to be None.
    """
    if stmt["predicateType"] != EVIDENCE_PREDICATE:
        raise ValueError(f"predicateType is {stmt['predicateType']!r}, not an evidence statement")
    if not checked and (problem := predicate_problem(stmt)):
        raise ValueError(f"evidence predicate: {problem}")
    p = stmt["predicate"]
    times: dict[str, datetime] = {}  # a run's artefacts mostly share a few timestamps: parse each once

    def when(text: str) -> datetime:
        t = times.get(text)
        if t is None:
            t = times[text] = parse_utc(text)
        return t

    try:
        run_id = p["run_id"]
        arts = []
        for e in p["artefacts"]:
            eff = e.get("effective") or {}
            arts.append(
                ArtefactRecord(
                    run_id=run_id,
                    digest=e["digest"].removeprefix("sha256:"),
                    name=e["name"],
                    media_type=e["media_type"],
                    size=int(e["size"]),
                    collector=e["collector"],
                    collected_at=when(e["collected"]),
                    controls=tuple(e.get("controls", ())),
                    findings=tuple(e.get("findings", ())),
                    effective_from=when(eff["from"]) if eff.get("from") else None,
                    effective_to=when(eff["to"]) if eff.get("to") else None,
                    ttl=e.get("ttl"),
                    redactions=tuple(e.get("redactions", ())),
                )
            )
        return RunRecord(
            run_id=run_id,
            source=p["source"]["name"],
            source_type=p["source"]["type"],
            started=parse_utc(p["started"]),
            finished=parse_utc(p["finished"]),
            keyid=keyid,
            statement_sha256=statement_sha256,
            artefact_count=len(arts),
            artefacts=tuple(arts),
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"evidence predicate is missing or has a malformed field: {e}") from None
