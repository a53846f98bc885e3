"""What every command shares: the application context (config, environment, prompt) and JSON output.

Kept apart from ``affidavit.agent.cli`` (the command group), so that command
modules import it without importing the group that registers them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from affidavit.errors import ConfigError


@dataclass
class App:
    config_path: Path | None
    verbose: int
    cwd: Path
    env: Mapping[str, str]
    scrubber: Any = None

    def load(self, *, required: bool = True) -> Any:
        """The loaded config (``affidavit.config.loader.LoadedConfig``)."""
        from affidavit.agent import logs
        from affidavit.config.loader import default_config_path, load_config

        path = self.config_path or default_config_path(self.cwd)
        if path is None:
            if required:
                raise ConfigError(
                    f"no config file: neither ./affidavit.yaml nor {user_config_hint()} exists",
                    hint="run `affidavit init`, or `affidavit collect` to start from the embedded default",
                )
            return None
        loaded = load_config(path, cwd=self.cwd, env=self.env)
        self.scrubber = logs.configure(self.verbose, loaded.secrets)
        return loaded

    def prompt(self) -> Any:
        """A passphrase prompt when a person is at a terminal, else None."""
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            return None

        def ask(text: str, confirm: bool) -> str:
            return str(click.prompt(text, hide_input=True, confirmation_prompt=confirm, err=True))

        return ask


def user_config_hint() -> str:
    return str(Path(click.get_app_dir("affidavit")) / "affidavit.yaml")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
