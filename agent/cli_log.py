"""``affidavit log``: the store's transparency log, as auditors use it.

``log checkpoint`` prints the latest signed checkpoint (auditors keep these);
``log prove --from OLD`` prints the consistency proof from an old checkpoint to
the latest, after checking that the old one is this log's and that the log
still extends it. Exit 0 on success, 1 when the old checkpoint is not
consistent with the log (removed or rewritten entries), 2 on usage or input errors.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from affidavit.agent.cli_app import App, emit_json

pass_app = click.make_pass_decorator(App)


def _open_log(app: App) -> Any:
    from affidavit.errors import StoreError
    from affidavit.store.local import LocalStore
    from affidavit.store.tlog_store import LogStore

    root = LocalStore.open(app.load().config.store.path, create=False).root
    log = LogStore.open(root)
    if log.checkpoint is None:
        log.close()
        raise StoreError(f"the transparency log of {root} has no entries yet",
                         hint="run `affidavit collect`: each signed run is logged")
    return log


def _invalid(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    click.get_current_context().exit(1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@click.group("log")
def log_group() -> None:
    """The transparency log of the store's signed runs."""


@log_group.command("checkpoint")
@click.option("--json", "as_json", is_flag=True, help="The checkpoint and its fields as JSON.")
@pass_app
def log_checkpoint(app: App, as_json: bool) -> None:
    """Print the latest signed checkpoint (auditors keep it).

    A later `affidavit verify BUNDLE --log-key PEM --checkpoint FILE` proves
    that bundle's log extends this checkpoint.
    """
    with _open_log(app) as log:
        if as_json:
            emit_json({"origin": log.meta.origin, "log_id": log.meta.log_id.hex(), "tree_size": log.size,
                       "root_hash": _b64(log.root), "checkpoint": log.checkpoint})
        else:
            click.echo(log.checkpoint, nl=False)


@log_group.command("prove")
@click.option("--from", "old", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="A checkpoint of this log printed earlier by `affidavit log checkpoint`.")
@pass_app
def log_prove(app: App, old: Path) -> None:
    """Print the consistency proof from an old checkpoint to the latest (JSON).

    The proof's hashes are base64, lowest level first (RFC 9162 §2.1.4); the
    latest signed checkpoint is included. Exit 1 when the log does not extend
    the old checkpoint.
    """
    from affidavit.errors import InputError
    from affidavit.signing.tlog_note import CheckpointError, parse_checkpoint, verify_checkpoint

    try:
        text = (app.cwd / old).read_bytes().decode("utf-8")
        parse_checkpoint(text)
    except OSError as e:
        raise InputError(f"cannot read checkpoint {old}: {e.strerror}") from None
    except (UnicodeDecodeError, CheckpointError) as e:
        raise InputError(f"{old} is not a signed checkpoint ({e})",
                         hint="pass a file written by `affidavit log checkpoint`") from None
    with _open_log(app) as log:
        try:
            cp = verify_checkpoint(text, log.meta.public_key)
        except CheckpointError as e:
            return _invalid(f"{old} is not a checkpoint of this log: {e}")
        if cp.origin != log.meta.origin:
            return _invalid(f"{old} is a checkpoint of log {cp.origin!r}; this log is {log.meta.origin!r}")
        if cp.size > log.size:
            return _invalid(f"{old} (size {cp.size}) is newer than this log (size {log.size}): "
                            "the log lost entries since")
        if log.root_at(cp.size) != cp.root:
            return _invalid(f"this log's first {cp.size} entries no longer hash to the root in {old}: "
                            "entries before it were removed or rewritten")
        emit_json({
            "origin": log.meta.origin,
            "log_id": log.meta.log_id.hex(),
            "old": {"tree_size": cp.size, "root_hash": _b64(cp.root)},
            "new": {"tree_size": log.size, "root_hash": _b64(log.root)},
            "proof": [_b64(h) for h in log.consistency_proof(cp.size)],
            "checkpoint": log.checkpoint,
        })
    return None


COMMANDS = [log_group]
