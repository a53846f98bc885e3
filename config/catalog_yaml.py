"""Read one control-library YAML file: its data, the line of every key, and its typed shape.

Used by :mod:`affidavit.config.catalog` (frameworks, common controls, mappings,
collector overrides) and :mod:`affidavit.agent.soa`. Problems are strings of the
form ``file:line: key.path: what is wrong``; the caller gathers them and raises
one :class:`~affidavit.errors.ConfigError` listing all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from affidavit.errors import ConfigError

Loc = tuple[str | int, ...]
Relationship = Literal["equal", "superset", "subset", "intersect", "related"]
Automation = Literal["full", "partial", "manual"]

FRAMEWORK_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
LOCAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()-]*$")
FULL_ID = re.compile(r"^([a-z0-9][a-z0-9-]*):([A-Za-z0-9][A-Za-z0-9._()-]*)$")
COMMON = "common"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML document and the 1-based line of each key path in it."""

    name: str  # how messages name the file
    data: Any
    lines: dict[Loc, int]

    def line(self, loc: Loc) -> int:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return 1

    def where(self, loc: Loc) -> str:
        return f"{self.name}:{self.line(loc)}"

    def problem(self, loc: Loc, message: str) -> str:
        return f"{self.where(loc)}: {format_path(loc)}: {message}"


def read_yaml(text: str, name: str) -> tuple[YamlDoc, list[str]]:
    """Parse ``text``; ConfigError naming file, line and column when it is not YAML.

    Also returns problems the YAML parser lets through: duplicate keys in a
    mapping (PyYAML keeps the last one silently).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems: list[str] = []
    if node is not None:
        _walk(node, (), lines, problems, name)
    return YamlDoc(name, data, lines), problems


def _walk(node: yaml.Node, path: Loc, lines: dict[Loc, int], problems: list[str], name: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = str(k.value) if isinstance(k, yaml.ScalarNode) else str(k)
            line = k.start_mark.line + 1
            if key in seen:
                problems.append(f"{name}:{line}: {format_path(path + (key,))}: key {key!r} appears twice in this mapping")
            seen.add(key)
            lines[path + (key,)] = line
            _walk(v, path + (key,), lines, problems, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, problems, name)


def pydantic_problems(doc: YamlDoc, err: ValidationError, prefix: Loc = ()) -> Iterator[str]:
    """One message per validation error, naming the file, line and key path."""
    for e in err.errors():
        loc: Loc = prefix + tuple(p for p in e["loc"] if isinstance(p, (str, int)))
        kind = e["type"]
        if kind == "extra_forbidden":
            msg = f"unknown key {str(loc[-1])!r}"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "string_type":
            msg = "expected text; quote values such as '4.1' or 'yes' so YAML does not read them as numbers or booleans"
        elif kind == "literal_error":
            msg = e["msg"].replace("Input should be", "expected")
        else:
            msg = e["msg"].removeprefix("Value error, ")
        yield doc.problem(loc, msg)


def check_full_id(value: str) -> str:
    if not FULL_ID.match(value):
        raise ValueError(f"{value!r} is not an id; write framework:id, e.g. iso42001:A.6.2.5 or common:CC-AI-POLICY")
    return value


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FrameworkDoc(_Doc):
    id: StrictStr = Field(description="framework slug, e.g. iso42001")
    title: StrictStr
    version: StrictStr | None = None
    source: StrictStr = Field(description="where the ids and titles come from")
    url: StrictStr | None = None

    @model_validator(mode="after")
    def _slug(self) -> FrameworkDoc:
        if not FRAMEWORK_SLUG.match(self.id) or self.id == COMMON:
            raise ValueError(f"{self.id!r} is not a framework slug; use lower case letters, digits and '-' (not 'common')")
        return self


class RequirementDoc(_Doc):
    id: StrictStr = Field(description="the id inside its framework, e.g. A.6.2.5")
    title: StrictStr | None = None
    group: StrictStr | None = None
    kind: StrictStr | None = None
    parent: StrictStr | None = None
    ref: StrictStr | None = None  # the id as the source prints it, e.g. "GOVERN 1.1"
    note: StrictStr | None = None

    @model_validator(mode="after")
    def _id(self) -> RequirementDoc:
        if not LOCAL_ID.match(self.id):
            raise ValueError(f"{self.id!r} is not a requirement id; use letters, digits and . _ ( ) -")
        return self


class ControlMappingDoc(_Doc):
    target: StrictStr
    relationship: Relationship
    rationale: StrictStr | None = None
    source: StrictStr | None = None
    note: StrictStr | None = None

    @model_validator(mode="after")
    def _target(self) -> ControlMappingDoc:
        check_full_id(self.target)
        return self


class MappingDoc(_Doc):
    from_: StrictStr = Field(alias="from")
    to: StrictStr
    relationship: Relationship
    rationale: StrictStr | None = None
    source: StrictStr | None = None
    note: StrictStr | None = None

    @model_validator(mode="after")
    def _ids(self) -> MappingDoc:
        check_full_id(self.from_)
        check_full_id(self.to)
        return self


class ControlDoc(_Doc):
    id: StrictStr
    title: StrictStr
    statement: StrictStr
    group: StrictStr | None = None
    automation: Automation = "partial"
    ttl: StrictStr | None = None
    rationale: StrictStr | None = None
    mappings: list[ControlMappingDoc] = Field(default_factory=list)

    @model_validator(mode="after")
    def _id(self) -> ControlDoc:
        check_full_id(self.id)
        if not self.id.startswith(COMMON + ":"):
            raise ValueError(f"{self.id!r}: common control ids start with 'common:', e.g. common:CC-AI-POLICY")
        return self


class OverrideDoc(_Doc):
    collector: StrictStr = Field(description="collector type, e.g. files")
    control: StrictStr | None = Field(None, description="only evidence this collector maps to this control")
    controls: list[StrictStr] = Field(description="the controls that evidence counts for instead (or as well)")
    mode: Literal["replace", "add"] = "replace"


class LibraryFileDoc(_Doc):
    """The shape of every control-library file; each section is optional."""

    source: StrictStr | None = None  # default provenance of the mappings in this file
    framework: FrameworkDoc | None = None
    requirements: list[RequirementDoc] = Field(default_factory=list)
    controls: list[ControlDoc] = Field(default_factory=list)
    mappings: list[MappingDoc] = Field(default_factory=list)
    collector_overrides: list[OverrideDoc] = Field(default_factory=list)

    @model_validator(mode="after")
    def _requirements_need_framework(self) -> LibraryFileDoc:
        if self.requirements and self.framework is None:
            raise ValueError("requirements need a `framework:` section in the same file naming their framework")
        return self


SECTIONS = ("source", "framework", "requirements", "controls", "mappings", "collector_overrides")
