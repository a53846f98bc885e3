"""What a person sees during and after a collection: a progress bar on a terminal, then a summary."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from affidavit.agent.pipeline import RunResult
    from affidavit.agent.runner import CollectReport


class CollectProgress:
    """A spinner per source counting artefacts; a no-op when disabled (not a terminal, --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> CollectProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} artefacts"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(et, ev, tb)

    def artefact(self, source: str, name: str) -> None:
        if self._progress is None:
            return
        if source not in self._tasks:
            self._tasks[source] = self._progress.add_task(f"collecting {source}", total=None)
        self._progress.update(self._tasks[source], advance=1, description=f"{source}: {name[-60:]}")

    def source_done(self, result: RunResult) -> None:
        if self._progress is not None and result.source in self._tasks:
            self._progress.update(self._tasks[result.source], description=f"{result.source}: {result.status}")


def print_report(report: CollectReport, console: Console | None = None) -> None:
    if console is None:
        import sys

        # on a terminal rich fits the width; in a pipe or a log, never wrap a path or an id
        console = Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=240, soft_wrap=True)
    table = Table(title="Collection", title_justify="left")
    for col in ("source", "status", "artefacts", "controls", "run"):
        table.add_column(col)
    for r in report.results:
        status = {"signed": "[green]signed[/]", "empty": "nothing new", "failed": "[red]FAILED[/]"}[r.status]
        table.add_row(r.source, status, str(len(r.artefacts)), ", ".join(r.controls) or "-", r.run_id or "-")
    console.print(table)
    for r in report.results:
        if r.status == "failed":
            console.print(f"[red]{r.source}[/]: {r.error}", markup=True, highlight=False)
        for a in r.artefacts[:20]:
            findings = ", ".join(f"{f['control']}={f['result']}" for f in a.findings)
            console.print(f"  {a.name}  sha256:{a.digest[:12]}…  {' '.join(a.controls)}"
                          + (f"  [{findings}]" if findings else ""), highlight=False, markup=False)
        if len(r.artefacts) > 20:
            console.print(f"  … and {len(r.artefacts) - 20} more (affidavit evidence list)")
        if r.attestation:
            console.print(f"  signed statement: {r.attestation}", highlight=False)
    console.print(f"evidence store: {report.store}", highlight=False)
