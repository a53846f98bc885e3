"""``affidavit verify``: offline verification of an auditor bundle or a store."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from affidavit.agent.cli_app import App, emit_json

pass_app = click.make_pass_decorator(App)


def _trust_anchor(cwd: Path, keys: tuple[Path, ...], trust_file: Path | None, log_key: Path | None,
                  tsa_roots: Path | None) -> tuple[Any, dict[str, str], Any]:
    """(the auditor's TrustStore, keyid -> "trust file" / "--key", the --log-key or None).

    --key, --log-key and --tsa-roots add to a --trust file; where a key is in
    both, the trust file's entry (with its window and revocation) counts.
    """
    from affidavit.errors import UsageError
    from affidavit.signing.keys import load_public_key_file
    from affidavit.signing.trust import TrustedKey, TrustStore

    if not keys and trust_file is None:
        raise UsageError(
            "no trust anchor: pass --key PEM (the signer's public key, obtained from its owner, "
            "not from the bundle) or --trust FILE (the organisation's trust file)"
        )
    file = TrustStore.from_file(cwd / trust_file) if trust_file is not None else TrustStore({}, {})
    bare = {k.keyid: k for k in (TrustedKey.of(load_public_key_file(cwd / p)) for p in keys)}
    log_public = load_public_key_file(cwd / log_key) if log_key is not None else None
    bare_log = {} if log_public is None else {TrustedKey.of(log_public).keyid: TrustedKey.of(log_public)}
    roots = []
    if tsa_roots is not None:
        from affidavit.signing.tsa import load_tsa_roots  # here: it loads the X.509 and RFC 3161 modules

        roots = load_tsa_roots(cwd / tsa_roots)
    trust = TrustStore({**bare, **file.keys}, {**bare_log, **file.log_keys}, (*file.tsa_roots, *roots), file.comment)
    sources = {k: ("trust file" if k in file.keys else "--key") for k in trust.keys}
    return trust, sources, log_public


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--key", "keys", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="A trusted public key (PEM); repeatable. Required: the bundle's own keys are never trusted.")
@click.option("--trust", "trust_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The organisation's trust file (`affidavit keys trust-export`): signing keys with validity "
                   "windows and revocations, log keys, TSA roots. With or instead of --key.")
@click.option("--log-key", "log_key", type=click.Path(path_type=Path, dir_okay=False),
              help="The transparency log's public key (PEM). Without it (or a log key in --trust) the log is "
                   "reported 'not checked'.")
@click.option("--tsa-roots", "tsa_roots", type=click.Path(path_type=Path, dir_okay=False),
              help="PEM file of timestamp-authority root certificates you trust: each RFC 3161 token is "
                   "verified and gives its signature a trusted time.")
@click.option("--checkpoint", "checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              help="A signed checkpoint of the log you kept earlier: the bundle's log must extend it "
                   "(needs --log-key).")
@click.option("--json", "as_json", is_flag=True, help="The full report as JSON on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--max-members", type=click.IntRange(min=1), help="Refuse bundles with more members [1,000,000].")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Refuse bundles expanding past this many bytes [64 GiB].")
@click.option("--max-json-bytes", type=click.IntRange(min=1), help="Largest JSON/metadata member read [64 MiB].")
@click.option("--max-json-depth", type=click.IntRange(min=1), help="Deepest JSON nesting accepted [64].")
@click.option("--max-proof-hashes", type=click.IntRange(min=0), help="Longest log proof accepted [64].")
@pass_app
def verify(app: App, target: Path, keys: tuple[Path, ...], trust_file: Path | None, log_key: Path | None,
           tsa_roots: Path | None, checkpoint: Path | None, as_json: bool, progress: bool | None,
           max_members: int | None, max_bytes: int | None, max_json_bytes: int | None,
           max_json_depth: int | None, max_proof_hashes: int | None) -> None:
    """Verify an auditor bundle (.tar.gz, .tar or directory) or a store, offline.

    Checks every signature against the keys you pass with --key or --trust,
    every artefact's digest, that every member is covered by a signed
    statement and every signed subject is present. With --tsa-roots (or TSA
    roots in the trust file), each RFC 3161 timestamp, and that each key was
    in force when it signed (a revoked key's signatures fail unless a timestamp
    proves they predate the revocation). With --log-key, also each run's
    transparency-log entry, its inclusion proof and the checkpoint's
    signature; with --checkpoint, that nothing logged before that checkpoint
    was removed or rewritten. Prints VALID or INVALID, a summary for a working
    paper, then a line per artefact (--json: the same as JSON).
    Exit 0 VALID, 1 INVALID, 2 usage error or unreadable input.
    """
    from affidavit.signing.limits import limits_from_options

    limits = limits_from_options(max_members=max_members, max_bytes=max_bytes, max_json_bytes=max_json_bytes,
                                 max_json_depth=max_json_depth, max_proof_hashes=max_proof_hashes)
    trust, sources, log_public = _trust_anchor(app.cwd, keys, trust_file, log_key, tsa_roots)
    old_checkpoint = _checkpoint(app.cwd, checkpoint, log_public is not None or bool(trust.log_keys))
    target = app.cwd / target
    if (target / "affidavit-store.json").is_file():
        store_log_key = log_public or next(iter(trust.log_public_keys().values()), None)
        _verify_store(target, trust, as_json, store_log_key, old_checkpoint)
        return
    show = (sys.stderr.isatty() if progress is None else progress) and not as_json
    with contextlib.ExitStack() as stack:
        advance: Callable[[int], None] | None = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            bar = stack.enter_context(Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(),
                                               TransferSpeedColumn(), console=Console(stderr=True), transient=True))
            task = bar.add_task("verify", total=None)
            advance = functools.partial(bar.advance, task)
        from affidavit.signing.archive import open_bundle

        # reading (and hashing) starts before the verifier's own modules load, which takes a tenth of a second
        reading = stack.enter_context(open_bundle(target, limits=limits, progress=advance))
        from affidavit.signing.verify import verify_bundle

        report = verify_bundle(target, trust, progress=advance, log_key=log_public, checkpoint=old_checkpoint,
                               key_sources=sources, limits=limits, reading=reading)
    if as_json:
        emit_json(report.to_json())
    else:
        from affidavit.signing.archive import printable

        # names and reasons come from the bundle: no escape sequence reaches the auditor's terminal
        click.echo("\n".join(printable(line, limit=1_000_000) for line in report.report_lines()))
    click.get_current_context().exit(0 if report.valid else 1)


def _checkpoint(cwd: Path, checkpoint: Path | None, have_log_key: bool) -> str | None:
    """The auditor's old checkpoint text (UsageError / InputError when unusable)."""
    from affidavit.errors import InputError, UsageError

    if checkpoint is None:
        return None
    if not have_log_key:
        raise UsageError("--checkpoint needs --log-key: a checkpoint is only worth its log's signature",
                         hint="pass the log's public key (affidavit-log.pub.pem) with --log-key, or a trust file "
                              "naming it with --trust")
    try:
        return (cwd / checkpoint).read_bytes().decode("utf-8")
    except OSError as e:
        raise InputError(f"cannot read checkpoint {checkpoint}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{checkpoint} is not a checkpoint (not UTF-8 text)",
                         hint="pass a file written by `affidavit log checkpoint`") from None


def _verify_store(root: Path, trust: Any, as_json: bool, log_key: Any, checkpoint: str | None) -> None:
    """fsck, each run's signing key in force when it signed (the trust file's windows, revocations and TSA
    roots), plus the transparency log against the attestations (and, with --log-key, against the auditor's)."""
    from affidavit.errors import StoreError
    from affidavit.store.key_windows import key_window_problems
    from affidavit.store.local import LocalStore
    from affidavit.store.tlog_fsck import check_store_log, fsck_log

    store = LocalStore.open(root)
    problems = store.fsck(list(trust.public_keys().values())) + key_window_problems(store, trust)
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
