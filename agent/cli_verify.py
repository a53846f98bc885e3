"""``affidavit verify``: offline verification of an auditor bundle or a store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from affidavit.agent.cli import App, emit_json

pass_app = click.make_pass_decorator(App)


def _trusted_keys(paths: tuple[Path, ...]) -> dict[str, Any]:
    from affidavit.errors import UsageError
    from affidavit.signing.keys import keyid_of, load_public_key_file

    if not paths:
        raise UsageError(
            "no trust anchor: pass --key PEM (the signer's public key, obtained from its owner, "
            "not from the bundle)"
        )
    keys = {}
    for p in paths:
        k = load_public_key_file(p)
        keys[keyid_of(k)] = k
    return keys


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--key", "keys", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="A trusted public key (PEM); repeatable. Required: the bundle's own keys are never trusted.")
@click.option("--json", "as_json", is_flag=True, help="The full report as JSON on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@pass_app
def verify(app: App, target: Path, keys: tuple[Path, ...], as_json: bool, progress: bool | None) -> None:
    """Verify an auditor bundle (.tar.gz, .tar or directory) or a store, offline.

    Checks every signature against the keys you pass with --key, every
    artefact's digest, that every member is covered by a signed statement and
    every signed subject is present. Prints VALID or INVALID with a report per
    artefact. Exit 0 VALID, 1 INVALID, 2 usage error or unreadable input.
    """
    from affidavit.signing.verify import verify_bundle

    trusted = _trusted_keys(keys)
    target = app.cwd / target
    if (target / "affidavit-store.json").is_file():
        _verify_store(target, trusted, as_json)
        return
    show = (sys.stderr.isatty() if progress is None else progress) and not as_json
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("verify", total=None)
            report = verify_bundle(target, trusted, progress=lambda n: bar.advance(task, n))
    else:
        report = verify_bundle(target, trusted)
    if as_json:
        emit_json(report.to_json())
    else:
        for line in report.summary_lines():
            click.echo(line)
    click.get_current_context().exit(0 if report.valid else 1)


def _verify_store(root: Path, trusted: dict[str, Any], as_json: bool) -> None:
    from affidavit.store.local import LocalStore

    problems = LocalStore.open(root).fsck(list(trusted.values()))
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        emit_json({"target": str(root), "kind": "store", "valid": not errors,
                   "failures": [{"member": p.where, "reason": p.problem} for p in errors]})
    else:
        click.echo(f"{'VALID' if not errors else 'INVALID'}: store {root}")
        for p in errors:
            click.echo(f"  {p.where}: {p.problem}")
    click.get_current_context().exit(0 if not errors else 1)


COMMANDS = [verify]
