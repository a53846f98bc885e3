"""The ``affidavit`` command line: a thin layer over the agent's functions.

Exit codes: 0 success; 1 some sources failed, or a bundle is INVALID;
2 usage, config or unreadable input (architecture.md).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from affidavit import __version__
from affidavit.agent.cli_app import App
from affidavit.errors import AffidavitError

EPILOG = "Exit codes: 0 success, 1 some sources failed or a bundle is INVALID, 2 usage, config or input error."


# Each command's module, imported when the command runs (or help lists them all): `affidavit verify`
# need not import the collectors', store's and controls' commands. A test checks this table.
COMMAND_MODULES = {
    **dict.fromkeys(("init", "collect", "check", "daemon", "schema"), "cli_collect"),
    **dict.fromkeys(("evidence", "store", "keys", "export"), "cli_store"),
    **dict.fromkeys(("controls", "coverage", "soa"), "cli_controls"),
    "verify": "cli_verify",
    "log": "cli_log",
    "mlflow": "cli_mlflow",
}


class AffidavitGroup(click.Group):
    """Loads its commands when needed; turns every AffidavitError into one line on stderr and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(f"affidavit.agent.{COMMAND_MODULES[cmd_name]}")
            for cmd in module.COMMANDS:
                self.commands.setdefault(cmd.name or "", cmd)
            found = super().get_command(ctx, cmd_name)
        return found

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AffidavitError as e:
            obj = ctx.find_object(App)
            message = e.diagnostics()
            if obj is not None and obj.scrubber is not None:
                message = obj.scrubber.scrub(message)
            click.echo(f"error: {message}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=AffidavitGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Config file (default: ./affidavit.yaml, then the user config directory).")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(__version__, prog_name="affidavit")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """Affidavit collects evidence of how you govern AI, signs it, maps it to
    ISO/IEC 42001, ISO/IEC 27001 and the EU AI Act, and exports bundles that
    auditors verify offline.

    \b
    A first tour, in an empty directory or a repository:
      affidavit collect                       # creates config + key, collects, signs, stores
      affidavit evidence list                 # what the store holds
      affidavit export --out audit.tar.gz     # a self-contained auditor bundle
      affidavit verify audit.tar.gz --key affidavit.pub.pem
    """
    from affidavit.agent import logs

    app = App(config_path, verbose, Path.cwd(), dict(os.environ))
    app.scrubber = logs.configure(verbose)
    ctx.obj = app


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point for tests: run the CLI in-process and return the exit code."""
    try:
        main.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 2
    return 0
