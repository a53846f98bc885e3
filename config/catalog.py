"""The shared control library: framework catalogs, common controls, mappings.

Data, not code: the package ships ``config/controls/*.yaml`` (ISO/IEC 42001,
ISO/IEC 27001, the EU AI Act, NIST AI RMF, SOC 2, the project's common controls
and the published NIST AI RMF -> ISO/IEC 42001 crosswalk), and users add YAML
files of the same shape (``controls.extra`` in the config). Every file may hold
any of these sections::

    source: "where the mappings in this file come from"   # default provenance
    framework: {id: my-fw, title: ..., source: ...}         # a new framework ...
    requirements: [{id: "R-1", title: ...}]                 # ... and its requirements
    controls:                                               # common controls
      - id: common:CC-X
        title: ...
        statement: ...
        automation: full | partial | manual
        ttl: P30D
        mappings: [{target: iso42001:A.6.2.5, relationship: intersect, rationale: ...}]
    mappings:                                               # mappings of existing ids
      - {from: common:CC-X, to: soc2:CC8.1, relationship: subset, rationale: ...}
    collector_overrides:                                    # per-collector mapping overrides
      - {collector: files, control: common:CC-AI-POLICY, controls: [common:CC-DOC-CONTROL], mode: replace}

Ids are ``framework:id`` everywhere (``iso42001:A.6.2.5``); inside a framework
file requirements use the local id. Loading validates everything and raises one
ConfigError listing every problem with file, line and key. A user file may
restate a built-in mapping (same from and to) to change its relationship; it
then replaces the built-in one. Collector overrides are read when coverage is
computed, so they apply to evidence already stored.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path

from affidavit.config.catalog_yaml import (
    COMMON,
    Automation,
    Relationship,
    YamlDoc,
    pydantic_problems,
    read_yaml,
)
from affidavit.errors import ConfigError

logger = logging.getLogger(__name__)

RELATIONSHIPS: tuple[Relationship, ...] = ("equal", "superset", "subset", "intersect", "related")
STRONG: frozenset[str] = frozenset({"equal", "superset"})  # a passing control evidences the requirement
WEAK: frozenset[str] = frozenset({"subset", "intersect"})  # partial unless all of them pass
MAX_PROBLEMS = 25
BUILTIN_SUFFIX = " (built in)"
BUILTIN_ORDER = ("iso42001", "iso27001", "eu-ai-act", "nist-ai-rmf", "soc2", "common")  # frameworks list in this order


@dataclass(frozen=True)
class Origin:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Framework:
    id: str
    title: str
    source: str
    version: str | None = None
    url: str | None = None
    origin: Origin | None = None


@dataclass(frozen=True)
class Requirement:
    id: str  # framework:local_id
    framework: str
    local_id: str
    title: str | None = None
    group: str | None = None
    kind: str | None = None
    parent: str | None = None  # full id of the parent requirement
    ref: str | None = None
    note: str | None = None
    origin: Origin | None = None


@dataclass(frozen=True)
class CommonControl:
    id: str  # common:CC-...
    title: str
    statement: str
    automation: Automation = "partial"
    ttl: timedelta | None = None  # freshness for evidence that carries no TTL of its own
    group: str | None = None
    rationale: str | None = None
    origin: Origin | None = None


@dataclass(frozen=True)
class Mapping:
    """``source`` (a common control or a requirement) is ``relationship`` ``target`` (a requirement)."""

    source: str
    target: str
    relationship: Relationship
    provenance: str  # "project", a published document, a user file
    rationale: str | None = None
    note: str | None = None
    origin: Origin | None = None

    @property
    def counted(self) -> bool:
        return self.relationship != "related"


@dataclass(frozen=True)
class CollectorOverride:
    """Evidence from ``collector`` (mapped to ``control``, or to anything) counts for ``controls``."""

    collector: str
    control: str | None
    controls: tuple[str, ...]
    mode: str  # "replace" or "add"
    origin: Origin | None = None


@dataclass(frozen=True)
class LibraryFile:
    """A file the library was loaded from (an export carries them, so auditors see the mapping used)."""

    name: str  # as messages name it: "controls/common.yaml (built in)" or the user's path
    data: bytes
    builtin: bool

    @property
    def bundle_path(self) -> str:
        """A relative path to store it under in an export: controls/builtin/X.yaml or controls/user/N-X.yaml."""
        base = self.name.removesuffix(BUILTIN_SUFFIX).rsplit("/", 1)[-1]
        return f"controls/builtin/{base}" if self.builtin else f"controls/user/{base}"


class ControlLibrary:
    """The loaded, validated library. Build it with :func:`load_library`."""

    def __init__(self, frameworks: Sequence[Framework], requirements: Sequence[Requirement],
                 controls: Sequence[CommonControl], mappings: Sequence[Mapping],
                 overrides: Sequence[CollectorOverride] = (), files: Sequence[LibraryFile] = ()) -> None:
        self._frameworks = {f.id: f for f in frameworks}
        self._requirements = {r.id: r for r in requirements}
        self._by_framework: dict[str, list[Requirement]] = {f.id: [] for f in frameworks}
        self._children: dict[str, list[Requirement]] = {}
        for r in requirements:
            self._by_framework[r.framework].append(r)
            if r.parent:
                self._children.setdefault(r.parent, []).append(r)
        self._controls = {c.id: c for c in controls}
        self._mappings = tuple(mappings)
        self._to: dict[str, list[Mapping]] = {}
        self._from: dict[str, list[Mapping]] = {}
        for m in mappings:
            self._to.setdefault(m.target, []).append(m)
            self._from.setdefault(m.source, []).append(m)
        self.overrides = tuple(overrides)
        self.files = tuple(files)
        self._override_cache: dict[tuple[str, str], tuple[str, ...]] = {}

    # -- frameworks and requirements ----------------------------------------------

    def frameworks(self) -> tuple[Framework, ...]:
        return tuple(self._frameworks.values())

    def framework(self, slug: str) -> Framework:
        try:
            return self._frameworks[slug]
        except KeyError:
            raise ConfigError(f"unknown framework {slug!r} (known: {', '.join(self._frameworks)})",
                              hint="see `affidavit controls`") from None

    def requirements(self, framework: str) -> tuple[Requirement, ...]:
        self.framework(framework)
        return tuple(self._by_framework[framework])

    def requirement(self, id: str) -> Requirement:
        try:
            return self._requirements[id]
        except KeyError:
            raise ConfigError(f"unknown requirement {id!r}", hint="see `affidavit controls --framework F`") from None

    def children(self, requirement: str) -> tuple[Requirement, ...]:
        return tuple(self._children.get(requirement, ()))

    # -- common controls and mappings ----------------------------------------------

    def common_controls(self) -> tuple[CommonControl, ...]:
        return tuple(self._controls.values())

    def common_control(self, id: str) -> CommonControl:
        try:
            return self._controls[id]
        except KeyError:
            raise ConfigError(f"unknown common control {id!r}", hint="see `affidavit controls`") from None

    def common_control_or_none(self, id: str) -> CommonControl | None:
        return self._controls.get(id)

    def has(self, id: str) -> bool:
        return id in self._controls or id in self._requirements

    def mappings(self) -> tuple[Mapping, ...]:
        return self._mappings

    def mappings_for(self, requirement: str) -> tuple[Mapping, ...]:
        """Every mapping whose target is ``requirement`` (from common controls and from crosswalks)."""
        return tuple(self._to.get(requirement, ()))

    def mappings_from(self, id: str) -> tuple[Mapping, ...]:
        """Every mapping whose source is ``id`` (a common control, or a requirement in a crosswalk)."""
        return tuple(self._from.get(id, ()))

    def control_mappings_for(self, requirement: str) -> tuple[Mapping, ...]:
        """The mappings from common controls to ``requirement``: what coverage follows."""
        return tuple(m for m in self._to.get(requirement, ()) if m.source in self._controls)

    def crosswalk(self, requirement: str) -> tuple[Mapping, ...]:
        """Requirement-to-requirement mappings touching ``requirement`` in either direction (shown, never counted)."""
        return tuple(
            [m for m in self._to.get(requirement, ()) if m.source in self._requirements]
            + [m for m in self._from.get(requirement, ()) if m.target in self._requirements]
        )

    # -- collector overrides ---------------------------------------------------------

    def effective_controls(self, collector: str, control: str) -> tuple[str, ...]:
        """The controls evidence from ``collector`` mapped to ``control`` counts for, after overrides."""
        key = (collector, control)
        cached = self._override_cache.get(key)
        if cached is not None:
            return cached
        out: dict[str, None] = {control: None}
        for o in self.overrides:
            if o.collector != collector or (o.control is not None and o.control != control):
                continue
            if o.mode == "replace":
                out.pop(control, None)
            for c in o.controls:
                out.setdefault(c, None)
        result = tuple(out)
        self._override_cache[key] = result
        return result

    def controls_for(self, collector: str, controls: Iterable[str]) -> tuple[str, ...]:
        """A collector's controls for one artefact, after overrides (for a pipeline that applies them)."""
        out: dict[str, None] = {}
        for c in controls:
            for e in self.effective_controls(collector, c):
                out.setdefault(e, None)
        return tuple(out)


# -- loading -----------------------------------------------------------------------------

def builtin_files() -> list[tuple[str, bytes]]:
    """The library files shipped with the package, as (name, bytes): frameworks first, in BUILTIN_ORDER."""
    root = resources.files("affidavit.config") / "controls"
    out = []
    for entry in root.iterdir():
        if entry.name.endswith(".yaml") and entry.is_file():
            out.append((f"controls/{entry.name}{BUILTIN_SUFFIX}", entry.read_bytes()))
    if not out:
        raise ConfigError("the built-in control library is missing from the installed package",
                          hint="reinstall affidavit")
    order = {f"controls/{n}.yaml{BUILTIN_SUFFIX}": i for i, n in enumerate(BUILTIN_ORDER)}
    return sorted(out, key=lambda f: (order.get(f[0], len(order)), f[0]))


def library_paths(patterns: Sequence[str], base_dir: Path) -> list[Path]:
    """Expand ``controls.extra`` globs (relative to the config's directory), in order, without repeats."""
    out: dict[Path, None] = {}
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base_dir / pattern)
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
            if not matches:
                logger.warning("controls.extra pattern %s matches no file", pattern)
            for p in matches:
                out.setdefault(p, None)
        else:
            out.setdefault(Path(full), None)
    return list(out)


def load_library(extra: Sequence[Path] = ()) -> ControlLibrary:
    """The built-in library plus the users' files ``extra``; ConfigError listing every problem."""
    sources = [(name, data, True) for name, data in builtin_files()]
    for path in extra:
        try:
            sources.append((str(path), path.read_bytes(), False))
        except FileNotFoundError:
            raise ConfigError(f"control library file {path} does not exist",
                              hint="fix controls.extra in the config") from None
        except OSError as e:
            raise ConfigError(f"cannot read control library file {path}: {e.strerror}") from None
    from affidavit.config.catalog_build import build_library

    return build_library(sources)


def parse_file(name: str, data: bytes) -> tuple[YamlDoc, object, list[str]]:
    """One file: its YAML with line numbers, its typed document (None if invalid) and problems."""
    from pydantic import ValidationError

    from affidavit.config.catalog_yaml import SECTIONS, LibraryFileDoc

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text") from None
    doc, problems = read_yaml(text, name)
    if doc.data is None:
        return doc, LibraryFileDoc(), problems
    if not isinstance(doc.data, dict):
        return doc, None, problems + [f"{name}:1: a control library file is a mapping with the sections "
                                      f"{', '.join(SECTIONS)}"]
    try:
        return doc, LibraryFileDoc.model_validate(doc.data), problems
    except ValidationError as e:
        return doc, None, problems + list(pydantic_problems(doc, e))


def raise_problems(problems: Sequence[str], what: str = "control library") -> None:
    if not problems:
        return
    shown = list(problems[:MAX_PROBLEMS])
    more = len(problems) - len(shown)
    tail = f"; and {more} more problem(s)" if more else ""
    raise ConfigError(f"invalid {what}: " + "; ".join(shown) + tail)


def is_common(id: str) -> bool:
    return id.startswith(COMMON + ":")


__all__ = [
    "RELATIONSHIPS", "STRONG", "WEAK", "CollectorOverride", "CommonControl", "ControlLibrary", "Framework",
    "LibraryFile", "Mapping", "Origin", "Requirement", "builtin_files", "is_common", "library_paths",
    "load_library",
]
