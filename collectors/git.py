"""The ``git`` collector: commit history, signatures, branches and CODEOWNERS.

It runs the ``git`` command line (list arguments, no shell, ``LC_ALL=C``, a
timeout); text from the config (the ref) only ever follows
``--end-of-options``, and everything after that is a hex object name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from affidavit.collectors.base import CollectContext, Collector, CollectorOptions, Evidence, Finding
from affidavit.errors import CollectorError

logger = logging.getLogger(__name__)

CODE_REVIEW = "common:CC-CODE-REVIEW"
DOC_CONTROL = "common:CC-DOC-CONTROL"
AI_ROLES = "common:CC-AI-ROLES"
GIT_TIMEOUT = 120.0  # seconds, per git command
# GitHub's precedence: the first one found wins
CODEOWNERS_PATHS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")
SIGNATURE_STATUS = {
    "G": "good",
    "B": "bad",
    "U": "unknown-validity",
    "X": "expired",
    "Y": "expired-key",
    "R": "revoked-key",
    "E": "cannot-check",
    "N": "none",
}
_REPO_ENV = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE",
})
_SINCE = re.compile(r"^(\d{1,6})([hdwy])$")
_SINCE_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), "y": timedelta(days=365)}
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# one record per commit: NUL-separated fields, the subject last so that nothing in it can shift the others
_LOG_FIELDS = ("%H", "%P", "%an", "%ae", "%at", "%cn", "%ce", "%ct", "%G?", "%GS", "%GK", "%s")
_LOG_FORMAT = "%x00".join(_LOG_FIELDS)


class GitOptions(CollectorOptions):
    """``repo`` (relative to the config), how many commits, how far back, which ref."""

    repo: str = "."
    max_commits: int = Field(200, ge=1, le=100_000)
    since: str | None = None
    ref: str = "HEAD"

    @field_validator("since")
    @classmethod
    def _since(cls, value: str | None) -> str | None:
        if value is not None and not _SINCE.match(value) and _parse_iso(value) is None:
            raise ValueError("use a duration such as 90d, 12w, 24h or 1y, or an ISO 8601 date")
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not value or value.startswith("-") or any(c in value for c in "\0\n\r "):
            raise ValueError("a ref is a branch, tag or commit name, not an option")
        return value


def _parse_iso(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def since_time(since: str, now: datetime) -> datetime:
    """The absolute UTC time a ``since`` option means at ``now``."""
    m = _SINCE.match(since)
    if m:
        return now - int(m.group(1)) * _SINCE_UNITS[m.group(2)]
    parsed = _parse_iso(since)
    assert parsed is not None  # validated by GitOptions
    return parsed


def iso_z(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def strip_userinfo(url: str) -> str:
    """A remote URL without user name or password (``https://user:token@host/x`` -> ``https://host/x``)."""
    if "://" not in url:
        return url  # scp-like (git@host:org/repo) or a path: no credentials there
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# -- running git -------------------------------------------------------------------


@dataclass(frozen=True)
class Git:
    """A git repository and the command line to query it."""

    path: Path  # what the config names
    timeout: float = GIT_TIMEOUT

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        argv = ["git", "--no-pager", "-c", "core.quotepath=off", "-c", "i18n.logOutputEncoding=UTF-8",
                "-C", str(self.path), *args]
        # the repository is the one -C names, whatever the caller's environment says (a hook sets GIT_DIR)
        env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
        env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
        try:
            proc = subprocess.run(
                argv, input=stdin, capture_output=True, env=env, timeout=self.timeout,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise CollectorError("git is not installed or not on PATH", hint="install git") from None
        except subprocess.TimeoutExpired:
            raise CollectorError(
                f"git {args[0]} in {self.path} did not finish within {self.timeout:.0f} s",
                hint="lower max_commits or check the repository",
            ) from None
        if check and proc.returncode != 0:
            raise CollectorError(f"git {args[0]} failed in {self.path}: {_first_line(proc.stderr)}")
        return proc

    def text(self, *args: str) -> str:
        return self.run(*args).stdout.decode("utf-8", "replace")

    def maybe(self, *args: str) -> str | None:
        """Output of a query that may legitimately fail (a missing config key, no upstream)."""
        proc = self.run(*args, check=False)
        return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None


def _first_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[0] if lines else "no error message"


@dataclass(frozen=True)
class Repo:
    top: Path  # the working tree, or the git directory of a bare repository
    name: str
    remote_name: str | None
    remote_url: str | None


def open_repo(git: Git) -> Repo:
    """Check that ``git.path`` is a repository with git installed; describe it."""
    if shutil.which("git") is None:
        raise CollectorError("git is not installed or not on PATH", hint="install git")
    if not git.path.exists():
        raise CollectorError(f"git repository {git.path} does not exist", hint="check the source's repo option")
    proc = git.run("rev-parse", "--is-bare-repository", "--absolute-git-dir", check=False)
    if proc.returncode != 0:
        detail = _first_line(proc.stderr)
        if "not a git repository" in detail or not git.path.is_dir():
            raise CollectorError(
                f"{git.path} is not a git repository", hint="set repo: to the directory of a git clone"
            )
        if "dubious ownership" in detail:
            raise CollectorError(
                f"git refuses to read {git.path}: it belongs to another user",
                hint=f"run `git config --global --add safe.directory {git.path}` as the user Affidavit runs as",
            )
        raise CollectorError(f"cannot open git repository {git.path}: {detail}")
    bare, git_dir = proc.stdout.decode("utf-8", "replace").splitlines()[:2]
    top = Path(git_dir) if bare == "true" else Path(git.text("rev-parse", "--show-toplevel").strip())
    name = top.name.removesuffix(".git") if bare == "true" else top.name
    remotes = git.text("remote").split()
    remote = "origin" if "origin" in remotes else (remotes[0] if remotes else None)
    url = git.maybe("config", "--get", f"remote.{remote}.url") if remote else None
    return Repo(top=top, name=name, remote_name=remote, remote_url=strip_userinfo(url) if url else None)


def resolve_ref(git: Git, ref: str) -> str:
    """The commit a ref names, as a full hex object name."""
    sha = git.maybe("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if sha and _HEX.match(sha):
        return sha
    if not git.maybe("rev-list", "-n", "1", "--all"):
        raise CollectorError(f"git repository {git.path} has no commits yet", hint="commit something first")
    raise CollectorError(f"ref {ref!r} not found in git repository {git.path}", hint="check the source's ref option")


# -- commits ------------------------------------------------------------------------


def read_commits(git: Git, head: str, max_commits: int, since: datetime | None) -> list[dict[str, Any]]:
    args = ["log", "--no-show-signature", "--no-color", "--no-decorate", "-z", f"--format={_LOG_FORMAT}",
            f"--max-count={max_commits}"]
    if since is not None:
        args.append(f"--since=@{int(since.timestamp())}")
    proc = git.run(*args, "--end-of-options", head, "--")
    if proc.stderr:
        logger.debug("git log in %s said: %s", git.path, _first_line(proc.stderr))
    out = proc.stdout.decode("utf-8", "replace").removesuffix("\0")  # -z terminates each record with NUL
    fields = out.split("\0")
    n = len(_LOG_FIELDS)
    if out and len(fields) % n != 0:
        raise CollectorError(f"git log in {git.path} gave output this collector cannot read")
    commits = [_commit(fields[i : i + n]) for i in range(0, len(fields) if out else 0, n)]
    _mark_uncheckable_signatures(git, commits)
    return commits


def _commit(f: Sequence[str]) -> dict[str, Any]:
    sha, parents, an, ae, at, cn, ce, ct, status, signer, key, subject = f
    return {
        "sha": sha,
        "parents": len(parents.split()),
        "author": {"name": an, "email": ae, "date": iso_z(datetime.fromtimestamp(int(at), timezone.utc))},
        "committer": {"name": cn, "email": ce, "date": iso_z(datetime.fromtimestamp(int(ct), timezone.utc))},
        "subject": subject,
        "signature": {
            "status": SIGNATURE_STATUS.get(status, "cannot-check"),
            "signer": signer or None,
            "key": key or None,
        },
    }


def _mark_uncheckable_signatures(git: Git, commits: list[dict[str, Any]]) -> None:
    """A signed commit git could not verify (no allowed-signers file for SSH) says "N": make it cannot-check."""
    unsigned = [c for c in commits if c["signature"]["status"] == "none"]
    if not unsigned:
        return
    out = git.run("cat-file", "--batch", stdin="".join(c["sha"] + "\n" for c in unsigned).encode()).stdout
    pos = 0
    for c in unsigned:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        body = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
        headers = body.split(b"\n\n", 1)[0]
        if re.search(rb"^gpgsig(-sha256)? ", headers, re.MULTILINE):
            c["signature"]["status"] = "cannot-check"


# -- branches and CODEOWNERS --------------------------------------------------------------


def read_branches(git: Git, repo: Repo) -> dict[str, Any]:
    fmt = "%(refname:short)%00%(objectname)%00%(upstream:short)%00%(HEAD)"
    out = git.text("for-each-ref", f"--format={fmt}", "refs/heads/")
    branches = []
    current = None
    for line in out.splitlines():
        name, sha, upstream, head = line.split("\0")
        branches.append({"name": name, "head": sha, "upstream": upstream or None})
        if head == "*":
            current = name
    default = None
    if repo.remote_name:
        ref = git.maybe("symbolic-ref", "--quiet", f"refs/remotes/{repo.remote_name}/HEAD")
        if ref:
            default = ref.removeprefix(f"refs/remotes/{repo.remote_name}/")
    return {
        "repository": _repository(repo),
        "current": current,
        "remote_default_branch": default,
        "branches": sorted(branches, key=lambda b: b["name"]),
    }


def read_codeowners(git: Git, head: str) -> tuple[str, bytes] | None:
    """The first CODEOWNERS file in the commit, by GitHub's precedence."""
    for path in CODEOWNERS_PATHS:
        proc = git.run("cat-file", "blob", f"{head}:{path}", check=False)
        if proc.returncode == 0:
            return path, proc.stdout
    return None


def codeowners_patterns(text: bytes) -> int:
    """How many patterns the file assigns to at least one owner."""
    count = 0
    for line in text.decode("utf-8", "replace").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        owners = []
        for w in words[1:]:
            if w.startswith("#"):  # an inline comment
                break
            owners.append(w)
        if owners:
            count += 1
    return count


def _repository(repo: Repo) -> dict[str, Any]:
    return {"name": repo.name, "remote": repo.remote_url}


# -- the collector -------------------------------------------------------------------------


class GitCollector(Collector):
    """Commits with signature status, branches, and CODEOWNERS of one repository."""

    type_name: ClassVar[str] = "git"
    options_model: ClassVar[type[CollectorOptions]] = GitOptions
    default_controls: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "commits": (CODE_REVIEW, DOC_CONTROL),
        "branches": (DOC_CONTROL,),
        "codeowners": (AI_ROLES,),
    }

    def _setup(self, ctx: CollectContext) -> tuple[GitOptions, Git, Repo, str]:
        opts = ctx.options
        if not isinstance(opts, GitOptions):
            raise TypeError(f"the git collector needs GitOptions, not {type(opts).__name__}")
        path = Path(os.path.normpath(ctx.base_dir / os.path.expanduser(opts.repo)))
        git = Git(path)
        repo = open_repo(git)
        return opts, git, repo, resolve_ref(git, opts.ref)

    def check(self, ctx: CollectContext) -> str:
        opts, git, repo, head = self._setup(ctx)
        branch = git.maybe("symbolic-ref", "--quiet", "--short", "HEAD") if opts.ref == "HEAD" else None
        where = f"branch {branch}" if branch else ("detached HEAD" if opts.ref == "HEAD" else f"ref {opts.ref}")
        return f"git repository {repo.top} at {head[:7]} ({where})"

    def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
        opts, git, repo, head = self._setup(ctx)
        since = since_time(opts.since, ctx.now) if opts.since else None
        commits = read_commits(git, head, opts.max_commits, since)
        ctx.logger.info("source %s: %d commit(s) from %s", ctx.source_name, len(commits), head[:12])
        owners = read_codeowners(git, head)

        def controls(kind: str, *extra: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys((*ctx.controls, *self.default_controls[kind], *extra)))

        times = [datetime.fromisoformat(c["committer"]["date"].replace("Z", "+00:00")) for c in commits]
        findings: tuple[Finding, ...] = ()
        if owners is None:
            findings = (Finding(AI_ROLES, "unknown", "no CODEOWNERS file", repo.name),)
        prefix = f"git/{ctx.source_name}"
        yield Evidence(
            name=f"{prefix}/commits.json",
            media_type="application/json",
            data={"repository": _repository(repo), "ref": opts.ref, "head": head, "commits": commits},
            controls=controls("commits", *(f.control for f in findings)),
            findings=findings,
            effective_from=min(times, default=None),
            effective_to=max(times, default=None),
        )
        yield Evidence(
            name=f"{prefix}/branches.json",
            media_type="application/json",
            data=read_branches(git, repo),
            controls=controls("branches"),
        )
        if owners is not None:
            path, text = owners
            n = codeowners_patterns(text)
            finding = (
                Finding(AI_ROLES, "pass", f"CODEOWNERS names owners for {n} pattern{'s' if n != 1 else ''}", path)
                if n
                else Finding(AI_ROLES, "unknown", "CODEOWNERS names no owners", path)
            )
            yield Evidence(
                name=f"{prefix}/CODEOWNERS",
                media_type="text/plain",
                content=text,
                controls=controls("codeowners"),
                findings=(finding,),
            )
