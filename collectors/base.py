"""The evidence model and the collector interface.

A collector turns what a source shows into :class:`Evidence` items and yields
them; the agent's pipeline redacts, hashes, stores and signs them. Collectors
are found through the ``affidavit.collectors`` entry-point group, so a
third-party package adds one with a single entry point.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

FindingResult = Literal["pass", "fail", "unknown"]
FINDING_RESULTS: tuple[FindingResult, ...] = ("pass", "fail", "unknown")


@dataclass(frozen=True)
class Finding:
    """A collector's verdict on one common control for one object."""

    control: str
    result: FindingResult
    reason: str
    subject: str | None = None  # the object the finding is about

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"control": self.control, "result": self.result, "reason": self.reason}
        if self.subject is not None:
            d["subject"] = self.subject
        return d


@dataclass(frozen=True)
class Redaction:
    """Where a secret was replaced and by which rule; never the secret itself."""

    path: str
    rule: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "rule": self.rule}


@dataclass
class Evidence:
    """One artefact as a collector yields it.

    Exactly one of ``data`` (a JSON-able document, serialised by the pipeline
    as canonical JSON), ``content`` (bytes) or ``path`` (a file streamed from
    disk, for anything large) is set.
    """

    name: str  # stable logical name, e.g. "git/affidavit/commits.json"
    media_type: str
    data: Any = None
    content: bytes | None = None
    path: Path | None = None
    controls: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    ttl: timedelta | None = None  # None: the source's TTL

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.data, self.content, self.path))
        if given != 1:
            raise ValueError(f"evidence {self.name!r}: set exactly one of data, content, path")

    def open(self) -> BinaryIO:
        """A binary stream of the raw (unredacted) artefact bytes."""
        import io

        if self.path is not None:
            return self.path.open("rb")
        if self.content is not None:
            return io.BytesIO(self.content)
        return io.BytesIO(canonical_json(self.data))


def canonical_json(data: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no insignificant white space, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Seen:
    """An artefact an earlier run of the same source stored (the agent fills these in)."""

    digest: str  # lowercase hex SHA-256 of the stored (redacted) bytes
    collected_at: datetime
    expires_at: datetime | None  # collected_at + TTL: re-attest before this


class CollectorOptions(BaseModel):
    """Base for a collector's type-specific source options (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class CollectContext:
    """What a collector gets for one run of one source."""

    source_name: str
    options: CollectorOptions
    controls: tuple[str, ...]  # extra controls the config maps this source's evidence to
    now: datetime  # timezone-aware UTC start of the run
    base_dir: Path  # the config file's directory (relative paths already resolved)
    # name -> what this source's earlier runs last stored under that name: the incremental baseline
    previous: Mapping[str, Seen] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("affidavit.collectors"))


class Collector(abc.ABC):
    """One evidence family. Subclasses set the class attributes and implement ``collect``."""

    type_name: ClassVar[str]  # the `type:` in a source's config
    options_model: ClassVar[type[CollectorOptions]]
    default_schedule: ClassVar[str] = "every 1d"
    default_ttl: ClassVar[timedelta] = timedelta(days=7)
    # logical evidence kind -> common controls; the control library grows these
    default_controls: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @abc.abstractmethod
    def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
        """Yield the evidence for this run; raise CollectorError on failure."""

    def check(self, ctx: CollectContext) -> str:
        """Can the source be reached? Return a one-line description of what was found."""
        return "no external service"


ENTRY_POINT_GROUP = "affidavit.collectors"


def collector_types() -> dict[str, type[Collector]]:
    """Every collector type installed, by its config ``type`` name."""
    from importlib.metadata import entry_points

    found: dict[str, type[Collector]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Collector)):
            raise TypeError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} is not a Collector")
        found[ep.name] = cls
    return found
