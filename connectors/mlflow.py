"""The MLflow connector: registry, runs, experiments and model files of one tracking server.

Two implementations answer one interface (:class:`MlflowApi`), both in the
REST API's JSON shapes (protobuf field names; the collector reads only these):

* ``http(s)://`` servers (open source, behind basic auth or a token, or
  Databricks workspaces) through :class:`RestApi`, plain ``requests`` with the
  source's own credentials and retry policy, streaming downloads from the
  server's artefact proxy. It does not import ``mlflow`` at all, so it costs
  no memory for the MLflow client and reads no MLflow environment variables.
* local stores (``sqlite:``/database URIs, ``file:`` and ``./mlruns``
  directories, ``databricks://profile``) through MLflow's own client, see
  :mod:`affidavit.connectors.mlflow_local` (imported only when used).

Listing calls page to the end with a loop guard; nothing holds more than one
page of a listing at a time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

from affidavit.connectors import mlflow_artifacts as artifacts
from affidavit.connectors.mlflow_artifacts import ByteSink, RemoteFile
from affidavit.connectors.mlflow_http import HttpClient, HttpSettings, read_errors, split_credentials
from affidavit.errors import FatalError, RetriableError

log = logging.getLogger(__name__)

T = TypeVar("T")
PROXY_PATH = "/api/2.0/mlflow-artifacts/artifacts"
API = "/api/2.0/mlflow"
MAX_LIST_DEPTH = 64  # directory levels below a model's root


@dataclass(frozen=True)
class Connection:
    """A source's connection settings (the collector builds this from its options)."""

    source: str
    tracking_uri: str
    registry_uri: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout: float = 30.0
    max_retries: int = 5
    backoff: float = 0.5
    max_retry_wait: float = 60.0
    page_size: int = 500
    workers: int = 4
    base_dir: Path = Path(".")


class MlflowApi(Protocol):
    """What the MLflow collectors need from a tracking server, as REST-shaped dicts."""

    source: str
    location: str  # the tracking URI without credentials

    def check(self) -> str: ...
    def registered_models(self) -> Iterator[dict[str, Any]]: ...
    def registered_model(self, name: str) -> dict[str, Any] | None: ...
    def model_versions(self, name: str) -> Iterator[dict[str, Any]]: ...
    def run(self, run_id: str) -> dict[str, Any] | None: ...
    def runs(self, experiment_ids: Sequence[str], filter: str = "") -> Iterator[dict[str, Any]]: ...
    def experiments(self) -> Iterator[dict[str, Any]]: ...
    def experiment_by_name(self, name: str) -> dict[str, Any] | None: ...
    def logged_model(self, model_id: str) -> dict[str, Any] | None: ...
    def download_uri(self, name: str, version: str) -> str: ...
    def list_files(self, uri: str) -> Iterator[RemoteFile]: ...
    def download(self, uri: str, path: str, sink: ByteSink) -> None: ...
    def close(self) -> None: ...


def paginate(fetch: Callable[[str | None], tuple[Sequence[T], str | None]], what: str, where: str) -> Iterator[T]:
    """Every item of a paged listing, one page at a time; FatalError if a page token repeats."""
    token: str | None = None
    seen: set[str] = set()
    while True:
        items, token = fetch(token)
        yield from items
        if not token:
            return
        if token in seen:
            raise FatalError(f"{where}: loop detected in the pagination of {what} (a page token repeated)",
                             hint="this is a server bug; report it to the MLflow server's operators")
        seen.add(token)


def name_filter(name: str) -> str:
    """An MLflow search filter ``name = '...'`` for any model name."""
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    raise FatalError(f"registered model name {name!r} holds both quote characters: MLflow cannot search for it",
                     hint="rename the model, or leave it out with the source's models: patterns")


_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RUN_BATCH = 100  # run ids per search filter


def runs_by_id(api: MlflowApi, run_ids: Sequence[str], experiment_ids: Sequence[str],
               get: Callable[[Sequence[str]], Iterable[dict[str, Any] | None]] | None = None) -> dict[str, dict[str, Any] | None]:
    """The runs with these ids (None for one that does not exist), in few calls.

    One search per :data:`RUN_BATCH` ids (``attributes.run_id IN (...)``)
    across the given experiments; ids it does not find (a run of an
    experiment not listed, an id a filter cannot hold) are read one by one
    through ``get`` (default: :meth:`MlflowApi.run` in turn).
    """
    found: dict[str, dict[str, Any] | None] = {}
    plain = [r for r in run_ids if _RUN_ID.match(r)]
    if experiment_ids:
        for start in range(0, len(plain), RUN_BATCH):
            batch = plain[start : start + RUN_BATCH]
            flt = "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in batch) + ")"
            for run in api.runs(experiment_ids, flt):
                rid = str(run.get("info", {}).get("run_id") or run.get("info", {}).get("run_uuid"))
                found[rid] = run
    rest = [r for r in run_ids if r not in found]
    fetched = get(rest) if get is not None else (api.run(r) for r in rest)
    found.update(zip(rest, fetched, strict=True))
    return found


def is_http(uri: str) -> bool:
    return urlsplit(uri).scheme.lower() in ("http", "https")


def connect(conn: Connection) -> MlflowApi:
    """The implementation for the source's tracking URI."""
    if is_http(conn.tracking_uri):
        return RestApi(conn)
    from affidavit.connectors.mlflow_local import ClientApi

    return ClientApi(conn)


def model_root(api: MlflowApi, version: dict[str, Any], run: dict[str, Any] | None,
               logged: dict[str, Any] | None) -> str | None:
    """The artefact URI of a model version's files, or None when it cannot be resolved."""
    source = str(version.get("source") or "")
    for _ in range(3):  # models:/name/version may point at another version's source
        if source.startswith("runs:/"):
            run_id, _, sub = source.removeprefix("runs:/").partition("/")
            info = (run or {}).get("info", {}) if run and run.get("info", {}).get("run_id") == run_id else None
            if info is None:
                other = api.run(run_id)
                info = other.get("info", {}) if other else None
            base = str((info or {}).get("artifact_uri") or "")
            if not base:
                return None
            return f"{base.rstrip('/')}/{sub}" if sub else base
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/")[0]
            found = logged if logged and logged.get("info", {}).get("model_id") == model_id else api.logged_model(model_id)
            uri = (found or {}).get("info", {}).get("artifact_uri")
            return str(uri) if uri else None
        if source.startswith("models:/"):
            source = api.download_uri(str(version.get("name")), str(version.get("version")))
            if source.startswith("models:/"):
                return None
            continue
        return source or None
    return None


class RestApi:
    """An MLflow tracking server over its REST API."""

    def __init__(self, conn: Connection, *, sleep: Callable[[float], None] = time.sleep) -> None:
        base, user, pw = split_credentials(conn.tracking_uri)
        self.conn = conn
        self.source = conn.source
        self.location = base
        self._sleep = sleep
        self.http = HttpClient(HttpSettings(
            source=conn.source, base_url=base, username=conn.username or user, password=conn.password or pw,
            token=conn.token, verify=conn.verify, timeout=conn.timeout, max_retries=conn.max_retries,
            backoff=conn.backoff, max_retry_wait=conn.max_retry_wait, pool_size=conn.workers + 2,
        ), sleep=sleep)
        self._where = self.http.where()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.http.get_json(API + path, params)
        assert body is not None
        return body

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.http.call_json("POST", API + path, json=payload)
        assert body is not None
        return body

    def check(self) -> str:
        found = self._post("/experiments/search", {"max_results": 1})
        version = "MLflow"
        resp = self.http.request("GET", "/version")
        with resp:
            text = resp.text.strip() if resp.status_code == 200 else ""
        if text and len(text) < 40 and "<" not in text:
            version = f"MLflow {text}"
        n = "experiments found" if found.get("experiments") else "no experiments yet"
        return f"{version} at {self.location} with {self.http.settings.identity} ({n})"

    # -- listings -----------------------------------------------------------------

    def registered_models(self) -> Iterator[dict[str, Any]]:
        def page(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params: dict[str, Any] = {"max_results": min(self.conn.page_size, 1000)}
            if token:
                params["page_token"] = token
            body = self._get("/registered-models/search", params)
            return body.get("registered_models", []), body.get("next_page_token")

        return paginate(page, "registered models", self._where)

    def registered_model(self, name: str) -> dict[str, Any] | None:
        body = self.http.get_json(API + "/registered-models/get", {"name": name}, missing_ok=True)
        return None if body is None else body.get("registered_model")

    def model_versions(self, name: str) -> Iterator[dict[str, Any]]:
        flt = name_filter(name)

        def page(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params: dict[str, Any] = {"filter": flt, "max_results": self.conn.page_size}
            if token:
                params["page_token"] = token
            body = self._get("/model-versions/search", params)
            return body.get("model_versions", []), body.get("next_page_token")

        return paginate(page, f"versions of model {name!r}", self._where)

    def run(self, run_id: str) -> dict[str, Any] | None:
        body = self.http.get_json(API + "/runs/get", {"run_id": run_id}, missing_ok=True)
        return None if body is None else body.get("run")

    def runs(self, experiment_ids: Sequence[str], filter: str = "") -> Iterator[dict[str, Any]]:
        ids = list(experiment_ids)

        def page(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            payload: dict[str, Any] = {"experiment_ids": ids, "max_results": min(self.conn.page_size, 50_000),
                                       "run_view_type": "ALL", "order_by": ["attributes.start_time ASC"]}
            if filter:
                payload["filter"] = filter
            if token:
                payload["page_token"] = token
            body = self._post("/runs/search", payload)
            return body.get("runs", []), body.get("next_page_token")

        return paginate(page, f"runs of experiments {ids}", self._where) if ids else iter(())

    def experiments(self) -> Iterator[dict[str, Any]]:
        def page(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            payload: dict[str, Any] = {"max_results": self.conn.page_size, "view_type": "ALL"}
            if token:
                payload["page_token"] = token
            body = self._post("/experiments/search", payload)
            return body.get("experiments", []), body.get("next_page_token")

        return paginate(page, "experiments", self._where)

    def experiment_by_name(self, name: str) -> dict[str, Any] | None:
        body = self.http.get_json(API + "/experiments/get-by-name", {"experiment_name": name}, missing_ok=True)
        return None if body is None else body.get("experiment")

    def logged_model(self, model_id: str) -> dict[str, Any] | None:
        body = self.http.get_json(API + f"/logged-models/{quote(model_id, safe='')}", missing_ok=True)
        return None if body is None else body.get("model")

    def download_uri(self, name: str, version: str) -> str:
        body = self._get("/model-versions/get-download-uri", {"name": name, "version": version})
        return str(body.get("artifact_uri") or "")

    # -- model files --------------------------------------------------------------

    def _proxied(self, uri: str) -> str | None:
        """The path below the server's artefact proxy for an ``mlflow-artifacts:`` (or proxy URL) URI."""
        parts = urlsplit(uri)
        if parts.scheme == "mlflow-artifacts":
            return parts.path.strip("/")
        if is_http(uri) and uri.startswith(self.location + PROXY_PATH + "/"):
            return uri.removeprefix(self.location + PROXY_PATH + "/").strip("/")
        return None

    def list_files(self, uri: str) -> Iterator[RemoteFile]:
        root = self._proxied(uri)
        if root is None:
            yield from artifacts.list_files(uri, self.conn.base_dir, self.source)
            return
        pending: list[tuple[str, int]] = [("", 0)]
        while pending:
            rel, depth = pending.pop()
            if depth > MAX_LIST_DEPTH:
                raise FatalError(f"{self._where}: model files under {uri} nest deeper than {MAX_LIST_DEPTH} levels")
            path = f"{root}/{rel}" if rel else root
            body = self.http.get_json(PROXY_PATH, {"path": path})
            assert body is not None
            subdirs = []
            for f in sorted(body.get("files", []), key=lambda f: str(f.get("path"))):
                name = str(f.get("path", "")).rsplit("/", 1)[-1]
                if not name or name in (".", ".."):
                    continue
                child = f"{rel}/{name}" if rel else name
                if f.get("is_dir"):
                    subdirs.append(child)
                else:
                    size = f.get("file_size")
                    yield RemoteFile(child, int(size) if size is not None else None)
            pending.extend((d, depth + 1) for d in reversed(subdirs))

    def download(self, uri: str, path: str, sink: ByteSink) -> None:
        root = self._proxied(uri)
        if root is None:
            artifacts.download(uri, path, sink, self.conn.base_dir, self.source)
            return
        url = f"{PROXY_PATH}/{quote(f'{root}/{path}', safe='/')}"
        s = self.http.settings
        for attempt in range(s.max_retries + 1):
            sink.reset()
            try:
                with self.http.stream(url) as chunks:
                    for chunk in chunks:
                        sink.write(chunk)
                return
            except read_errors() as e:
                if attempt == s.max_retries:
                    raise RetriableError(
                        f"{self._where}: download of {path} under {uri} broke off ({type(e).__name__}) "
                        f"{s.max_retries + 1} times", hint="the next scheduled run retries",
                    ) from None
                log.info("source %s: download of %s broke off; retrying", self.source, path)
                self._sleep(min(s.backoff * (2**attempt), s.max_retry_wait))
