"""The ``affidavit`` command line: a thin layer over the agent's functions.

Exit codes: 0 success; 1 some sources failed, or a bundle is INVALID;
2 usage, config or unreadable input (architecture.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from affidavit import __version__
from affidavit.agent.cli_app import App
from affidavit.errors import AffidavitError

EPILOG = "Exit codes: 0 success, 1 some sources failed or a bundle is INVALID, 2 usage, config or input error."


class AffidavitGroup(click.Group):
    """Turns every AffidavitError into one line on stderr and its exit code."""

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


def _register() -> None:
    from affidavit.agent import cli_collect, cli_controls, cli_log, cli_mlflow, cli_store, cli_verify

    for mod in (cli_collect, cli_store, cli_verify, cli_controls, cli_log, cli_mlflow):
        for cmd in mod.COMMANDS:
            main.add_command(cmd)


_register()


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
