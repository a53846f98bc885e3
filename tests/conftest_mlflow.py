"""The session's one MLflow tracking server, seeded once (use with ``pytest_plugins = ["conftest_mlflow"]``).

Tests isolate themselves by registered model or experiment, never by server:
a test that changes the registry makes its own models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_server import AUTH_PASSWORD, AUTH_USER, MlflowServer, Seeded, seed


@pytest.fixture(scope="session")
def mlflow_seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield Seeded(server, seed(server.url))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A second server that checks credentials (``--app-name basic-auth``): AUTH_USER / AUTH_PASSWORD."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {AUTH_USER}\nadmin_password = {AUTH_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = MlflowServer(Path(root), app_name="basic-auth", env_extra={
        "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "affidavit-tests-csrf-key"})
    server.start()
    try:
        yield server
    finally:
        server.stop()
