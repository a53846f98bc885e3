"""The ``mlflow`` collector: registered models, every version, the runs behind them, model files, experiments.

One JSON document per object under a stable name (see
:class:`~affidavit.collectors.mlflow_docs.Names`), e.g.
``mlflow/<source>/registered-model/<name>/version/<v>.json``. Runs are
incremental (:mod:`affidavit.collectors.mlflow_delta`): only what changed or
is due is yielded, and objects that disappeared get a marker document. Model
files are hashed on a small thread pool while the documents stream out;
listings are read page by page, versions in chunks, so memory does not grow
with the size of the server. ``mlflow`` itself is imported only for local
stores (an http(s) server is read over its REST API).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any, ClassVar

from affidavit.collectors import mlflow_findings as rules
from affidavit.collectors.base import CollectContext, Collector, CollectorOptions, Evidence, Finding
from affidavit.collectors.mlflow_delta import Delta
from affidavit.collectors.mlflow_docs import (
    Names,
    experiment_doc,
    logged_model_doc,
    marker_doc,
    registered_model_doc,
    run_doc,
    version_doc,
)
from affidavit.collectors.mlflow_files import PendingModel, files_doc, kept_kind
from affidavit.collectors.mlflow_options import MlflowOptions
from affidavit.connectors.mlflow import MlflowApi, connect, model_root, runs_by_id
from affidavit.errors import CollectorError

JSON = "application/json"
CHUNK = 64  # model versions whose runs are fetched together
PENDING_PER_WORKER = 4  # model versions whose files may be in flight, per download worker
KEPT_MEDIA = {"mlmodel": "application/yaml", "card": "text/markdown"}


@dataclass
class _Run:
    """State of one collection run."""

    ctx: CollectContext
    opts: MlflowOptions
    api: MlflowApi
    pool: ThreadPoolExecutor  # model file downloads
    lookups: ThreadPoolExecutor  # runs and logged models behind versions (never queued behind downloads)
    delta: Delta
    names: Names
    policy: rules.Policy
    controls: Mapping[str, tuple[str, ...]]
    done_runs: set[str] = field(default_factory=set)
    done_logged: set[str] = field(default_factory=set)
    listed_models: set[str] = field(default_factory=set)
    in_scope_models: set[str] = field(default_factory=set)
    experiment_ids: list[str] = field(default_factory=list)  # every experiment the server lists
    # versions whose files are being hashed: (model, version, artefact URI, job); drained in order
    pending: deque[tuple[str, str, str, PendingModel | None]] = field(default_factory=deque)

    @property
    def server(self) -> str:
        return self.api.location

    def evidence(self, kind: str, name: str, data: Any = None, content: bytes | None = None,
                 findings: tuple[Finding, ...] = (), ttl: timedelta | None = None,
                 media_type: str = JSON) -> Evidence:
        controls = (*self.ctx.controls, *self.controls.get(kind, ()), *(f.control for f in findings))
        return Evidence(name=name, media_type=media_type, data=data, content=content,
                        controls=tuple(dict.fromkeys(controls)), findings=findings, ttl=ttl)

    def offer(self, kind: str, name: str, doc: Any, findings: tuple[Finding, ...] = ()) -> Iterator[Evidence]:
        ev = self.delta.offer(self.evidence(kind, name, doc, findings=findings))
        if ev is not None:
            yield ev


class MlflowCollector(Collector):
    """Evidence of the AI system life cycle from an MLflow tracking server or local store."""

    type_name: ClassVar[str] = "mlflow"
    options_model: ClassVar[type[CollectorOptions]] = MlflowOptions
    default_schedule: ClassVar[str] = "every 1d"
    default_ttl: ClassVar[timedelta] = timedelta(days=7)
    default_controls: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "registered-model": (rules.INVENTORY,),
        "model-version": (rules.APPROVAL, rules.LINEAGE, rules.DATA, rules.VALIDATION),
        "run": (rules.LINEAGE, rules.DATA, rules.VALIDATION),
        "logged-model": (rules.LINEAGE, rules.VALIDATION),
        "model-files": (rules.LINEAGE,),
        "mlmodel": (rules.LINEAGE,),
        "card": (rules.CARD,),
        "experiment": (rules.INVENTORY,),
    }

    def _options(self, ctx: CollectContext) -> MlflowOptions:
        if not isinstance(ctx.options, MlflowOptions):
            raise TypeError(f"the mlflow collector needs MlflowOptions, not {type(ctx.options).__name__}")
        return ctx.options

    def check(self, ctx: CollectContext) -> str:
        api = connect(self._options(ctx).connection(ctx.source_name, ctx.base_dir))
        try:
            return api.check()
        finally:
            api.close()

    def collect(self, ctx: CollectContext) -> Iterator[Evidence]:
        opts = self._options(ctx)
        api = connect(opts.connection(ctx.source_name, ctx.base_dir))
        names = Names(ctx.source_name)
        pool = ThreadPoolExecutor(opts.download_workers, thread_name_prefix=f"mlflow-{ctx.source_name}-files")
        lookups = ThreadPoolExecutor(opts.download_workers, thread_name_prefix=f"mlflow-{ctx.source_name}-meta")
        state = _Run(ctx, opts, api, pool, lookups,
                     Delta(ctx.previous, names.prefix, ctx.now, opts.due_margin),
                     names, opts.policy(), self.default_controls)
        try:
            experiment_ids = yield from _experiments(state)
            yield from _models(state)
            yield from _experiment_runs(state, experiment_ids)
            yield from _gone(state)
        finally:
            for _, _, _, job in state.pending:
                if job is not None:
                    job.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            lookups.shutdown(wait=True, cancel_futures=True)
            api.close()
        ctx.logger.info("source %s: %d document(s) new, changed or due; %d unchanged", ctx.source_name,
                        state.delta.yielded, state.delta.unchanged)


# -- experiments and their runs ---------------------------------------------------------


def _wanted(patterns: list[str], value: str) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def _experiments(st: _Run) -> Generator[Evidence, None, list[str]]:
    """Experiment documents; returns the ids whose runs the source collects."""
    wanted = set(st.opts.experiments)
    chosen: dict[str, str] = {}  # experiment id -> how the config named it
    for e in st.api.experiments():  # every id, also to look runs up in batches
        eid, name = str(e.get("experiment_id")), str(e.get("name"))
        st.experiment_ids.append(eid)
        if "*" in wanted or eid in wanted or name in wanted:
            chosen[eid] = name
        if st.opts.collect_experiments:
            yield from st.offer("experiment", st.names.experiment(eid), experiment_doc(e, st.server))
    for ref in sorted(wanted - {"*"} - set(chosen) - set(chosen.values())):
        found = st.api.experiment_by_name(ref)
        if found is None and ref.isdigit():
            chosen[ref] = ref
            continue
        if found is None:
            raise CollectorError(f"source {st.ctx.source_name!r}: experiment {ref!r} not found on {st.server}",
                                 hint="check the source's experiments: list (names or ids)")
        chosen[str(found.get("experiment_id"))] = ref
    return sorted(chosen)


def _experiment_runs(st: _Run, experiment_ids: list[str]) -> Iterator[Evidence]:
    for run in st.api.runs(experiment_ids):
        yield from _run(st, run)


def _run(st: _Run, run: Mapping[str, Any]) -> Iterator[Evidence]:
    info = run.get("info", {}) or {}
    run_id = str(info.get("run_id") or info.get("run_uuid") or "")
    if not run_id or run_id in st.done_runs:
        return
    st.done_runs.add(run_id)
    yield from st.offer("run", st.names.run(run_id), run_doc(run, st.server))


# -- registered models and versions ------------------------------------------------------


def _models(st: _Run) -> Iterator[Evidence]:
    for listed in st.api.registered_models():
        name = str(listed.get("name"))
        st.listed_models.add(name)
        if not _wanted(st.opts.models, name):
            continue
        rm = st.api.registered_model(name)
        if rm is None:  # deleted since the listing
            continue
        st.in_scope_models.add(name)
        versions = list(st.api.model_versions(name))
        numbers = [str(v.get("version")) for v in versions]
        yield from st.offer("registered-model", st.names.model(name), registered_model_doc(rm, numbers, st.server))
        aliases: dict[str, list[str]] = {}
        for a in rm.get("aliases", ()) or ():
            aliases.setdefault(str(a.get("version")), []).append(str(a.get("alias")))
        for start in range(0, len(versions), CHUNK):
            yield from _versions(st, name, versions[start : start + CHUNK], aliases)
    yield from _drain(st, 0)


def _drain(st: _Run, keep: int) -> Iterator[Evidence]:
    """Yield the file evidence of pending versions, oldest first, until at most ``keep`` are in flight.

    Versions whose hashing has finished go out early; the others keep the
    pool busy while the main thread lists and stores the next models.
    """
    while st.pending and (len(st.pending) > keep or st.pending[0][3] is None or st.pending[0][3].done()):
        model, number, uri, job = st.pending.popleft()
        yield from _files(st, model, number, uri, job)


def _model_id(v: Mapping[str, Any]) -> str | None:
    source = str(v.get("source") or "")
    if v.get("model_id"):
        return str(v["model_id"])
    return source.removeprefix("models:/").split("/")[0] if source.startswith("models:/m-") else None


def _versions(st: _Run, model: str, chunk: list[dict[str, Any]], aliases: Mapping[str, list[str]]) -> Iterator[Evidence]:
    run_ids = sorted({str(v["run_id"]) for v in chunk if v.get("run_id")})
    model_ids = sorted({m for m in (_model_id(v) for v in chunk) if m})
    runs = runs_by_id(st.api, run_ids, st.experiment_ids, get=lambda ids: st.lookups.map(st.api.run, ids))
    logged = dict(zip(model_ids, st.lookups.map(st.api.logged_model, model_ids), strict=True))
    for v in chunk:
        number = str(v.get("version"))
        run = runs.get(str(v.get("run_id"))) if v.get("run_id") else None
        lm = logged.get(_model_id(v) or "")
        yield from _version(st, model, v, aliases.get(number, []), run, lm)
        mid = str((lm or {}).get("info", {}).get("model_id"))
        if lm is not None and mid not in st.done_logged:
            st.done_logged.add(mid)
            yield from st.offer("logged-model", st.names.logged_model(mid), logged_model_doc(lm, st.server))
        if run is not None:
            yield from _run(st, run)
        if st.opts.model_files and str(v.get("status") or "READY") == "READY":
            if not st.delta.due(st.names.files(model, number)):
                st.delta.keep_under(st.names.version_dir(model, number))
                continue
            uri = model_root(st.api, v, run, lm)
            st.pending.append((model, number, uri or "", PendingModel(st.api, uri, st.pool) if uri else None))
    yield from _drain(st, PENDING_PER_WORKER * st.opts.download_workers)


def _version(st: _Run, model: str, v: Mapping[str, Any], aliases: list[str], run: Mapping[str, Any] | None,
             lm: Mapping[str, Any] | None) -> Iterator[Evidence]:
    number = str(v.get("version"))
    subject = f"{model} v{number}"
    production = rules.production_reasons(aliases, v.get("current_stage"), st.policy)
    creator = rules.creator_of(v, run)
    findings = tuple(rules.version_findings(subject, v, production, creator, run, lm, st.policy))
    doc = version_doc(v, aliases, production, creator, run, lm, st.names, st.server, [f.to_json() for f in findings])
    yield from st.offer("model-version", st.names.version(model, number), doc, findings)


def _files(st: _Run, model: str, number: str, uri: str, job: PendingModel | None) -> Iterator[Evidence]:
    subject = f"{model} v{number} files"
    ttl = st.opts.rehash_after
    name = st.names.files(model, number)
    if job is None:
        finding = Finding(rules.LINEAGE, "unknown", f"{subject}: the model's artefact location cannot be resolved",
                          subject)
        doc: dict[str, Any] = {"kind": "model-files", "server": st.server, "model": model, "version": number,
               "artifact_uri": None, "files": [], "error": "artefact location not resolvable"}
        st.delta.seen.add(name)
        yield st.evidence("model-files", name, doc, findings=(finding,), ttl=ttl)
        return
    files = job.result()
    kept: dict[str, str] = {}
    for f in files:
        kind = kept_kind(f.path)
        if kind is None or f.content is None:
            continue
        kept[f.path] = st.names.model_file(model, number, f.path)
        st.delta.seen.add(kept[f.path])
        yield st.evidence(kind, kept[f.path], content=f.content, ttl=ttl, media_type=KEPT_MEDIA[kind])
    findings = tuple(rules.files_findings(subject, [f.path for f in files]))
    st.delta.seen.add(name)
    yield st.evidence("model-files", name, files_doc(model, number, uri, files, st.server, kept),
                      findings=findings, ttl=ttl)


# -- objects that disappeared ---------------------------------------------------------------


def _gone(st: _Run) -> Iterator[Evidence]:
    """A marker for every stored object the server no longer shows (or that left the source's scope)."""
    for name in st.delta.missing():
        parsed = st.names.parse(name)
        if parsed is None:
            continue
        kind, ids = parsed
        status = _status(st, kind, ids)
        doc = marker_doc(kind, ids, status, st.server)
        if st.delta.is_marker(name, doc):
            continue
        st.ctx.logger.info("source %s: %s is %s", st.ctx.source_name, name, status)
        yield st.evidence("marker", name, doc)


def _status(st: _Run, kind: str, ids: tuple[str, ...]) -> str:
    if kind == "run":
        return "deleted" if st.api.run(ids[0]) is None else "out-of-scope"
    if kind == "logged-model":
        return "deleted" if st.api.logged_model(ids[0]) is None else "out-of-scope"
    if kind == "experiment":
        if not st.opts.collect_experiments:
            return "out-of-scope"
        return "deleted"
    model = ids[0]
    if model in st.listed_models and model not in st.in_scope_models and not _wanted(st.opts.models, model):
        return "out-of-scope"
    if kind in ("model-files", "model-file") and st.names.version(model, ids[1]) in st.delta.seen:
        return "deleted" if st.opts.model_files else "out-of-scope"
    return "deleted"
