"""Shared fixtures: an isolated environment for CLI runs and helpers to make git repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from affidavit.signing.keys import LocalSigner, generate_private_key
from affidavit.store.local import LocalStore


def require_tool(name: str) -> str:
    """The path of a tool the tests need; a missing tool FAILS the test (CI installs it)."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: .ci/run installs it; install it to run these tests"
    return path


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no Affidavit variables and a private HOME / config directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_GLOBAL=os.devnull,
               GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    return env


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    require_tool("git")
    full_env = dict(env or os.environ)
    full_env.update(GIT_AUTHOR_NAME="Ada Lovelace", GIT_AUTHOR_EMAIL="ada@example.org",
                    GIT_COMMITTER_NAME="Ada Lovelace", GIT_COMMITTER_EMAIL="ada@example.org",
                    GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=full_env, check=True)
    return out.stdout


def make_repo(path: Path, files: Mapping[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        git(path, "add", name)
        git(path, "commit", "-q", "-m", f"add {name}")
    return path


def affidavit_bin() -> str:
    """The installed console script of the environment running the tests."""
    exe = Path(sys.executable).parent / "affidavit"
    assert exe.exists(), f"the affidavit console script is not installed next to {sys.executable}"
    return str(exe)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    """A new local evidence store in the test's temporary directory, closed after."""
    s = LocalStore.open(tmp_path / "store", create=True)
    yield s
    s.close()


@pytest.fixture
def signer() -> LocalSigner:
    """A fresh ECDSA P-256 signing key."""
    return LocalSigner(generate_private_key())
