"""The ``files`` collector: documents on disk (policies, model cards, procedures).

Each matching regular file is one artefact, streamed from disk. Markdown and
YAML files may carry YAML front matter (``owner``, ``approved_by``,
``approved_on``, ``next_review``) that gives the artefact its effective period
and a document-control finding.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path, PurePath
from typing import Any, ClassVar

import yaml
from pydantic import Field

from affidavit.collectors.base import CollectContext, Collector, CollectorOptions, Evidence, Finding
from affidavit.errors import CollectorError

DOC_CONTROL = "common:CC-DOC-CONTROL"
FRONT_MATTER_LIMIT = 64 * 1024
_MAGIC = frozenset("*?[")
_MEDIA_OVERRIDES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
}
_ENCODED_MEDIA = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}
_FRONT_MATTER_SUFFIXES = frozenset(_MEDIA_OVERRIDES)


class FilesOptions(CollectorOptions):
    """``paths``: glob patterns (``**`` recursive); ``exclude``: patterns to leave out."""

    paths: list[str] = Field(min_length=1)
    exclude: list[str] = []
    allow_empty: bool = False


# -- glob matching ------------------------------------------------------------------


def _has_magic(part: str) -> bool:
    return any(c in _MAGIC for c in part)


def _match_parts(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Glob-match path components: ``*`` stays inside a component, ``**`` spans any
    number of them; hidden names match only a pattern that names them with a dot."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        for i in range(len(parts) + 1):
            if i and parts[i - 1].startswith("."):
                return False
            if _match_parts(pattern[1:], parts[i:]):
                return True
        return False
    if not parts:
        return False
    if parts[0].startswith(".") and not head.startswith("."):
        return False
    return fnmatchcase(parts[0], head) and _match_parts(pattern[1:], parts[1:])


class _Pattern:
    """A glob split into a literal root directory and the components to match below it."""

    def __init__(self, text: str, base_dir: Path) -> None:
        path = Path(os.path.normpath(base_dir / os.path.expanduser(text)))
        parts = path.parts
        split = next((i for i, p in enumerate(parts) if _has_magic(p)), len(parts))
        self.text = text
        self.root = Path(*parts[:split])
        self.rest = tuple(parts[split:])
        self.recursive = "**" in self.rest
        self.hidden = any(p.startswith(".") for p in self.rest)

    def matches(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        return _match_parts(self.rest, rel.parts)


def absolute(path: Path) -> Path:
    """An absolute, normalised path without resolving symbolic links."""
    return Path(os.path.normpath(path.absolute()))


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def find_files(patterns: Sequence[str], exclude: Sequence[str], base_dir: Path, logger: logging.Logger) -> list[Path]:
    """Regular files matching any pattern and no exclude pattern, sorted, each once.

    Directories are walked without following symbolic links (so links cannot
    loop); a linked file is taken only when it resolves inside ``base_dir`` or
    the pattern's root directory. Sockets, FIFOs and devices are skipped.
    """
    base_dir = absolute(base_dir)
    includes = [_Pattern(p, base_dir) for p in patterns]
    excludes = [_Pattern(p, base_dir) for p in exclude]
    found: dict[str, Path] = {}
    for pat in includes:
        for candidate in _walk(pat):
            if any(x.matches(candidate) for x in excludes):
                continue
            # a link may point anywhere under the config directory or the pattern's root
            root = pat.root if pat.rest else pat.root.parent
            target = _regular_file(candidate, [base_dir.resolve(), root.resolve()], logger)
            if target is not None:
                found.setdefault(candidate.as_posix(), candidate)
    return [found[k] for k in sorted(found)]


def _walk(pat: _Pattern) -> Iterator[Path]:
    """Every non-directory under the pattern's root that matches it."""
    if not pat.rest:  # a literal path
        if os.path.lexists(pat.root) and not pat.root.is_dir():
            yield pat.root
        return
    if not pat.root.is_dir():
        return
    max_depth = None if pat.recursive else len(pat.rest)

    def fail(err: OSError) -> None:
        raise CollectorError(
            f"cannot list {err.filename}: {err.strerror}", hint="check the directory's permissions, or exclude it"
        )

    for dirpath, dirnames, filenames in os.walk(pat.root, onerror=fail, followlinks=False):
        here = Path(dirpath)
        depth = len(here.relative_to(pat.root).parts)
        if max_depth is not None and depth + 1 >= max_depth:
            dirnames[:] = []  # files at the last level only
        if not pat.hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            if pat.matches(path):
                yield path


def _regular_file(path: Path, roots: Sequence[Path], logger: logging.Logger) -> Path | None:
    """The file to read for ``path``, or None for anything that is not a safe regular file."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = path.resolve(strict=True)
            if not _inside(target, roots):
                logger.warning("skipping %s: a symbolic link to a file outside %s", path, roots[0])
                return None
            st = target.stat()
            path = target
    except (OSError, RuntimeError) as e:  # dangling link, link loop, vanished file
        logger.warning("skipping %s: %s", path, getattr(e, "strerror", None) or type(e).__name__)
        return None
    if not stat.S_ISREG(st.st_mode):
        logger.info("skipping %s: not a regular file", path)
        return None
    return path


# -- media types and front matter ------------------------------------------------------


def media_type(path: PurePath, types: mimetypes.MimeTypes | None = None) -> str:
    """The artefact's media type from its name.

    Python's built-in table only (not the machine's mime.types), so the
    answer is the same on every machine.
    """
    override = _MEDIA_OVERRIDES.get(path.suffix.lower())
    if override:
        return override
    guessed, encoding = (types or mimetypes.MimeTypes()).guess_type(path.name, strict=False)
    if encoding:
        return _ENCODED_MEDIA.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


def read_front_matter(path: Path) -> dict[str, Any] | None:
    """The YAML mapping between ``---`` lines at the top of a file (first 64 KiB only)."""
    with path.open("rb") as f:
        head = f.read(FRONT_MATTER_LIMIT)
    text = head.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip() in ("---", "..."):
            try:
                data = yaml.safe_load("".join(lines[1:i]))
            except yaml.YAMLError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _as_datetime(value: Any) -> datetime | None:
    """A front-matter date as a UTC datetime (dates at midnight); None if not a date."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return _as_datetime(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _day(value: datetime) -> str:
    return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat().replace("+00:00", "Z")


def doc_control(
    front: Mapping[str, Any] | None, now: datetime, subject: str
) -> tuple[Finding, datetime | None, datetime | None]:
    """The document-control finding and the effective period from a file's front matter."""
    if front is None:
        reason = "no YAML front matter with owner, approved_by and approved_on"
        return Finding(DOC_CONTROL, "unknown", reason, subject), None, None
    approved_on = _as_datetime(front.get("approved_on"))
    next_review = _as_datetime(front.get("next_review"))
    if next_review is not None:
        overdue = (
            next_review.date() < now.astimezone(timezone.utc).date()
            if next_review.time() == datetime.min.time()
            else next_review < now
        )
        if overdue:
            finding = Finding(DOC_CONTROL, "fail", f"review overdue since {_day(next_review)}", subject)
            return finding, approved_on, next_review
    problems = [k for k in ("owner", "approved_by", "approved_on") if front.get(k) in (None, "")]
    if "approved_on" not in problems and approved_on is None:
        problems.append("approved_on (not a date)")
    if front.get("next_review") not in (None, "") and next_review is None:
        problems.append("next_review (not a date)")
    if problems:
        reason = "front matter lacks " + ", ".join(problems)
        return Finding(DOC_CONTROL, "unknown", reason, subject), approved_on, next_review
    assert approved_on is not None
    reason = f"approved by {front['approved_by']} on {_day(approved_on)}"
    return Finding(DOC_CONTROL, "pass", reason, subject), approved_on, next_review


# -- the collector ---------------------------------------------------------------------


def _dedup(*groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for g in groups for c in g))


class FilesCollector(Collector):
    """Files matched by glob patterns, one artefact each."""

    type_name: ClassVar[str] = "files"
    options_model: ClassVar[type[CollectorOptions]] = FilesOptions
    default_controls: ClassVar[Mapping[str, tuple[str, ...]]] = {"document": (DOC_CONTROL,)}

    def _options(self, ctx: CollectContext) -> FilesOptions:
        if not isinstance(ctx.options, FilesOptions):
            raise TypeError(f"the files collector needs FilesOptions, not {type(ctx.options).__name__}")
        return ctx.options

    def _find(self, ctx: CollectContext) -> list[Path]:
        opts = self._options(ctx)
        try:
            found = find_files(opts.paths, opts.exclude, ctx.base_dir, ctx.logger)
        except CollectorError as e:
            raise CollectorError(f"source {ctx.source_name!r}: {e.message}", hint=e.hint) from None
        if not found and not opts.allow_empty:
            raise CollectorError(
                f"source {ctx.source_name!r}: no file matches {opts.paths}",
                hint="check the paths, or set allow_empty: true",
            )
        return found

    def check(self, ctx: CollectContext) -> str:
        n = len(self._find(ctx))
        return f"{n} file{'s' if n != 1 else ''} match {self._options(ctx).paths}"

    def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
        controls = _dedup(ctx.controls, self.default_controls["document"])
        base = absolute(ctx.base_dir)
        types = mimetypes.MimeTypes()
        files = self._find(ctx)
        ctx.logger.info("source %s: %d file(s) matched", ctx.source_name, len(files))
        for path in files:
            target = path.resolve()
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                rel = path.as_posix()
            findings: tuple[Finding, ...] = ()
            start = end = None
            if path.suffix.lower() in _FRONT_MATTER_SUFFIXES:
                try:
                    front = read_front_matter(target)
                except OSError as e:
                    raise CollectorError(
                        f"source {ctx.source_name!r}: cannot read {path}: {e.strerror}",
                        hint="check the file's permissions",
                    ) from None
                finding, start, end = doc_control(front, ctx.now, rel)
                findings = (finding,)
            yield Evidence(
                name=f"files/{ctx.source_name}/{rel}",
                media_type=media_type(path, types),
                path=target,
                controls=controls,
                findings=findings,
                effective_from=start,
                effective_to=end,
            )


__all__ = ["FilesCollector", "FilesOptions", "absolute", "doc_control", "find_files", "media_type", "read_front_matter"]
