"""Helpers for tests against a real MLflow tracking server.

* :class:`MlflowServer` starts ``mlflow server`` (sqlite backend, proxied
  artefacts, one worker, no job runner) on a free loopback port in its own
  process group and stops the whole group.
* :func:`seed` fills a server through MLflow's own client in a *subprocess*
  (``python tests/mlflow_server.py seed URL``), so the test process never
  imports ``mlflow`` nor inherits its environment; the client's own retries
  are turned down there. It prints what it made as JSON.
* :class:`Rest` makes the few registry changes tests need over the REST API.
* :class:`FaultProxy` sits in front of a server: 429 storms with
  ``Retry-After``, going down and coming back, a bearer-token check, or a
  non-MLflow answer.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

HERE = Path(__file__).resolve()
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
SECRET = "hunter2-very-secret-db-password"
AUTH_USER = "admin"  # the basic-auth server's admin
AUTH_PASSWORD = "s3cret-admin-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_executable() -> str:
    """The ``mlflow`` command of the test environment; a missing install FAILS the tests."""
    exe = Path(sys.executable).parent / "mlflow"
    assert exe.exists(), (
        "the mlflow tracking server is not installed (pip install -e '.[test]' installs it): "
        "the MLflow tests need a real server"
    )
    return str(exe)


def client_env(**extra: str) -> dict[str, str]:
    """Environment for MLflow processes: no user MLflow settings, the client's retries turned down."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="30",
               MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               GIT_PYTHON_REFRESH="quiet", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


@dataclass
class MlflowServer:
    root: Path
    app_name: str | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    workers: int = 1  # the tests' one process; `mlflow server` itself defaults to 4
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [mlflow_executable(), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers)]
        if self.app_name:
            argv += ["--app-name", self.app_name]
        log = (self.root / "server.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                     env=client_env(**self.env_extra), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"mlflow server did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.proc = None


@dataclass(frozen=True)
class Seeded:
    server: MlflowServer
    data: dict[str, Any]  # what the seeding made (see _seed)

    @property
    def url(self) -> str:
        return self.server.url


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """Run this file as a script in a subprocess; its stdout's last line is JSON."""
    proc = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True, timeout=timeout,
                          env=env or client_env())
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def seed(url: str) -> dict[str, Any]:
    return dict(run_script("seed", url))


# -- collecting through the real pipeline -------------------------------------------------------


def collect(store: Any, signer: Any, name: str, url: str, *, clock: Any = None, on_artefact: Any = None,
            base_dir: Path | None = None, ttl: str | None = None, **options: Any) -> Any:
    """One run of an mlflow source through ``agent.pipeline.run_source`` (RunResult)."""
    from datetime import UTC, datetime

    from affidavit.agent.pipeline import run_source
    from affidavit.collectors.mlflow import MlflowCollector
    from affidavit.collectors.mlflow_options import MlflowOptions
    from affidavit.collectors.redact import Redactor
    from affidavit.config.models import SourceConfig

    options.setdefault("max_retries", 1)
    options.setdefault("backoff", 0.05)
    options.setdefault("timeout", 20)
    extra: dict[str, Any] = {"ttl": ttl} if ttl else {}
    src = SourceConfig(name=name, type="mlflow", tracking_uri=url, **extra, **options)
    opts = MlflowOptions.model_validate(src.options())
    return run_source(src, MlflowCollector(), opts, store, signer, agent="affidavit-tests",
                      base_dir=base_dir or Path.cwd(), redactor=Redactor(), on_artefact=on_artefact,
                      clock=clock or (lambda: datetime.now(UTC)))


def check(name: str, url: str, base_dir: Path | None = None, **options: Any) -> str:
    """``check()`` of an mlflow source."""
    from datetime import UTC, datetime

    from affidavit.collectors.base import CollectContext
    from affidavit.collectors.mlflow import MlflowCollector
    from affidavit.collectors.mlflow_options import MlflowOptions

    options.setdefault("max_retries", 0)
    opts = MlflowOptions.model_validate({"tracking_uri": url, **options})
    ctx = CollectContext(name, opts, (), datetime.now(UTC), base_dir or Path.cwd())
    return MlflowCollector().check(ctx)


def load_doc(store: Any, record: Any) -> Any:
    with store.open_blob(record.digest) as f:
        return json.loads(f.read())


# -- registry changes over REST ------------------------------------------------------------


@dataclass
class Rest:
    url: str
    auth: tuple[str, str] | None = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = requests.request(method, f"{self.url}/api/2.0/mlflow/{path}", json=body, auth=self.auth, timeout=30)
        assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
        data = resp.json()
        assert isinstance(data, dict)
        return data

    def create_model(self, name: str) -> None:
        self.call("POST", "registered-models/create", {"name": name})

    def create_version(self, name: str, source: str, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"name": name, "source": source}
        if run_id:
            body["run_id"] = run_id
        return str(self.call("POST", "model-versions/create", body)["model_version"]["version"])

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.call("POST", "model-versions/set-tag", {"name": name, "version": version, "key": key, "value": value})

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})

    def set_stage(self, name: str, version: str, stage: str) -> None:
        self.call("POST", "model-versions/transition-stage",
                  {"name": name, "version": version, "stage": stage, "archive_existing_versions": False})

    def delete_version(self, name: str, version: str) -> None:
        self.call("DELETE", "model-versions/delete", {"name": name, "version": version})


# -- a proxy that injects faults ---------------------------------------------------------------


class FaultProxy:
    """An HTTP proxy in front of ``upstream`` whose behaviour tests switch at run time."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.port = free_port()
        self.lock = threading.Lock()
        self.storm = 0  # answer this many next requests with storm_status
        self.storm_status = 429
        self.retry_after: str | None = "1"
        self.token: str | None = None  # require "Authorization: Bearer <token>"
        self.html = False  # answer like a login page, not like MLflow
        self.forwarded = 0
        self.throttled = 0  # requests answered with storm_status
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: going down refuses the next one

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _any

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: the next connection is refused (as when a server goes down)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    close = down

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        with self.lock:
            if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
                self._reply(h, 401, b'{"error_code": "UNAUTHENTICATED", "message": "bad token"}')
                return
            if self.html:
                self._reply(h, 200, b"<html><body>Please log in</body></html>", "text/html")
                return
            if self.storm > 0:
                self.storm -= 1
                self.throttled += 1
                self._reply(h, self.storm_status, b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "later"}',
                            headers={"Retry-After": self.retry_after} if self.retry_after else {})
                return
            self.forwarded += 1
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(h.command, h.path, body=body, headers=headers)
        resp = conn.getresponse()
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                h.send_header(k, v)
        h.end_headers()
        while chunk := resp.read(1 << 16):
            h.wfile.write(chunk)
        conn.close()

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/json",
               headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)


# -- seeding (runs in a subprocess, with mlflow imported) ------------------------------------------


def _model_dir(root: Path, *, readme: bool, env_file: bool, payload: int) -> Path:
    d = Path(tempfile.mkdtemp(dir=root)) / "model"
    (d / "code").mkdir(parents=True)
    (d / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  python_function:\n    loader_module: custom\n    python_version: 3.11.0\n"
        "mlflow_version: 3.1.0\nmodel_uuid: 5e6f0a1b2c3d4e5f60718293a4b5c6d7\n"
        "signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"x\"}]'\n"
        "utc_time_created: '2026-01-01 00:00:00.000000'\n"
    )
    (d / "weights.bin").write_bytes(os.urandom(payload))
    (d / "code" / "util.py").write_text("def f(x):\n    return x\n")
    if readme:
        (d / "README.md").write_text("# Model card\n\nIntended use: credit scoring tests.\n")
    if env_file:
        (d / "conda.yaml").write_text("name: env\ndependencies:\n  - python=3.11\n")
    return d


def _seed(url: str) -> dict[str, Any]:  # pragma: no cover - runs in the seeding subprocess
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    work = Path(tempfile.mkdtemp(prefix="seed-"))
    x = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    train = mlflow.data.from_pandas(x, source="s3://bucket/credit/train.csv", name="credit-train")
    test = mlflow.data.from_pandas(x.iloc[:2], source="s3://bucket/credit/test.csv", name="credit-test")
    mlflow.set_experiment("seed-credit")
    out: dict[str, Any] = {"versions": [], "runs": {}}

    def classic(name: str, *, git: bool, datasets: list[tuple[Any, str]], metrics: dict[str, float],
                readme: bool = True, env_file: bool = True) -> str:
        with mlflow.start_run(run_name=name) as run:
            if git:
                mlflow.set_tag("mlflow.source.git.commit", GIT_COMMIT)
            mlflow.log_params({"C": 0.5, "db_password": SECRET})
            for ds, ctx in datasets:
                mlflow.log_input(ds, context=ctx)
            if metrics:
                mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(_model_dir(work, readme=readme, env_file=env_file, payload=300_000)), "model")
        if not git:  # MLflow tags the commit of the repository the seeding script runs in: take it away
            client.delete_tag(run.info.run_id, "mlflow.source.git.commit")
        out["runs"][name] = run.info.run_id
        return str(run.info.run_id)

    model = "seed-credit-risk"
    client.create_registered_model(model, tags={"owner": "risk-team"}, description="credit scoring")
    a = classic("approved", git=True, datasets=[(train, "training"), (test, "eval")], metrics={"accuracy": 0.91})
    v1 = client.create_model_version(model, f"runs:/{a}/model", run_id=a)
    client.set_model_version_tag(model, v1.version, "approved_by", "carol")
    client.set_registered_model_alias(model, "champion", v1.version)

    with mlflow.start_run(run_name="logged") as run:
        mlflow.set_tag("mlflow.source.git.commit", GIT_COMMIT)
        mlflow.log_input(train, context="training")
        mlflow.log_metric("f1", 0.8)
        info = mlflow.sklearn.log_model(LogisticRegression().fit(x[["x"]], x["y"]), name="clf",
                                        registered_model_name=model, pip_requirements=["scikit-learn"])
    out["runs"]["logged"] = run.info.run_id
    v2 = str(info.registered_model_version)
    client.set_registered_model_alias(model, "challenger", v2)

    c = classic("unapproved", git=False, datasets=[], metrics={}, readme=False, env_file=False)
    v3 = client.create_model_version(model, f"runs:/{c}/model", run_id=c)
    client.set_registered_model_alias(model, "prod", v3.version)

    d = classic("self-approved", git=True, datasets=[(train, "training")], metrics={"accuracy": 0.88})
    user = client.get_run(d).info.user_id
    v4 = client.create_model_version(model, f"runs:/{d}/model", run_id=d)
    client.set_model_version_tag(model, v4.version, "approved_by", user)
    client.transition_model_version_stage(model, v4.version, "Production")

    mlflow.set_experiment("seed-fraud")
    with mlflow.start_run(run_name="fraud") as run:
        mlflow.set_tag("mlflow.source.git.commit", GIT_COMMIT)
        finfo = mlflow.sklearn.log_model(LogisticRegression().fit(x[["x"]], x["y"]), name="fraud-clf",
                                         registered_model_name="seed-fraud", pip_requirements=["scikit-learn"])
    out["runs"]["fraud"] = run.info.run_id
    client.transition_model_version_stage("seed-fraud", str(finfo.registered_model_version), "Staging")

    exp = mlflow.set_experiment("seed-churn")
    churn = []
    for i in range(3):
        with mlflow.start_run(run_name=f"churn-{i}") as run:
            mlflow.log_metric("auc", 0.7 + i / 100)
        churn.append(run.info.run_id)

    shutil.rmtree(work, ignore_errors=True)
    out["user"] = user
    out["churn_experiment"] = exp.experiment_id
    out["churn_runs"] = churn
    out["versions"] = [
        {"model": model, "version": str(v1.version), "run": a, "aliases": ["champion"], "stage": "None",
         "expect": {"lineage": "pass", "approval": "pass", "data": "pass", "validation": "pass", "files": "pass"}},
        {"model": model, "version": v2, "run": out["runs"]["logged"], "aliases": ["challenger"], "stage": "None",
         "logged_model": info.model_id, "expect": {"lineage": "pass", "files": "pass"}},
        {"model": model, "version": str(v3.version), "run": c, "aliases": ["prod"], "stage": "None",
         "expect": {"lineage": "fail", "approval": "fail", "data": "fail", "validation": "fail", "files": "fail"}},
        {"model": model, "version": str(v4.version), "run": d, "aliases": [], "stage": "Production",
         "expect": {"lineage": "pass", "approval": "fail", "data": "pass", "validation": "fail", "files": "pass"}},
        {"model": "seed-fraud", "version": str(finfo.registered_model_version), "run": out["runs"]["fraud"],
         "aliases": [], "stage": "Staging", "logged_model": finfo.model_id, "expect": {"lineage": "pass",
                                                                                   "files": "pass"}},
    ]
    return out


def _seed_local(store: str, artifacts: str) -> dict[str, Any]:  # pragma: no cover - runs in a subprocess
    """A local sqlite store with file artefacts: one classic version under an alias."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{store}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("local-exp", artifact_location=Path(artifacts).as_uri())
    work = Path(tempfile.mkdtemp(prefix="seed-local-"))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.set_tag("mlflow.source.git.commit", GIT_COMMIT)
        mlflow.log_metric("accuracy", 0.9)
        mlflow.log_artifacts(str(_model_dir(work, readme=True, env_file=True, payload=50_000)), "model")
    client.create_registered_model("local-model")
    v = client.create_model_version("local-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("local-model", "champion", v.version)
    shutil.rmtree(work, ignore_errors=True)
    return {"run": run.info.run_id, "version": str(v.version), "experiment": exp,
            "artifact_uri": client.get_run(run.info.run_id).info.artifact_uri}


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1] == "seed":
        print(json.dumps(_seed(sys.argv[2])))
    elif sys.argv[1] == "seed-local":
        print(json.dumps(_seed_local(sys.argv[2], sys.argv[3])))
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")
