"""Statement of Applicability: per framework requirement, applicable or not, why, and who owns it.

``affidavit soa init --framework F`` writes a YAML file listing every requirement
of F as applicable; the organisation edits it. Shape::

    framework: iso42001
    requirements:
      - id: iso42001:A.10.4
        title: Customers                # for the reader; not checked
        applicable: no
        justification: We supply no AI systems to customers.
        owner: ciso@example.org

Loading checks that the framework exists, that every id is a requirement of it
(local ids like ``A.10.4`` are accepted too), that no id is listed twice and
that every exclusion has a justification (ISO/IEC 42001 6.1.3 and ISO/IEC 27001
6.1.3 ask for one); errors name the file, line and key. Requirements the file
does not list count as applicable. Coverage reports an excluded requirement as
``not-applicable`` whatever its evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from affidavit.config.catalog import ControlLibrary, Origin, raise_problems
from affidavit.config.catalog_yaml import pydantic_problems, read_yaml
from affidavit.errors import ConfigError, UsageError


@dataclass(frozen=True)
class SoaEntry:
    requirement: str  # full id
    applicable: bool
    justification: str = ""
    owner: str = ""
    origin: Origin | None = None


@dataclass(frozen=True)
class Soa:
    framework: str
    path: Path | None
    entries: Mapping[str, SoaEntry]

    def entry(self, requirement: str) -> SoaEntry | None:
        return self.entries.get(requirement)

    def excluded(self, requirement: str) -> SoaEntry | None:
        """The entry when the SoA marks ``requirement`` not applicable, else None."""
        e = self.entries.get(requirement)
        return e if e is not None and not e.applicable else None


class _EntryDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: StrictStr
    title: StrictStr | None = None
    applicable: StrictBool
    justification: StrictStr | None = ""
    owner: StrictStr | None = ""


class _SoaDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    framework: StrictStr
    approved_by: StrictStr | None = None
    approved_on: StrictStr | date | None = None
    next_review: StrictStr | date | None = None
    requirements: list[_EntryDoc] = Field(default_factory=list)


def soa_text(library: ControlLibrary, framework: str, *, now: datetime) -> str:
    """A new SoA for ``framework``: every requirement applicable, with empty justification and owner."""
    fw = library.framework(framework)
    header = (
        f"# Statement of Applicability: {fw.title}\n"
        f"# Written by `affidavit soa init` on {now:%Y-%m-%d}. For each requirement, set\n"
        "#   applicable: yes | no   (no: coverage reports it as not-applicable)\n"
        "#   justification: why it is included or excluded (required when excluded)\n"
        "#   owner: who is accountable for it\n"
        "# Titles are for the reader and are not checked. Point controls.soa in the config at this file.\n"
    )
    doc = {
        "framework": fw.id,
        "approved_by": "",
        "approved_on": "",
        "next_review": "",
        "requirements": [
            {"id": r.id, "title": r.title or r.ref or r.local_id, "applicable": True, "justification": "", "owner": ""}
            for r in library.requirements(framework)
        ],
    }
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False)
    return header + body.replace("applicable: true", "applicable: yes")


def write_soa(library: ControlLibrary, framework: str, path: Path, *, now: datetime, force: bool = False) -> Path:
    """Write a new SoA to ``path``; UsageError if the file exists (unless ``force``)."""
    text = soa_text(library, framework, now=now)
    if path.exists() and not force:
        raise UsageError(f"{path} already exists", hint="edit it, or pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
    return path


def load_soa(path: Path, library: ControlLibrary) -> Soa:
    """Read and validate an SoA; ConfigError listing every problem with file, line and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Statement of Applicability {path} does not exist",
                          hint="run `affidavit soa init --framework F`, or fix controls.soa in the config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read Statement of Applicability {path}: {e}") from None
    return parse_soa(text, str(path), library, path)


def parse_soa(text: str, name: str, library: ControlLibrary, path: Path | None = None) -> Soa:
    doc, problems = read_yaml(text, name)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{name}:1: a Statement of Applicability is a mapping with `framework` and `requirements`")
    try:
        parsed = _SoaDoc.model_validate(doc.data)
    except ValidationError as e:
        raise_problems(problems + list(pydantic_problems(doc, e)), "Statement of Applicability")
        raise  # unreachable: raise_problems raised
    known = {f.id for f in library.frameworks()}
    if parsed.framework not in known:
        raise ConfigError(doc.problem(("framework",), f"unknown framework {parsed.framework!r} "
                                      f"(known: {', '.join(sorted(known))})"))
    entries: dict[str, SoaEntry] = {}
    for i, item in enumerate(parsed.requirements):
        loc = ("requirements", i)
        full = item.id if ":" in item.id else f"{parsed.framework}:{item.id}"
        if full.split(":", 1)[0] != parsed.framework:
            problems.append(doc.problem(loc + ("id",), f"{item.id!r} belongs to another framework; this SoA is for "
                                        f"{parsed.framework!r}"))
            continue
        if not library.has(full) or full.startswith("common:"):
            problems.append(doc.problem(loc + ("id",), f"{item.id!r} is not a requirement of {parsed.framework!r}"))
            continue
        if full in entries:
            problems.append(doc.problem(loc + ("id",), f"{full!r} is listed twice (first at {entries[full].origin})"))
            continue
        justification = (item.justification or "").strip()
        if not item.applicable and not justification:
            problems.append(doc.problem(loc + ("justification",), f"{full} is excluded (applicable: no) without a "
                                        "justification; say why it does not apply"))
        entries[full] = SoaEntry(full, item.applicable, justification, (item.owner or "").strip(),
                                 Origin(name, doc.line(loc)))
    raise_problems(problems, "Statement of Applicability")
    return Soa(parsed.framework, path, entries)
