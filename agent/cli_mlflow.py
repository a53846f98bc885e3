"""``affidavit mlflow ...``: queries over the MLflow evidence in the store."""

from __future__ import annotations

from typing import Any

import click

from affidavit.agent.cli_app import App, emit_json

pass_app = click.make_pass_decorator(App)


def _mlflow_source(loaded: Any, name: str | None) -> str:
    """The mlflow source to read: the one named, or the only one configured."""
    if name is not None:
        src = loaded.source(name)
        if src.type != "mlflow":
            raise click.UsageError(f"source {name!r} is of type {src.type}, not mlflow")
        return str(src.name)
    found = [s.name for s in loaded.config.sources if s.type == "mlflow"]
    if not found:
        raise click.UsageError(f"{loaded.path or 'the config'} has no source of type mlflow")
    if len(found) > 1:
        raise click.UsageError(f"several mlflow sources ({', '.join(found)}): choose one with --source")
    return str(found[0])


@click.group("mlflow")
def mlflow_group() -> None:
    """MLflow evidence: what the stored snapshots say about models."""


@mlflow_group.command("history")
@click.argument("model")
@click.option("--version", "version", metavar="V", help="Only this model version.")
@click.option("--source", "source", metavar="NAME", help="The mlflow source (default: the only one configured).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def history(app: App, model: str, version: str | None, source: str | None, as_json: bool) -> None:
    """Since when each version of MODEL carried each alias or stage.

    MLflow keeps no such history; Affidavit's signed snapshots are it. SINCE
    is the first snapshot that showed the alias or stage, NOT BEFORE the
    snapshot before it, UNTIL the first snapshot that no longer showed it.
    """
    from affidavit.collectors import mlflow_history
    from affidavit.store.local import LocalStore

    loaded = app.load()
    name = _mlflow_source(loaded, source)
    store = LocalStore.open(loaded.config.store.path, create=False)
    if not mlflow_history.model_known(store, name, model):
        raise click.UsageError(f"source {name!r} has no stored evidence of model {model!r}; "
                               f"run `affidavit collect --source {name}` first, or check the name")
    rows = mlflow_history.history(store, name, model, version)
    if as_json:
        emit_json({"source": name, "model": model, "version": version, "periods": [h.to_json() for h in rows]})
        return
    for h in rows:
        row = h.to_json()
        until = row["until"] or "now (newest snapshot " + row["last_seen"] + ")"
        after = f" (set after {row['not_before']})" if row["not_before"] else ""
        click.echo(f"v{h.version:<5} {h.kind:<5} {h.label:<16} since {row['since']}{after}  until {until}")
    click.echo(f"{len(rows)} period(s) for model {model} in source {name}", err=True)


COMMANDS = [mlflow_group]
