"""Alias and stage history of MLflow model versions, from Affidavit's own stored snapshots.

Open-source MLflow keeps no history of alias or stage moves. Every time a
registered model's aliases or a version's stage change, the collector stores
a new snapshot (the registered-model and model-version documents), so the
store's signed snapshots are that history: "since when has v7 been under
``champion``". Bounds are those of the snapshots: ``since`` is the first
snapshot that showed it, ``not_before`` the snapshot before that (which did
not), ``until`` the first snapshot that no longer showed it. Runs with nothing
new store nothing, so the bounds are as tight as the stored snapshots allow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from affidavit.collectors.mlflow_docs import Names
from affidavit.signing.predicate import utc_iso
from affidavit.store.base import Store

NO_STAGE = frozenset({"", "none"})


@dataclass(frozen=True)
class Holding:
    """One continuous period in which a version carried an alias or stage, as the snapshots show it."""

    model: str
    version: str
    kind: Literal["alias", "stage"]
    label: str  # the alias or the stage
    since: datetime  # first snapshot showing it
    not_before: datetime | None  # the snapshot before, which did not show it (None: no earlier snapshot)
    until: datetime | None  # first snapshot no longer showing it (None: still shown by the newest snapshot)
    last_seen: datetime  # the newest snapshot showing it

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "kind": self.kind, "label": self.label,
            "since": utc_iso(self.since), "not_before": utc_iso(self.not_before) if self.not_before else None,
            "until": utc_iso(self.until) if self.until else None, "last_seen": utc_iso(self.last_seen),
        }


Key = tuple[str, str]  # (version, label)


def _periods(model: str, kind: Literal["alias", "stage"],
             snapshots: Iterable[tuple[datetime, set[Key]]]) -> Iterator[Holding]:
    """Continuous periods of each (version, label) over time-ordered snapshots."""
    open_: dict[Key, tuple[datetime, datetime | None]] = {}
    last_seen: dict[Key, datetime] = {}
    previous: datetime | None = None
    for when, held in snapshots:
        for key in sorted(set(open_) - held):
            since, not_before = open_.pop(key)
            yield Holding(model, key[0], kind, key[1], since, not_before, when, last_seen[key])
        for key in held:
            if key not in open_:
                open_[key] = (when, previous)
            last_seen[key] = when
        previous = when
    for key in sorted(open_):
        since, not_before = open_[key]
        yield Holding(model, key[0], kind, key[1], since, not_before, None, last_seen[key])


def _snapshots(store: Store, name: str) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """Every stored snapshot of one artefact name, oldest first, parsed."""
    for a in store.artefacts(name=name):
        with store.open_blob(a.digest) as f:
            doc = json.loads(f.read())
        yield a.collected_at, doc if isinstance(doc, dict) else {}


def _aliases(doc: dict[str, Any]) -> set[Key]:
    if doc.get("deleted") or doc.get("status") in ("deleted", "out-of-scope"):
        return set()
    aliases = doc.get("aliases") or {}
    return {(str(v), str(a)) for a, v in aliases.items()} if isinstance(aliases, dict) else set()


def _stage(doc: dict[str, Any], version: str) -> set[Key]:
    stage = doc.get("current_stage")
    if doc.get("deleted") or not isinstance(stage, str) or stage.strip().lower() in NO_STAGE:
        return set()
    return {(version, stage)}


def stored_versions(store: Store, source: str, model: str) -> list[str]:
    """Versions of a model this source ever stored a document for."""
    names = Names(source)
    found = set()
    for name in store.latest(source):
        parsed = names.parse(name)
        if parsed and parsed[0] == "model-version" and parsed[1][0] == model:
            found.add(parsed[1][1])
    return sorted(found, key=lambda v: (int(v), v) if v.isdigit() else (1 << 62, v))


def model_known(store: Store, source: str, model: str) -> bool:
    return Names(source).model(model) in store.latest(source)


def history(store: Store, source: str, model: str, version: str | None = None) -> list[Holding]:
    """Alias and stage periods of a model's versions (or of one version), by version, then start, aliases first."""
    names = Names(source)
    alias_snaps = ((t, _aliases(d)) for t, d in _snapshots(store, names.model(model)))
    out = [h for h in _periods(model, "alias", alias_snaps) if version is None or h.version == version]
    for v in [version] if version is not None else stored_versions(store, source, model):
        stage_snaps = ((t, _stage(d, v)) for t, d in _snapshots(store, names.version(model, v)))
        out.extend(_periods(model, "stage", stage_snaps))

    def order(h: Holding) -> tuple[tuple[int, str], datetime, str, str]:
        return ((int(h.version), h.version) if h.version.isdigit() else (1 << 62, h.version), h.since, h.kind,
                h.label)

    return sorted(out, key=order)
