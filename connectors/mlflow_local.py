"""Local MLflow stores (``sqlite:`` and other database URIs, ``./mlruns``, ``databricks://``) through MLflow's client.

The client is built with the explicit tracking and registry URIs of the
source (never ``MLFLOW_TRACKING_URI``), and its entities are turned into the
REST API's JSON shapes, so the collector reads one format. Importing this
module imports ``mlflow``; :func:`affidavit.connectors.mlflow.connect` does so
only for a source that needs it. A store that does not exist is an error, not
something to create: MLflow would create an empty database or directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from affidavit.connectors import mlflow_artifacts as artifacts
from affidavit.connectors.mlflow import Connection, paginate
from affidavit.connectors.mlflow_artifacts import ByteSink, RemoteFile
from affidavit.errors import AuthError, FatalError

T = TypeVar("T")
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
AUTH_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def resolve_uri(uri: str, base_dir: Path, source: str) -> str:
    """An absolute store URI; FatalError when a local store does not exist."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if uri.split(":", 1)[0].lower().startswith("databricks"):  # "databricks", "databricks://profile", "databricks-uc"
        return uri
    if scheme == "sqlite":
        raw = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not raw or raw == ":memory:":
            raise FatalError(f"source {source!r}: {uri} is not a sqlite file URI; write sqlite:///path/to/mlflow.db")
        path = Path(raw) if raw.startswith("/") else base_dir / raw
        if not path.is_file():
            raise FatalError(f"source {source!r}: the MLflow store {path} does not exist",
                             hint="check tracking_uri (a relative path is read from the config's directory)")
        return f"{uri.split(':///', 1)[0]}:///{path.resolve()}"
    if scheme in DB_SCHEMES:
        return uri
    local = artifacts.local_path(uri, base_dir)
    if local is None:
        raise FatalError(f"source {source!r}: tracking URI scheme {parts.scheme!r} is not supported",
                         hint="use http(s)://, sqlite:///, a database URI, a ./mlruns directory or databricks")
    if not local.is_dir():
        raise FatalError(f"source {source!r}: the MLflow store directory {local} does not exist",
                         hint="check tracking_uri (a relative path is read from the config's directory)")
    return local.resolve().as_uri()


def safe_location(uri: str) -> str:
    """A store URI without a password (``postgresql://user:pw@host/db`` -> ``postgresql://user@host/db``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class ClientApi:
    """A local or Databricks store read with ``mlflow.tracking.MlflowClient``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.source = conn.source
        uri = resolve_uri(conn.tracking_uri, conn.base_dir, conn.source)
        registry = resolve_uri(conn.registry_uri, conn.base_dir, conn.source) if conn.registry_uri else uri
        self.location = safe_location(uri)
        self._where = f"source {conn.source!r}: MLflow store {self.location}"
        try:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
            from mlflow.utils.proto_json_utils import message_to_json
        except ImportError:
            raise FatalError(f"{self._where}: reading a local MLflow store needs mlflow-skinny, SQLAlchemy and alembic",
                             hint="pip install mlflow-skinny sqlalchemy alembic") from None
        self._mlflow_error: type[Exception] = MlflowException
        self._to_json: Callable[[Any], str] = message_to_json
        self.client = self._guard(lambda: MlflowClient(tracking_uri=uri, registry_uri=registry), "open the store")

    def close(self) -> None:
        return None

    def _guard(self, call: Callable[[], T], what: str, missing_ok: bool = False) -> T:
        try:
            return call()
        except self._mlflow_error as e:
            code = str(getattr(e, "error_code", ""))
            if missing_ok and code == "RESOURCE_DOES_NOT_EXIST":
                return None  # type: ignore[return-value]
            if code in AUTH_CODES:
                raise AuthError(f"{self._where} refused access ({what}): {e.message}",  # type: ignore[attr-defined]
                                hint="check the Databricks profile or database credentials") from None
            raise FatalError(f"{self._where}: cannot {what}: {code}: {str(e).splitlines()[0][:300]}") from None
        except Exception as e:  # database drivers and SDKs raise their own types
            if type(e).__name__ == "UnsupportedModelRegistryStoreURIException":
                raise FatalError(f"{self._where}: MLflow cannot open this store: {e}",
                                 hint="pip install sqlalchemy alembic (mlflow-skinny alone cannot open sqlite:)") from None
            raise FatalError(f"{self._where}: cannot {what}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                             ) from None

    def _dict(self, entity: Any) -> dict[str, Any]:
        data = json.loads(self._to_json(entity.to_proto()))
        assert isinstance(data, dict)
        return data

    def _paged(self, call: Callable[[str | None], Any], what: str) -> Iterator[dict[str, Any]]:
        def page(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            result = self._guard(lambda: call(token), f"list {what}")
            return [self._dict(e) for e in result], getattr(result, "token", None)

        return paginate(page, what, self._where)

    def check(self) -> str:
        found = self._guard(lambda: self.client.search_experiments(max_results=1), "list experiments")
        n = "experiments found" if found else "no experiments yet"
        return f"MLflow store {self.location} ({n})"

    def registered_models(self) -> Iterator[dict[str, Any]]:
        n = min(self.conn.page_size, 1000)
        return self._paged(lambda t: self.client.search_registered_models(max_results=n, page_token=t),
                           "registered models")

    def registered_model(self, name: str) -> dict[str, Any] | None:
        found = self._guard(lambda: self.client.get_registered_model(name), f"read model {name!r}", missing_ok=True)
        return None if found is None else self._dict(found)

    def model_versions(self, name: str) -> Iterator[dict[str, Any]]:
        from affidavit.connectors.mlflow import name_filter

        flt, n = name_filter(name), self.conn.page_size
        return self._paged(lambda t: self.client.search_model_versions(flt, max_results=n, page_token=t),
                           f"versions of model {name!r}")

    def run(self, run_id: str) -> dict[str, Any] | None:
        found = self._guard(lambda: self.client.get_run(run_id), f"read run {run_id}", missing_ok=True)
        return None if found is None else self._dict(found)

    def runs(self, experiment_ids: Sequence[str], filter: str = "") -> Iterator[dict[str, Any]]:
        from mlflow.entities import ViewType

        ids, n = list(experiment_ids), min(self.conn.page_size, 50_000)
        if not ids:
            return iter(())
        return self._paged(lambda t: self.client.search_runs(ids, filter, run_view_type=ViewType.ALL, max_results=n,
                                                             order_by=["attributes.start_time ASC"], page_token=t),
                           f"runs of experiments {ids}")

    def experiments(self) -> Iterator[dict[str, Any]]:
        from mlflow.entities import ViewType

        n = self.conn.page_size
        return self._paged(lambda t: self.client.search_experiments(view_type=ViewType.ALL, max_results=n,
                                                                    page_token=t), "experiments")

    def experiment_by_name(self, name: str) -> dict[str, Any] | None:
        found = self._guard(lambda: self.client.get_experiment_by_name(name), f"read experiment {name!r}",
                            missing_ok=True)
        return None if found is None else self._dict(found)

    def logged_model(self, model_id: str) -> dict[str, Any] | None:
        found = self._guard(lambda: self.client.get_logged_model(model_id), f"read logged model {model_id}",
                            missing_ok=True)
        return None if found is None else self._dict(found)

    def download_uri(self, name: str, version: str) -> str:
        return str(self._guard(lambda: self.client.get_model_version_download_uri(name, version),
                               f"resolve model {name!r} version {version}"))

    def list_files(self, uri: str) -> Iterator[RemoteFile]:
        return artifacts.list_files(uri, self.conn.base_dir, self.source)

    def download(self, uri: str, path: str, sink: ByteSink) -> None:
        artifacts.download(uri, path, sink, self.conn.base_dir, self.source)
