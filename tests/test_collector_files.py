"""The files collector: globbing, symbolic links, media types, front matter, errors."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

from affidavit.collectors.base import CollectContext, Evidence, Finding, collector_types
from affidavit.collectors.files import FilesCollector, FilesOptions, media_type, read_front_matter
from affidavit.errors import CollectorError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DOC = "common:CC-DOC-CONTROL"


def ctx(base: Path, *, controls: tuple[str, ...] = (), name: str = "policies", **options: Any) -> CollectContext:
    return CollectContext(
        source_name=name, options=FilesOptions(**options), controls=controls, now=NOW, base_dir=base
    )


def collect(base: Path, **options: Any) -> list[Evidence]:
    return list(FilesCollector().collect(ctx(base, **options)))


def write(base: Path, rel: str, text: str = "text\n") -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = tmp_path / "cfg"
    for rel in [
        "docs/a.md", "docs/z.md", "docs/sub/b.md", "docs/sub/deeper/c.md", "docs/notes.txt",
        "docs/.hidden.md", "docs/.cache/d.md", "other/e.md",
    ]:
        write(base, rel)
    return base


def names(evidence: list[Evidence]) -> list[str]:
    return [e.name for e in evidence]


def test_registered_as_an_entry_point() -> None:
    assert collector_types()["files"] is FilesCollector
    assert FilesCollector.type_name == "files"
    assert FilesCollector.options_model is FilesOptions


def test_recursive_glob_sorted_and_streamed(tree: Path) -> None:
    ev = collect(tree, paths=["docs/**/*.md"])
    assert names(ev) == [
        "files/policies/docs/a.md", "files/policies/docs/sub/b.md", "files/policies/docs/sub/deeper/c.md",
        "files/policies/docs/z.md",
    ]
    for e in ev:
        assert e.path is not None and e.path.is_file()
        assert e.data is None and e.content is None  # streamed from disk, never read into memory
        assert e.media_type == "text/markdown"
    assert ev[1].path == (tree / "docs/sub/b.md").resolve()


def test_single_star_stays_in_one_directory(tree: Path) -> None:
    assert names(collect(tree, paths=["docs/*.md"])) == ["files/policies/docs/a.md", "files/policies/docs/z.md"]
    assert names(collect(tree, paths=["*/*.md"])) == [
        "files/policies/docs/a.md", "files/policies/docs/z.md", "files/policies/other/e.md",
    ]


def test_hidden_files_only_when_named(tree: Path) -> None:
    assert names(collect(tree, paths=["docs/.*.md"])) == ["files/policies/docs/.hidden.md"]
    assert names(collect(tree, paths=["docs/.cache/*.md"])) == ["files/policies/docs/.cache/d.md"]


def test_exclude_and_several_patterns_deduplicated(tree: Path) -> None:
    ev = collect(tree, paths=["docs/**/*.md", "docs/*.md", "other/e.md", "docs/notes.txt"], exclude=["**/deeper/**", "docs/z.md"])
    assert names(ev) == [
        "files/policies/docs/a.md", "files/policies/docs/notes.txt", "files/policies/docs/sub/b.md",
        "files/policies/other/e.md",
    ]


def test_relative_paths_resolve_against_base_dir_not_cwd(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, "docs/a.md", "wrong file")
    monkeypatch.chdir(elsewhere)
    ev = collect(tree, paths=["docs/a.md"])
    assert ev[0].path == (tree / "docs/a.md").resolve()


def test_absolute_pattern_outside_base_keeps_its_absolute_name(tree: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "shared", "policy.yaml")
    ev = collect(tree, paths=[str(tmp_path / "shared" / "*.yaml")])
    assert names(ev) == [f"files/policies/{outside.as_posix()}"]
    assert ev[0].media_type == "application/yaml"


def test_controls_are_the_configs_plus_the_defaults_deduplicated(tree: Path) -> None:
    c = ctx(tree, controls=("common:ai-policy-documented", DOC, "common:ai-policy-documented"), paths=["docs/a.md"])
    (ev,) = FilesCollector().collect(c)
    assert ev.controls == ("common:ai-policy-documented", DOC)
    (ev,) = collect(tree, paths=["docs/a.md"])
    assert ev.controls == (DOC,)


def test_symbolic_links(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("affidavit.collectors")  # CollectContext's default logger
    log.addHandler(caplog.handler)  # even if the CLI's logging setup stopped propagation
    try:
        _check_symbolic_links(tmp_path, caplog)
    finally:
        log.removeHandler(caplog.handler)


def _check_symbolic_links(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "cfg"
    write(base, "docs/real.md")
    secret = write(tmp_path, "outside/secret.md")
    (base / "docs/inside-link.md").symlink_to(base / "docs/real.md")
    (base / "docs/outside-link.md").symlink_to(secret)
    (base / "docs/dangling.md").symlink_to(base / "docs/nothing.md")
    (base / "docs/loop").symlink_to(base / "docs")  # a directory loop
    (base / "docs/self.md").symlink_to(base / "docs/self.md")  # a link loop
    (base / "docs/linked-dir").symlink_to(tmp_path / "outside")
    caplog.set_level(logging.INFO)
    ev = collect(base, paths=["docs/**/*.md", "docs/**"])
    assert names(ev) == ["files/policies/docs/inside-link.md", "files/policies/docs/real.md"]
    assert ev[0].path == (base / "docs/real.md").resolve()
    assert "outside-link.md: a symbolic link to a file outside" in caplog.text


def test_a_named_link_to_a_file_outside_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "cfg"
    base.mkdir()
    (base / "policy.md").symlink_to(write(tmp_path, "elsewhere/etc.md"))
    with pytest.raises(CollectorError, match="no file matches"):
        collect(base, paths=["policy.md"])


def test_directories_sockets_and_fifos_are_skipped(tmp_path: Path) -> None:
    base = tmp_path / "c"
    write(base, "d/file.md")
    (base / "d/dir.md").mkdir()
    os.mkfifo(base / "d/fifo.md")
    # AF_UNIX paths are limited to ~100 bytes: bind from inside the directory
    cwd = os.getcwd()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.chdir(base / "d")
        sock.bind("sock.md")
    finally:
        os.chdir(cwd)
    try:
        assert names(collect(base, paths=["d/*"])) == ["files/policies/d/file.md"]
        with pytest.raises(CollectorError):
            collect(base, paths=["d/dir.md"])
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.md", "text/markdown"), ("A.MD", "text/markdown"), ("a.markdown", "text/markdown"),
        ("a.yaml", "application/yaml"), ("a.yml", "application/yaml"), ("a.json", "application/json"),
        ("a.pdf", "application/pdf"), ("a.txt", "text/plain"), ("a.csv", "text/csv"), ("a.tar.gz", "application/gzip"),
        ("a.unknownext", "application/octet-stream"), ("Makefile", "application/octet-stream"),
    ],
)
def test_media_types(name: str, expected: str) -> None:
    assert media_type(Path(name)) == expected


FRONT = """---
title: AI policy
owner: Grace Hopper
approved_by: Board of Directors
approved_on: 2026-01-10
next_review: 2027-01-10
---
# AI policy
"""


def test_front_matter_pass_with_effective_period(tmp_path: Path) -> None:
    write(tmp_path, "p.md", FRONT)
    (ev,) = collect(tmp_path, paths=["p.md"])
    assert ev.findings == (Finding(DOC, "pass", "approved by Board of Directors on 2026-01-10", "p.md"),)
    assert ev.effective_from == datetime(2026, 1, 10, tzinfo=timezone.utc)
    assert ev.effective_to == datetime(2027, 1, 10, tzinfo=timezone.utc)


def test_front_matter_in_yaml_with_quoted_dates_and_datetimes(tmp_path: Path) -> None:
    write(
        tmp_path, "p.yaml",
        "---\nowner: ml-team\napproved_by: CISO\napproved_on: '2025-12-01'\nnext_review: 2026-06-01T09:30:00+02:00\n---\nrules: []\n",
    )
    (ev,) = collect(tmp_path, paths=["*.yaml"])
    assert ev.findings[0].result == "pass"
    assert ev.effective_from == datetime(2025, 12, 1, tzinfo=timezone.utc)
    assert ev.effective_to == datetime(2026, 6, 1, 7, 30, tzinfo=timezone.utc)


def test_review_overdue_fails(tmp_path: Path) -> None:
    write(tmp_path, "p.md", FRONT.replace("2027-01-10", "2026-02-28"))
    (ev,) = collect(tmp_path, paths=["p.md"])
    assert ev.findings == (Finding(DOC, "fail", "review overdue since 2026-02-28", "p.md"),)
    # due today is not overdue yet
    write(tmp_path, "p.md", FRONT.replace("2027-01-10", "2026-03-01"))
    (ev,) = collect(tmp_path, paths=["p.md"])
    assert ev.findings[0].result == "pass"


@pytest.mark.parametrize(
    ("front", "reason"),
    [
        ("owner: x\n", "front matter lacks approved_by, approved_on"),
        ("approved_by: y\napproved_on: 2026-01-01\n", "front matter lacks owner"),
        ("owner: x\napproved_by: ''\napproved_on: 2026-01-01\n", "front matter lacks approved_by"),
        ("owner: x\napproved_by: y\napproved_on: last tuesday\n", "front matter lacks approved_on (not a date)"),
        ("owner: x\napproved_by: y\napproved_on: 2026-01-01\nnext_review: soon\n", "front matter lacks next_review (not a date)"),
    ],
)
def test_missing_conventions_are_unknown_never_fail(tmp_path: Path, front: str, reason: str) -> None:
    write(tmp_path, "p.md", f"---\n{front}---\nbody\n")
    (ev,) = collect(tmp_path, paths=["p.md"])
    assert ev.findings == (Finding(DOC, "unknown", reason, "p.md"),)


def test_no_front_matter(tmp_path: Path) -> None:
    write(tmp_path, "plain.md", "# no front matter\nowner: x\n")
    write(tmp_path, "unclosed.md", "---\nowner: x\n")
    write(tmp_path, "notamap.md", "---\n- a list\n---\n")
    write(tmp_path, "bad.md", "---\nowner: [unclosed\n---\n")
    write(tmp_path, "notes.txt", FRONT)  # not Markdown or YAML: no finding at all
    ev = collect(tmp_path, paths=["*"])
    by = {e.name.rsplit("/", 1)[1]: e for e in ev}
    for n in ("plain.md", "unclosed.md", "notamap.md", "bad.md"):
        assert by[n].findings == (
            Finding(DOC, "unknown", "no YAML front matter with owner, approved_by and approved_on", n),
        )
        assert by[n].effective_from is None and by[n].effective_to is None
    assert by["notes.txt"].findings == ()


def test_front_matter_is_read_from_the_first_64_kib_only(tmp_path: Path) -> None:
    near = FRONT.replace("title: AI policy\n", "title: AI policy\n#" + "x" * 60_000 + "\n")
    far = FRONT.replace("title: AI policy\n", "title: AI policy\n#" + "x" * 70_000 + "\n")
    assert read_front_matter(write(tmp_path, "near.md", near)) is not None
    assert read_front_matter(write(tmp_path, "far.md", far)) is None
    big = write(tmp_path, "big.md", FRONT + "y" * (8 << 20))
    assert read_front_matter(big) == {
        "title": "AI policy", "owner": "Grace Hopper", "approved_by": "Board of Directors",
        "approved_on": datetime(2026, 1, 10).date(), "next_review": datetime(2027, 1, 10).date(),
    }


def test_no_match_is_an_error_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, paths=["docs/**/*.md", "missing.md"])
    assert err.value.message == "source 'policies': no file matches ['docs/**/*.md', 'missing.md']"
    assert err.value.hint == "check the paths, or set allow_empty: true"
    assert err.value.exit_code == 1
    assert collect(tmp_path, paths=["docs/**/*.md"], allow_empty=True) == []


def test_check_counts_matches(tree: Path) -> None:
    assert FilesCollector().check(ctx(tree, paths=["docs/*.md"])) == "2 files match ['docs/*.md']"
    assert FilesCollector().check(ctx(tree, paths=["other/*.md"])) == "1 file match ['other/*.md']"
    with pytest.raises(CollectorError, match="no file matches"):
        FilesCollector().check(ctx(tree, paths=["nothing/*"]))


def test_unlistable_directory_is_an_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.scandir

    def scandir(path: Any) -> Any:
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CollectorError) as err:
        collect(tree, paths=["docs/**/*.md"])
    assert err.value.message == f"source 'policies': cannot list {tree / 'docs/sub'}: Permission denied"


def test_unreadable_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "p.md", FRONT)
    real_open = Path.open

    def deny(self: Path, *a: Any, **k: Any) -> Any:
        if self.name == "p.md":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, paths=["p.md"])
    assert "cannot read" in err.value.message and "Permission denied" in err.value.message


def test_options_are_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        FilesOptions(paths=[])
    with pytest.raises(pydantic.ValidationError):
        FilesOptions(paths=["a"], unknown=True)  # type: ignore[call-arg]
    assert FilesOptions(paths=["a"]).exclude == [] and FilesOptions(paths=["a"]).allow_empty is False
