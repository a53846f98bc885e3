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
@click.option("--log-key", "log_key", type=click.Path(path_type=Path, dir_okay=False),
              help="The transparency log's public key (PEM). Without it the log is reported 'not checked'.")
@click.option("--checkpoint", "checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              help="A signed checkpoint of the log you kept earlier: the bundle's log must extend it "
                   "(needs --log-key).")
@click.option("--json", "as_json", is_flag=True, help="The full report as JSON on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@pass_app
def verify(app: App, target: Path, keys: tuple[Path, ...], log_key: Path | None, checkpoint: Path | None,
           as_json: bool, progress: bool | None) -> None:
    """Verify an auditor bundle (.tar.gz, .tar or directory) or a store, offline.

    Checks every signature against the keys you pass with --key, every
    artefact's digest, that every member is covered by a signed statement and
    every signed subject is present. With --log-key, also each run's
    transparency-log entry, its inclusion proof and the checkpoint's
    signature; with --checkpoint, that nothing logged before that checkpoint
    was removed or rewritten. Prints VALID or INVALID with a report per
    artefact. Exit 0 VALID, 1 INVALID, 2 usage error or unreadable input.
    """
    from affidavit.signing.verify import verify_bundle

    trusted = _trusted_keys(keys)
    log_public, old_checkpoint = _log_inputs(app.cwd, log_key, checkpoint)
    target = app.cwd / target
    if (target / "affidavit-store.json").is_file():
        _verify_store(target, trusted, as_json, log_public, old_checkpoint)
        return
    show = (sys.stderr.isatty() if progress is None else progress) and not as_json
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("verify", total=None)
            report = verify_bundle(target, trusted, progress=lambda n: bar.advance(task, n), log_key=log_public,
                                   checkpoint=old_checkpoint)
    else:
        report = verify_bundle(target, trusted, log_key=log_public, checkpoint=old_checkpoint)
    if as_json:
        emit_json(report.to_json())
    else:
        for line in report.summary_lines():
            click.echo(line)
    click.get_current_context().exit(0 if report.valid else 1)


def _log_inputs(cwd: Path, log_key: Path | None, checkpoint: Path | None) -> tuple[Any, str | None]:
    """The log's public key and the auditor's old checkpoint text (UsageError / InputError when unusable)."""
    from affidavit.errors import InputError, UsageError
    from affidavit.signing.keys import load_public_key_file

    if checkpoint is not None and log_key is None:
        raise UsageError("--checkpoint needs --log-key: a checkpoint is only worth its log's signature",
                         hint="pass the log's public key (affidavit-log.pub.pem) with --log-key")
    key = load_public_key_file(cwd / log_key) if log_key is not None else None
    text = None
    if checkpoint is not None:
        try:
            text = (cwd / checkpoint).read_bytes().decode("utf-8")
        except OSError as e:
            raise InputError(f"cannot read checkpoint {checkpoint}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"{checkpoint} is not a checkpoint (not UTF-8 text)",
                             hint="pass a file written by `affidavit log checkpoint`") from None
    return key, text


def _verify_store(root: Path, trusted: dict[str, Any], as_json: bool, log_key: Any, checkpoint: str | None) -> None:
    """fsck, plus the transparency log against the attestations (and, with --log-key, against the auditor's)."""
    from affidavit.errors import StoreError
    from affidavit.store.local import LocalStore
    from affidavit.store.tlog_fsck import check_store_log, fsck_log

    store = LocalStore.open(root)
    problems = store.fsck(list(trusted.values()))
    envelopes = {}
    for path in store.attestation_files():
        try:
            att = store.read_attestation(path)
        except StoreError:
            continue  # fsck reported it
        envelopes[att.run.run_id] = att.document
    problems += fsck_log(store.root, envelopes) + check_store_log(store.root, log_key, checkpoint)
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
