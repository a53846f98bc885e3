"""Commands over the control library: controls, coverage, soa init/check."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from affidavit.agent.cli_app import App, emit_json

pass_app = click.make_pass_decorator(App)

FORMATS = ("table", "json", "csv", "html", "oscal", "ocsf")


def _library(app: App, *, required: bool = False) -> tuple[Any, Any]:
    """The control library (built in + the config's controls.extra) and the loaded config (or None)."""
    from affidavit.config.catalog import library_paths, load_library

    loaded = app.load(required=required)
    extra = library_paths(loaded.config.controls.extra, loaded.base_dir) if loaded else []
    return load_library(extra), loaded


@click.command("controls")
@click.option("--framework", "framework", metavar="F", help="List this framework's requirements and their mappings.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def controls(app: App, framework: str | None, as_json: bool) -> None:
    """List the control library: frameworks and common controls, or one framework's requirements."""
    lib, _ = _library(app)
    if framework is None:
        _list_library(lib, as_json)
        return
    lib.framework(framework)
    rows = []
    for r in lib.requirements(framework):
        maps = [{"from": m.source, "relationship": m.relationship, "provenance": m.provenance,
                 "rationale": m.rationale} for m in lib.control_mappings_for(r.id)]
        rows.append({"id": r.id, "title": r.title, "group": r.group, "kind": r.kind, "parent": r.parent,
                     "ref": r.ref, "note": r.note,
                     "mappings": maps, "crosswalk": [m.source if m.target == r.id else m.target
                                                     for m in lib.crosswalk(r.id)]})
    if as_json:
        fw = lib.framework(framework)
        emit_json({"framework": {"id": fw.id, "title": fw.title, "version": fw.version, "source": fw.source},
                   "requirements": rows})
        return
    for row in rows:
        text = ", ".join(f"{m['from'].removeprefix('common:')} {m['relationship']}" for m in row["mappings"]) or "-"
        title = row["title"] or " — ".join(x for x in (row["group"], row["note"]) if x)
        click.echo(f"{row['id']:<24} {title[:60]:<60} {text}")
    click.echo(f"{len(rows)} requirement(s) in {framework}", err=True)


def _list_library(lib: Any, as_json: bool) -> None:
    fws = [{"id": f.id, "title": f.title, "version": f.version, "requirements": len(lib.requirements(f.id)),
            "source": f.source} for f in lib.frameworks()]
    ccs = [{"id": c.id, "title": c.title, "automation": c.automation,
            "mappings": [{"to": m.target, "relationship": m.relationship} for m in lib.mappings_from(c.id)]}
           for c in lib.common_controls()]
    if as_json:
        emit_json({"frameworks": fws, "controls": ccs,
                   "files": [{"name": f.name, "builtin": f.builtin} for f in lib.files]})
        return
    click.echo("frameworks:")
    for f in fws:
        click.echo(f"  {f['id']:<14} {f['requirements']:>4} requirements  {f['title']}")
    click.echo("common controls:")
    for c in ccs:
        counted = sum(1 for m in c["mappings"] if m["relationship"] != "related")
        click.echo(f"  {c['id']:<34} {c['automation']:<8} {counted:>3} counted {len(c['mappings']) - counted:>3} "
                   f"related  {c['title']}")


@click.command("coverage")
@click.option("--framework", "framework", metavar="F", help="One framework (default: a summary of all).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="html: one self-contained page; oscal: OSCAL Assessment Results for one --framework; "
                   "ocsf: OCSF Compliance Finding (class 2003) JSON lines.")
@click.option("--period", metavar="FROM..TO", help="Audit period (UTC dates or times): also list uncovered intervals.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write to FILE (default: standard output).")
@pass_app
def coverage(app: App, framework: str | None, fmt: str, period: str | None, out: Path | None) -> None:
    """Per requirement: status, evidence count, newest evidence and the common controls behind it."""
    from affidavit.agent.coverage import compute_coverage
    from affidavit.agent.coverage_period import parse_period
    from affidavit.agent.soa import load_soa
    from affidavit.errors import UsageError
    from affidavit.store.local import LocalStore

    if fmt == "oscal" and framework is None:
        raise UsageError("--format oscal writes the Assessment Results of one framework",
                         hint="add --framework F, e.g. --framework iso42001")
    lib, loaded = _library(app, required=True)
    if framework is not None:
        lib.framework(framework)
    span = parse_period(period) if period else None
    soa_path = loaded.config.controls.soa
    soas = [load_soa(soa_path, lib)] if soa_path else []
    store = LocalStore.open(loaded.config.store.path, create=False)
    try:
        cov = compute_coverage(lib, store.index_path, [framework] if framework else None,
                               now=datetime.now(UTC), soas=soas, period=span)
        text = _export(fmt, cov, lib, store.index_path) if fmt in ("html", "oscal", "ocsf") else None
    finally:
        store.close()
    unknown = sorted(c for c, cc in cov.controls.items() if cc.evidence_count and lib.common_control_or_none(c) is None)
    if unknown:
        click.echo(f"note: evidence maps to control(s) the library does not define, which count for nothing: "
                   f"{', '.join(unknown)} (see `affidavit controls`)", err=True)
    if text is None:
        text = _text(fmt, cov, framework is None, span is not None)
    _write(app, out, text)


def _text(fmt: str, cov: Any, summary: bool, period: bool) -> str:
    from affidavit.agent.coverage_report import CSV_FIELDS, coverage_json, csv_rows, framework_table, summary_table

    if fmt == "json":
        return json.dumps(coverage_json(cov), indent=2, sort_keys=True, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(cov))
        return buf.getvalue()
    if summary:
        click.echo("per requirement: affidavit coverage --framework F", err=True)
        return "\n".join(summary_table(cov)) + "\n"
    return "\n".join(framework_table(cov.frameworks[0], period=period)) + "\n"


def _export(fmt: str, cov: Any, lib: Any, index_path: Path) -> str:
    """html, oscal or ocsf: these cite each artefact with its signing run, read from the store index."""
    from affidavit.agent.report_html import cited_evidence, evidence_details, render_html, report_controls

    details = evidence_details(index_path, cited_evidence(report_controls(cov)).values())
    if fmt == "html":
        return render_html(cov, details)
    if fmt == "oscal":
        from affidavit.agent.report_oscal import assessment_results, oscal_json

        return oscal_json(assessment_results(cov, details, library=lib))
    from affidavit.agent.report_ocsf import ocsf_lines

    return ocsf_lines(cov, details)


def _write(app: App, out: Path | None, text: str) -> None:
    """Standard output, or ``out`` written whole (a temporary file renamed into place)."""
    from affidavit.errors import UsageError

    if out is None:
        click.echo(text, nl=False)
        return
    path = app.cwd / out
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {e.strerror}", hint="choose a writable --out path") from None
    click.echo(f"wrote {path}", err=True)


@click.group("soa")
def soa() -> None:
    """Statement of Applicability: which requirements apply, why, and who owns them."""


@soa.command("init")
@click.option("--framework", "framework", metavar="F", required=True, help="Framework, e.g. iso42001.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="File to write (default: ./soa-F.yaml).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_app
def soa_init(app: App, framework: str, out: Path | None, force: bool) -> None:
    """Write a Statement of Applicability listing every requirement of F as applicable."""
    from affidavit.agent.soa import write_soa

    lib, _ = _library(app)
    path = app.cwd / (out or Path(f"soa-{framework}.yaml"))
    write_soa(lib, framework, path, now=datetime.now(UTC), force=force)
    click.echo(f"wrote {path} ({len(lib.requirements(framework))} requirements); edit it, then set "
               f"controls.soa: {path.name} in the config", err=True)


@soa.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@pass_app
def soa_check(app: App, file: Path | None) -> None:
    """Validate a Statement of Applicability (default: controls.soa from the config)."""
    from affidavit.agent.soa import load_soa
    from affidavit.errors import UsageError

    lib, loaded = _library(app, required=file is None)
    path = (app.cwd / file) if file else loaded.config.controls.soa
    if path is None:
        raise UsageError("the config sets no controls.soa", hint="name a file: affidavit soa check FILE")
    s = load_soa(path, lib)
    excluded = sum(1 for e in s.entries.values() if not e.applicable)
    missing = len(lib.requirements(s.framework)) - len(s.entries)
    click.echo(f"{path}: {s.framework}, {len(s.entries)} requirement(s) listed, {excluded} excluded"
               + (f", {missing} not listed (counted as applicable)" if missing else ""))


COMMANDS = [controls, coverage, soa]
