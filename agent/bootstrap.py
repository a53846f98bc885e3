"""First-run set-up: the commented config file ``init`` writes and the embedded default."""

from __future__ import annotations

import subprocess
from importlib.resources import files
from pathlib import Path

from affidavit.errors import ConfigError

DOC_PATTERNS = [
    "**/*[Pp]olicy*.md",
    "**/*[Mm]odel[-_ ][Cc]ard*.md",
    "**/MODEL_CARD*.md",
    "**/*[Rr]isk*[Rr]egister*",
    "**/*[Ii]mpact*[Aa]ssessment*.md",
]
DOC_EXCLUDES = ["affidavit-store/**", ".git/**", "**/node_modules/**", "**/.venv/**", "**/venv/**"]


def in_git_repo(directory: Path) -> bool:
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "true"


def sources_block(directory: Path, env: dict[str, str] | None = None) -> str:
    """The built-in local sources for a directory: its AI governance documents, in a repo its history, and
    a local MLflow store when there is one (``MLFLOW_TRACKING_URI``, else ``./mlflow.db`` or ``./mlruns``)."""
    import json
    import os
    from urllib.parse import urlsplit

    env = dict(os.environ) if env is None else env
    pats = "\n".join(f'      - "{p}"' for p in DOC_PATTERNS)
    excl = ", ".join(f'"{p}"' for p in DOC_EXCLUDES)
    block = (
        "  - name: ai-governance-docs      # AI policies, model cards, risk registers kept as files\n"
        "    type: files\n"
        '    schedule: "every 1d"\n'
        "    ttl: 30d\n"
        "    paths:\n"
        f"{pats}\n"
        f"    exclude: [{excl}]\n"
        "    allow_empty: true\n"
        '    controls: ["common:CC-AI-POLICY"]\n'
    )
    if in_git_repo(directory):
        block += (
            "  - name: repo-history            # commits, signature status, branches, CODEOWNERS\n"
            "    type: git\n"
            "    repo: .\n"
            '    schedule: "every 1d"\n'
            "    ttl: 7d\n"
            "    max_commits: 200\n"
        )
    uri = env.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:  # a URI with credentials in it stays in the environment, referenced
        parts = urlsplit(uri)
        shown = "${MLFLOW_TRACKING_URI}" if parts.password or parts.username else uri
        tracking = f"{json.dumps(shown)}   # from MLFLOW_TRACKING_URI"
    elif (directory / "mlflow.db").is_file():
        tracking = '"sqlite:///mlflow.db"   # the local MLflow store found here'
    elif (directory / "mlruns").is_dir():
        tracking = "./mlruns   # the local MLflow store found here"
    else:
        return block
    block += (
        "  - name: mlflow                  # registered models, versions, runs, model files, experiments\n"
        "    type: mlflow\n"
        '    schedule: "every 1d"\n'
        "    ttl: 7d\n"
        f"    tracking_uri: {tracking}\n"
    )
    if uri:
        for key, var in (("username", "MLFLOW_TRACKING_USERNAME"), ("password", "MLFLOW_TRACKING_PASSWORD"),
                         ("token", "MLFLOW_TRACKING_TOKEN")):
            if env.get(var) and not (key != "token" and env.get("MLFLOW_TRACKING_TOKEN")):
                block += f'    {key}: "${{{var}}}"\n'
    return block


def render_config(directory: Path, passphrase_file: str | None) -> str:
    template = files("affidavit.config").joinpath("templates/affidavit.yaml").read_text(encoding="utf-8")
    line = (
        f"  passphrase_file: {passphrase_file}   # or set AFFIDAVIT_PASSPHRASE"
        if passphrase_file
        else "  # passphrase_file: ./affidavit.passphrase   # or set AFFIDAVIT_PASSPHRASE"
    )
    return template.replace("{passphrase_line}", line).replace("{sources}", sources_block(directory).rstrip("\n"))


def write_config(path: Path, text: str) -> None:
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; not overwriting it") from None
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
