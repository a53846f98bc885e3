"""Commands that set up and run collection: init, collect, check, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from affidavit.agent.cli_app import App, emit_json

pass_app = click.make_pass_decorator(App)


@click.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=".",
              show_default=True, help="Where to write affidavit.yaml and the key.")
@click.option("--algorithm", type=click.Choice(["ecdsa-p256", "ed25519"]), default="ecdsa-p256",
              show_default=True, help="Signing key algorithm.")
@pass_app
def init(app: App, directory: Path, algorithm: str) -> None:
    """Write a commented affidavit.yaml and generate a signing key.

    The key's passphrase comes from AFFIDAVIT_PASSPHRASE, else a prompt on a
    terminal; unattended, a random passphrase is written to
    affidavit.passphrase (mode 0600) and named in the config.
    """
    from affidavit.agent.bootstrap import render_config, write_config
    from affidavit.agent.keyring import PASSPHRASE_ENV, create_key, passphrase_path
    from affidavit.config.loader import CONFIG_NAME, load_config

    directory = (app.cwd / directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / CONFIG_NAME
    if cfg_path.exists():
        raise click.UsageError(f"{cfg_path} already exists; edit it, or choose another --dir")
    key = directory / "affidavit.key.pem"
    prompt = app.prompt()
    unattended = not app.env.get(PASSPHRASE_ENV) and prompt is None and not key.exists()
    pw_name = f"./{passphrase_path(key).name}" if unattended else None
    text = render_config(directory, pw_name)
    if algorithm != "ecdsa-p256":
        text = text.replace("  # algorithm: ecdsa-p256", f"  algorithm: {algorithm}      ")
    write_config(cfg_path, text)
    click.echo(f"wrote {cfg_path}", err=True)
    if key.exists():
        click.echo(f"kept the existing signing key {key}", err=True)
    else:
        new = create_key(key, algorithm, None, app.env, prompt)  # type: ignore[arg-type]
        click.echo(f"generated a {algorithm} signing key {key} (public key: {new.public_path})", err=True)
        if new.passphrase_file is not None:
            click.echo(f"wrote a random key passphrase to {new.passphrase_file} (mode 0600); keep it safe", err=True)
    load_config(cfg_path, cwd=app.cwd, env=app.env)  # what init writes must load
    click.echo("next: `affidavit collect`, then `affidavit export --out audit.tar.gz`", err=True)


def _first_run_config(app: App) -> Path:
    """No config anywhere: write ./affidavit.yaml for the embedded default and say so."""
    from affidavit.agent.bootstrap import render_config, write_config
    from affidavit.agent.keyring import PASSPHRASE_ENV
    from affidavit.config.loader import CONFIG_NAME

    path = app.cwd / CONFIG_NAME
    pw = None if app.env.get(PASSPHRASE_ENV) else "./affidavit.passphrase"
    write_config(path, render_config(app.cwd, pw))
    click.echo(f"no config found: wrote the embedded default to {path} (edit it to add sources)", err=True)
    return path


@click.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only these sources (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@pass_app
def collect(app: App, sources: tuple[str, ...], as_json: bool, progress: bool | None) -> None:
    """Collect evidence from the configured sources, sign it and store it.

    With no config file anywhere, writes ./affidavit.yaml (the embedded
    default: this directory's AI governance documents and, in a git
    repository, its history), creates a signing key and collects.
    Each source becomes one signed run. Exit 0 when every source succeeded,
    1 when some failed (the others' evidence is stored), 2 on a usage or
    config error.
    """
    from affidavit.agent import summary
    from affidavit.agent.runner import collect as run_collect
    from affidavit.agent.runner import ensure_signer, log_signer_loader, selected_sources

    if app.config_path is None and app.load(required=False) is None:
        app.config_path = _first_run_config(app)
    loaded = app.load()
    chosen = selected_sources(loaded, sources)
    if not chosen:
        raise click.UsageError(f"{loaded.path} has no sources; add one under `sources:`")
    if loaded.config.signing.tsa_roots is not None:  # unusable TSA roots stop the collection before any key is made
        from affidavit.signing.tsa import load_tsa_roots

        load_tsa_roots(loaded.config.signing.tsa_roots)
    setup = ensure_signer(loaded, app.env, app.prompt())
    for note in setup.notes:
        click.echo(note, err=True)
    show = sys.stderr.isatty() if progress is None else progress
    log_notes: list[str] = []
    with summary.CollectProgress(enabled=show and not as_json) as bar:
        report = run_collect(loaded, setup.signer, chosen, on_artefact=bar.artefact, on_source=bar.source_done,
                             log_signer=log_signer_loader(loaded, app.env, app.prompt(), log_notes))
    for note in log_notes:
        click.echo(note, err=True)
    if as_json:
        emit_json(report.to_json())
    else:
        summary.print_report(report)
    click.get_current_context().exit(report.exit_code)


@click.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only these sources (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def check(app: App, sources: tuple[str, ...], as_json: bool) -> None:
    """Check the config, the signing key and whether each source can be reached."""
    from affidavit.agent.keyring import configured_signer
    from affidavit.agent.runner import selected_sources
    from affidavit.collectors.base import CollectContext
    from affidavit.errors import AffidavitError

    loaded = app.load()
    results: list[dict[str, object]] = []
    sc = loaded.config.signing
    try:
        signer = configured_signer(sc, app.env, app.prompt())
        results.append({"check": "signing key", "ok": True, "detail": f"{sc.key} (keyid {signer.keyid[:16]}…)"})
    except AffidavitError as e:
        results.append({"check": "signing key", "ok": False, "detail": e.diagnostics()})
    from datetime import UTC, datetime

    for src in selected_sources(loaded, sources):
        ctx = CollectContext(src.name, loaded.options[src.name], tuple(src.controls), datetime.now(UTC),
                             loaded.base_dir)
        try:
            detail = loaded.collector_for(src).check(ctx)
            results.append({"check": f"source {src.name}", "ok": True, "detail": detail})
        except AffidavitError as e:
            results.append({"check": f"source {src.name}", "ok": False, "detail": e.diagnostics()})
    if as_json:
        emit_json({"config": str(loaded.path), "ok": all(r["ok"] for r in results), "checks": results})
    else:
        click.echo(f"config {loaded.path}: valid")
        for r in results:
            click.echo(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}: {r['detail']}")
    click.get_current_context().exit(0 if all(r["ok"] for r in results) else 1)


@click.command()
@click.option("--health-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Rewritten after every run: per source the last run, status, error, next run "
                   "(default: affidavit-health.json beside the config).")
@pass_app
def daemon(app: App, health_file: Path | None) -> None:
    """Run every source on its schedule until SIGTERM (for systemd or a container).

    Each source runs once at start, then on its `schedule` ("every 1h" or a
    cron expression, UTC). A failing run is logged and retried at its next
    time; it never stops the daemon or the other sources. The key passphrase
    must come from AFFIDAVIT_PASSPHRASE or a passphrase file.
    """
    from affidavit.agent.daemon import Daemon
    from affidavit.agent.keyring import check_in_force, configured_signer

    loaded = app.load()
    if not loaded.config.sources:
        raise click.UsageError(f"{loaded.path} has no sources; add one under `sources:`")
    sc = loaded.config.signing
    signer = configured_signer(sc, app.env, None)
    check_in_force(sc, loaded.base_dir, signer.keyid)
    health = health_file or loaded.base_dir / "affidavit-health.json"
    click.echo(f"affidavit daemon: {len(loaded.config.sources)} source(s); health in {health}", err=True)
    Daemon(loaded, signer, app.cwd / health, app.env).run()


@click.command()
def schema() -> None:
    """Print the JSON Schema of affidavit.yaml (for editors and CI linting)."""
    from affidavit.config.models import Config

    click.echo(json.dumps(Config.model_json_schema(), indent=2, sort_keys=True))


COMMANDS = [init, collect, check, daemon, schema]
