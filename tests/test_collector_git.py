"""The git collector against real repositories made with the git command line."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

from affidavit.collectors.base import CollectContext, Evidence, Finding, canonical_json, collector_types
from affidavit.collectors.git import GitCollector, GitOptions, strip_userinfo
from affidavit.errors import CollectorError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def require_tool(name: str) -> str:
    """A tool the tests need: missing, the test FAILS (it never skips)."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: install it to run these tests"
    return path


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config reaches the tests (nor the collector's git)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.delenv(var, raising=False)


def git(repo: Path, *args: str, when: datetime | None = None, author: tuple[str, str] = ("Ada Lovelace", "ada@example.org"),
        committer: tuple[str, str] | None = None, stdin: str | None = None) -> str:
    require_tool("git")
    committer = committer or author
    env = dict(os.environ, GIT_AUTHOR_NAME=author[0], GIT_AUTHOR_EMAIL=author[1],
               GIT_COMMITTER_NAME=committer[0], GIT_COMMITTER_EMAIL=committer[1], LC_ALL="C")
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when.isoformat()
    out = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    return path


def commit(repo: Path, message: str, when: datetime, files: dict[str, str] | None = None, **kw: Any) -> str:
    for name, text in (files or {}).items():
        f = repo / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        git(repo, "add", "--", name)
    git(repo, "commit", "-q", "--allow-empty", "-m", message, when=when, **kw)
    return git(repo, "rev-parse", "HEAD")


def ctx(base: Path, name: str = "app", **options: Any) -> CollectContext:
    return CollectContext(source_name=name, options=GitOptions(**options), controls=(), now=NOW, base_dir=base)


def collect(base: Path, **options: Any) -> dict[str, Evidence]:
    return {e.name: e for e in GitCollector().collect(ctx(base, **options))}


def day(n: int) -> datetime:
    """n days before NOW."""
    return NOW - timedelta(days=n)


def test_registered_as_an_entry_point() -> None:
    types = collector_types()
    assert types["git"] is GitCollector
    assert GitCollector.type_name == "git" and GitCollector.options_model is GitOptions


def test_commits_exact(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj")
    odd = "--format=%H \x1f tab\there \u00e9t\u00e9 %x00 | \"quotes\" `tick` $(echo no)"
    c1 = commit(repo, "first commit", datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    c2 = commit(repo, odd, datetime(2025, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
                author=("Grace Hopper", "grace@example.org"), committer=("Bot", "bot@example.org"))
    c3 = commit(repo, "subject line\n\nbody line one\nbody line two", datetime(2025, 7, 1, tzinfo=timezone.utc))
    ev = collect(tmp_path, repo="proj")
    assert sorted(ev) == ["git/app/branches.json", "git/app/commits.json"]
    commits = ev["git/app/commits.json"]
    assert commits.media_type == "application/json"
    none = {"status": "none", "signer": None, "key": None}
    ada = {"name": "Ada Lovelace", "email": "ada@example.org"}
    assert commits.data == {
        "repository": {"name": "proj", "remote": None},
        "ref": "HEAD",
        "head": c3,
        "commits": [
            {"sha": c3, "parents": 1, "author": {**ada, "date": "2025-07-01T00:00:00Z"},
             "committer": {**ada, "date": "2025-07-01T00:00:00Z"}, "subject": "subject line", "signature": none},
            {"sha": c2, "parents": 1,
             "author": {"name": "Grace Hopper", "email": "grace@example.org", "date": "2025-06-01T08:00:00Z"},
             "committer": {"name": "Bot", "email": "bot@example.org", "date": "2025-06-01T08:00:00Z"},
             "subject": odd, "signature": none},
            {"sha": c1, "parents": 0, "author": {**ada, "date": "2025-01-02T03:04:05Z"},
             "committer": {**ada, "date": "2025-01-02T03:04:05Z"}, "subject": "first commit", "signature": none},
        ],
    }
    assert commits.effective_from == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert commits.effective_to == datetime(2025, 7, 1, tzinfo=timezone.utc)
    assert commits.controls == ("common:CC-CODE-REVIEW", "common:CC-DOC-CONTROL", "common:CC-AI-ROLES")
    assert commits.findings == (Finding("common:CC-AI-ROLES", "unknown", "no CODEOWNERS file", "proj"),)
    canonical_json(commits.data)  # JSON-able


def test_merge_commit_counts_parents(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    commit(repo, "base", day(10))
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "feature work", day(9))
    git(repo, "checkout", "-q", "main")
    commit(repo, "main work", day(8))
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge feature", "feature", when=day(7))
    commits = collect(tmp_path, repo="r")["git/app/commits.json"].data["commits"]
    assert commits[0]["subject"] == "Merge feature" and commits[0]["parents"] == 2
    assert len(commits) == 4


def test_max_commits_and_since(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    shas = [commit(repo, f"c{n}", day(n)) for n in (200, 100, 50, 20, 5)]
    got = collect(tmp_path, repo="r", max_commits=2)["git/app/commits.json"].data["commits"]
    assert [c["sha"] for c in got] == [shas[4], shas[3]]
    got = collect(tmp_path, repo="r", since="60d")["git/app/commits.json"].data["commits"]
    assert [c["subject"] for c in got] == ["c5", "c20", "c50"]
    got = collect(tmp_path, repo="r", since="8w")["git/app/commits.json"].data["commits"]
    assert [c["subject"] for c in got] == ["c5", "c20", "c50"]
    got = collect(tmp_path, repo="r", since=day(30).date().isoformat())["git/app/commits.json"].data["commits"]
    assert [c["subject"] for c in got] == ["c5", "c20"]
    nothing = collect(tmp_path, repo="r", since="1d")["git/app/commits.json"]
    assert nothing.data["commits"] == [] and nothing.effective_from is None and nothing.effective_to is None


def test_ref_option(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    base = commit(repo, "base", day(3))
    git(repo, "tag", "v1.0")
    git(repo, "checkout", "-q", "-b", "release/2")
    rel = commit(repo, "release work", day(2))
    git(repo, "checkout", "-q", "main")
    commit(repo, "main work", day(1))
    data = collect(tmp_path, repo="r", ref="release/2")["git/app/commits.json"].data
    assert data["ref"] == "release/2" and data["head"] == rel
    assert [c["subject"] for c in data["commits"]] == ["release work", "base"]
    assert collect(tmp_path, repo="r", ref="v1.0")["git/app/commits.json"].data["head"] == base
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="r", ref="no-such-branch")
    assert err.value.message == f"ref 'no-such-branch' not found in git repository {tmp_path / 'r'}"
    assert "check the source's ref option" in err.value.diagnostics()
    assert GitCollector().check(ctx(tmp_path, repo="r", ref="v1.0")) == f"git repository {repo} at {base[:7]} (ref v1.0)"


@pytest.mark.parametrize("ref", ["--output=/tmp/pwned", "-p", "", "main\n--all"])
def test_option_like_refs_are_refused(ref: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        GitOptions(ref=ref)


def test_options_are_validated() -> None:
    assert GitOptions().model_dump() == {"repo": ".", "max_commits": 200, "since": None, "ref": "HEAD"}
    for bad in ({"max_commits": 0}, {"max_commits": 100_001}, {"since": "yesterday"}, {"since": "90"},
                {"unknown": 1}):
        with pytest.raises(pydantic.ValidationError):
            GitOptions(**bad)
    assert GitOptions(max_commits=100_000, since="2026-01-01").since == "2026-01-01"


def _ssh_key(tmp_path: Path, name: str) -> tuple[Path, str, str]:
    """A new ed25519 key: its path, its public key line, its SHA256 fingerprint."""
    require_tool("ssh-keygen")
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True)
    return key, Path(f"{key}.pub").read_text().strip(), fingerprint.stdout.split()[1]


def test_ssh_signatures(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    key, pub, fingerprint = _ssh_key(tmp_path, "signer")
    commit(repo, "unsigned", day(3))
    git(repo, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "--allow-empty", "-S",
        "-m", "signed", when=day(2))
    signed = git(repo, "rev-parse", "HEAD")

    # no allowed-signers file: git cannot check, and says "N"; the collector sees the signature anyway
    commits = collect(tmp_path, repo="r")["git/app/commits.json"].data["commits"]
    assert commits[0]["signature"] == {"status": "cannot-check", "signer": None, "key": None}
    assert commits[1]["signature"] == {"status": "none", "signer": None, "key": None}

    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"ada@example.org {pub}\n")
    git(repo, "config", "gpg.ssh.allowedSignersFile", str(allowed))
    commits = collect(tmp_path, repo="r")["git/app/commits.json"].data["commits"]
    assert commits[0]["sha"] == signed
    assert commits[0]["signature"] == {"status": "good", "signer": "ada@example.org", "key": fingerprint}
    assert commits[1]["signature"]["status"] == "none"

    # a key the allowed-signers file does not list
    _, other_pub, _ = _ssh_key(tmp_path, "other")
    allowed.write_text(f"ada@example.org {other_pub}\n")
    commits = collect(tmp_path, repo="r")["git/app/commits.json"].data["commits"]
    assert commits[0]["signature"] == {"status": "unknown-validity", "signer": None, "key": fingerprint}

    # the same signature over a changed message: bad
    allowed.write_text(f"ada@example.org {pub}\n")
    raw = git(repo, "cat-file", "commit", signed) + "\n"
    forged = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", stdin=raw.replace("\nsigned\n", "\nforged\n"))
    git(repo, "update-ref", "refs/heads/forged", forged)
    commits = collect(tmp_path, repo="r", ref="forged")["git/app/commits.json"].data["commits"]
    assert commits[0]["subject"] == "forged"
    assert commits[0]["signature"]["status"] == "bad"


def test_branches_upstream_and_remote_default(tmp_path: Path) -> None:
    origin = new_repo(tmp_path / "origin")
    first = commit(origin, "one", day(5))
    git(origin, "branch", "dev")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "checkout", "-q", "-b", "topic")
    topic = commit(clone, "topic work", day(1))
    git(clone, "checkout", "-q", "--track", "origin/dev")
    git(clone, "checkout", "-q", "topic")
    ev = collect(tmp_path, repo="clone")["git/app/branches.json"]
    assert ev.controls == ("common:CC-DOC-CONTROL",)
    assert ev.data == {
        "repository": {"name": "clone", "remote": str(origin)},
        "current": "topic",
        "remote_default_branch": "main",
        "branches": [
            {"name": "dev", "head": first, "upstream": "origin/dev"},
            {"name": "main", "head": first, "upstream": "origin/main"},
            {"name": "topic", "head": topic, "upstream": None},
        ],
    }


def test_remote_credentials_never_appear(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    commit(repo, "one", day(1))
    git(repo, "remote", "add", "origin", "https://user:s3cr3t-token@git.example.com:8443/org/repo.git")
    git(repo, "remote", "add", "backup", "git@github.com:org/repo.git")
    ev = collect(tmp_path, repo="r")
    assert ev["git/app/commits.json"].data["repository"] == {"name": "r", "remote": "https://git.example.com:8443/org/repo.git"}
    for e in ev.values():
        blob = canonical_json(e.data) if e.data is not None else (e.content or b"")
        assert b"s3cr3t-token" not in blob and b"user:" not in blob


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:token@host/repo.git", "https://host/repo.git"),
        ("https://ghp_abc@github.com/o/r", "https://github.com/o/r"),
        ("ssh://git@host:2222/o/r.git", "ssh://host:2222/o/r.git"),
        ("https://[::1]:8080/r", "https://[::1]:8080/r"),
        ("https://u:p@[::1]:8080/r", "https://[::1]:8080/r"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
    ],
)
def test_strip_userinfo(url: str, clean: str) -> None:
    assert strip_userinfo(url) == clean


CODEOWNERS = "# owners\n* @org/platform\n/docs/ @grace   # writers\n/models/ @org/ml @ada\n/vendor/\n"


@pytest.mark.parametrize(
    ("present", "chosen"),
    [
        ((".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"), ".github/CODEOWNERS"),
        (("CODEOWNERS", "docs/CODEOWNERS"), "CODEOWNERS"),
        (("docs/CODEOWNERS",), "docs/CODEOWNERS"),
    ],
)
def test_codeowners_precedence(tmp_path: Path, present: tuple[str, ...], chosen: str) -> None:
    repo = new_repo(tmp_path / "r")
    commit(repo, "owners", day(1), files={p: f"# from {p}\n" + CODEOWNERS for p in present})
    ev = collect(tmp_path, repo="r")
    owners = ev["git/app/CODEOWNERS"]
    assert owners.media_type == "text/plain"
    assert owners.content == (f"# from {chosen}\n" + CODEOWNERS).encode()
    assert owners.findings == (Finding("common:CC-AI-ROLES", "pass", "CODEOWNERS names owners for 3 patterns", chosen),)
    assert owners.controls == ("common:CC-AI-ROLES",)
    assert ev["git/app/commits.json"].findings == ()
    assert ev["git/app/commits.json"].controls == ("common:CC-CODE-REVIEW", "common:CC-DOC-CONTROL")


def test_codeowners_comes_from_the_commit_not_the_working_tree(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    commit(repo, "one", day(1), files={"CODEOWNERS": "# nobody yet\n/vendor/\n"})
    (repo / ".github").mkdir()
    (repo / ".github/CODEOWNERS").write_text("* @uncommitted\n")
    owners = collect(tmp_path, repo="r")["git/app/CODEOWNERS"]
    assert owners.content == b"# nobody yet\n/vendor/\n"
    assert owners.findings == (Finding("common:CC-AI-ROLES", "unknown", "CODEOWNERS names no owners", "CODEOWNERS"),)


def test_bare_repository(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    sha = commit(repo, "one", day(1))
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(tmp_path / "mirror.git"))
    data = collect(tmp_path, repo="mirror.git")["git/app/commits.json"].data
    assert data["repository"]["name"] == "mirror" and data["head"] == sha


def test_relative_repo_resolves_against_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "config"
    repo = new_repo(base / "src" / "proj")
    sha = commit(repo, "one", day(1))
    other = new_repo(tmp_path / "other")
    commit(other, "other", day(2))
    monkeypatch.chdir(other)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))  # as inside a git hook: must not win over repo
    assert collect(base, repo="src/proj")["git/app/commits.json"].data["head"] == sha
    assert collect(repo)["git/app/commits.json"].data["head"] == sha  # the default "."


def test_check(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    sha = commit(repo, "one", day(1))
    assert GitCollector().check(ctx(tmp_path, repo="r")) == f"git repository {repo} at {sha[:7]} (branch main)"
    git(repo, "checkout", "-q", "--detach")
    assert GitCollector().check(ctx(tmp_path, repo="r")) == f"git repository {repo} at {sha[:7]} (detached HEAD)"


def test_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for call in (lambda c: list(GitCollector().collect(c)), GitCollector().check):
        with pytest.raises(CollectorError) as err:
            call(ctx(tmp_path, repo="plain"))
        assert err.value.message == f"{tmp_path / 'plain'} is not a git repository"
        assert err.value.hint == "set repo: to the directory of a git clone"
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="missing")
    assert err.value.message == f"git repository {tmp_path / 'missing'} does not exist"


def test_a_file_is_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="file")
    assert err.value.message == f"{tmp_path / 'file'} is not a git repository"


def test_repository_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = new_repo(tmp_path / "theirs")
    commit(repo, "one", day(1))
    if os.geteuid() == 0:  # real git, on a repository really owned by someone else
        os.chown(repo, 12345, 12345)
    else:  # only root can give a file away: a stand-in git says what the real one would
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "git").write_text(
            f"#!/bin/sh\necho \"fatal: detected dubious ownership in repository at '{repo}'\" >&2\nexit 128\n"
        )
        (fake / "git").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="theirs")
    assert err.value.message == f"git refuses to read {repo}: it belongs to another user"
    assert err.value.hint == f"run `git config --global --add safe.directory {repo}` as the user Affidavit runs as"


def test_empty_repository(tmp_path: Path) -> None:
    new_repo(tmp_path / "empty")
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="empty")
    assert err.value.message == f"git repository {tmp_path / 'empty'} has no commits yet"


def test_git_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = new_repo(tmp_path / "r")
    commit(repo, "one", day(1))
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="r")
    assert err.value.message == "git is not installed or not on PATH"
    assert err.value.exit_code == 1


def test_git_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = new_repo(tmp_path / "r")
    commit(repo, "one", day(1))

    def slow(argv: list[str], **kw: Any) -> Any:
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", slow)
    with pytest.raises(CollectorError) as err:
        collect(tmp_path, repo="r")
    assert err.value.message == f"git rev-parse in {repo} did not finish within 120 s"
