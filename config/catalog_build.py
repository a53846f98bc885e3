"""Build a ControlLibrary from parsed files: ids, references and duplicates checked across files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from affidavit.config.catalog import (
    CollectorOverride,
    CommonControl,
    ControlLibrary,
    Framework,
    LibraryFile,
    Mapping,
    Origin,
    Requirement,
    is_common,
    parse_file,
    raise_problems,
)
from affidavit.config.catalog_yaml import LibraryFileDoc, Loc, YamlDoc
from affidavit.config.durations import parse_duration


@dataclass
class _Pending:
    """A mapping read from a file, checked once every file's ids are known."""

    mapping: Mapping
    doc: YamlDoc
    loc: Loc
    builtin: bool


@dataclass
class _State:
    frameworks: dict[str, Framework] = field(default_factory=dict)
    requirements: dict[str, Requirement] = field(default_factory=dict)
    controls: dict[str, CommonControl] = field(default_factory=dict)
    mappings: list[_Pending] = field(default_factory=list)
    overrides: list[tuple[CollectorOverride, YamlDoc, Loc]] = field(default_factory=list)
    parents: list[tuple[Requirement, YamlDoc, Loc]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_library(sources: Sequence[tuple[str, bytes, bool]]) -> ControlLibrary:
    """``sources``: (name, bytes, builtin) per file, built-in files first."""
    st = _State()
    files: list[LibraryFile] = []
    for name, data, builtin in sources:
        doc, parsed, problems = parse_file(name, data)
        st.problems.extend(problems)
        files.append(LibraryFile(name, data, builtin))
        if isinstance(parsed, LibraryFileDoc):
            _collect(st, doc, parsed, builtin)
    for req, doc, loc in st.parents:
        parent = st.requirements.get(req.parent or "")
        if parent is None or parent.framework != req.framework:
            st.problems.append(doc.problem(loc + ("parent",), f"parent {req.parent!r} is not a requirement of "
                                           f"framework {req.framework!r}"))
    mappings = _check_mappings(st)
    overrides = _check_overrides(st)
    raise_problems(st.problems)
    return ControlLibrary(list(st.frameworks.values()), list(st.requirements.values()),
                          list(st.controls.values()), mappings, overrides, files)


def _collect(st: _State, doc: YamlDoc, parsed: LibraryFileDoc, builtin: bool) -> None:
    default_source = parsed.source or ("project" if builtin else f"user file {doc.name}")
    fw = parsed.framework
    if fw is not None:
        if fw.id in st.frameworks:
            st.problems.append(doc.problem(("framework", "id"), f"framework {fw.id!r} is already defined at "
                                           f"{st.frameworks[fw.id].origin}"))
        else:
            st.frameworks[fw.id] = Framework(fw.id, fw.title, fw.source, fw.version, fw.url,
                                             Origin(doc.name, doc.line(("framework",))))
            for i, r in enumerate(parsed.requirements):
                loc: Loc = ("requirements", i)
                full = f"{fw.id}:{r.id}"
                if full in st.requirements:
                    st.problems.append(doc.problem(loc + ("id",), f"requirement {full!r} is defined twice "
                                                   f"(first at {st.requirements[full].origin})"))
                    continue
                req = Requirement(full, fw.id, r.id, r.title, r.group, r.kind,
                                  f"{fw.id}:{r.parent}" if r.parent else None, r.ref, r.note,
                                  Origin(doc.name, doc.line(loc)))
                st.requirements[full] = req
                if r.parent is not None:
                    st.parents.append((req, doc, loc))
    for i, c in enumerate(parsed.controls):
        loc = ("controls", i)
        if c.id in st.controls:
            st.problems.append(doc.problem(loc + ("id",), f"common control {c.id!r} is defined twice "
                                           f"(first at {st.controls[c.id].origin})"))
            continue
        ttl = None
        if c.ttl is not None:
            try:
                ttl = parse_duration(c.ttl)
            except ValueError as e:
                st.problems.append(doc.problem(loc + ("ttl",), str(e)))
        st.controls[c.id] = CommonControl(c.id, c.title, c.statement, c.automation, ttl, c.group, c.rationale,
                                          Origin(doc.name, doc.line(loc)))
        for j, m in enumerate(c.mappings):
            mloc = loc + ("mappings", j)
            st.mappings.append(_Pending(
                Mapping(c.id, m.target, m.relationship, m.source or default_source, m.rationale, m.note,
                        Origin(doc.name, doc.line(mloc))), doc, mloc, builtin))
    for i, sm in enumerate(parsed.mappings):
        loc = ("mappings", i)
        st.mappings.append(_Pending(
            Mapping(sm.from_, sm.to, sm.relationship, sm.source or default_source, sm.rationale, sm.note,
                    Origin(doc.name, doc.line(loc))), doc, loc, builtin))
    for i, o in enumerate(parsed.collector_overrides):
        loc = ("collector_overrides", i)
        st.overrides.append((CollectorOverride(o.collector, o.control, tuple(o.controls), o.mode,
                                               Origin(doc.name, doc.line(loc))), doc, loc))


def _check_mappings(st: _State) -> list[Mapping]:
    kept: dict[tuple[str, str], _Pending] = {}
    for p in st.mappings:
        m = p.mapping
        ok = True
        if m.source not in st.controls and m.source not in st.requirements:
            st.problems.append(p.doc.problem(p.loc + ("from",) if "from" in _keys(p) else p.loc,
                                             f"maps from {m.source!r}, which is neither a common control nor a "
                                             f"requirement in the library"))
            ok = False
        if m.target not in st.requirements:
            key = "to" if "to" in _keys(p) else "target"
            hint = _id_hint(st, m.target)
            st.problems.append(p.doc.problem(p.loc + (key,), f"maps to {m.target!r}, which does not exist{hint}"))
            ok = False
        if not ok:
            continue
        pair = (m.source, m.target)
        prev = kept.get(pair)
        if prev is not None and prev.builtin == p.builtin:
            st.problems.append(p.doc.problem(p.loc, f"mapping {m.source} -> {m.target} is defined twice "
                                             f"(first at {prev.mapping.origin})"))
            continue
        kept[pair] = p  # a user file's mapping replaces the built-in one for the same pair
    return [p.mapping for p in kept.values()]


def _keys(p: _Pending) -> set[str]:
    return {str(k[-1]) for k in p.doc.lines if k[:-1] == p.loc and k}


def _id_hint(st: _State, target: str) -> str:
    fw, _, local = target.partition(":")
    if is_common(target):
        return " (a mapping's target must be a framework requirement, not a common control)"
    if fw not in st.frameworks:
        return f" (no framework {fw!r}; known: {', '.join(st.frameworks)})"
    return f" in framework {fw!r} (its ids look like {next(iter(r.local_id for r in st.requirements.values() if r.framework == fw), '?')!r})"


def _check_overrides(st: _State) -> list[CollectorOverride]:
    out = []
    sources = {(o.collector, o.control) for o, _, _ in st.overrides}
    for o, doc, loc in st.overrides:
        bad = False
        for key, ids in (("control", [o.control] if o.control else []), ("controls", list(o.controls))):
            for c in ids:
                if c not in st.controls:
                    st.problems.append(doc.problem(loc + (key,), f"{c!r} is not a common control in the library"))
                    bad = True
        for c in o.controls:
            if (o.collector, c) in sources and c != o.control:
                st.problems.append(doc.problem(loc + ("controls",), f"{c!r} is itself overridden for collector "
                                               f"{o.collector!r}; overrides do not chain, map to the final control"))
                bad = True
        if not bad:
            out.append(o)
    return out
